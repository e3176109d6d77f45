"""MLflow tracking: one parent run per study, one child run per trial, metrics sent in batches.

Our own tracker (optuna-integration's MLflowCallback is deprecated and logs no intermediate values,
no parent run and no run status). It talks to MLflow through ``MlflowClient`` with explicit run ids,
never the fluent API's global "active run", so nothing depends on process-wide state.

Agreement with Optuna: the child run's status follows the trial's final state
(COMPLETE→FINISHED, PRUNED→KILLED, FAIL→FAILED), the run id is stored as the trial's
``mlflow_run_id`` user attribute, and the trial number and state are tags of the run.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.exceptions import MlflowException

from sweep.config import TrackingSection
from sweep.urls import absolute_sqlite, redact, sqlite_path

# MLflow prints "View run ... at: <tracking URI>" on stdout whenever a run ends against a server:
# the URI as given, password included, and a line per trial through the progress bar. We print
# our own (redacted) pointers at the end instead. Set, not defaulted: no setting may print a password.
os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"

STATUS = {
    optuna.trial.TrialState.COMPLETE: "FINISHED",
    optuna.trial.TrialState.PRUNED: "KILLED",
    optuna.trial.TrialState.FAIL: "FAILED",
}
PARENT_ATTR = "mlflow_parent_run_id"
RUN_ATTR = "mlflow_run_id"
_MAX_BATCH = 1000  # MLflow's limit of metrics per log_batch call
_MAX_PARAM = 6000  # MLflow's limit of characters per param value

# MLflow and alembic announce schema creation at INFO; it is noise next to our progress bar.
logging.getLogger("alembic").setLevel(logging.WARNING)
logging.getLogger("mlflow").setLevel(logging.WARNING)


def default_artifact_location(uri: str) -> str | None:
    """Where artifacts go for a new experiment: ``mlartifacts/`` beside a SQLite store.

    MLflow would otherwise put them in ``./mlruns`` of whatever directory the process runs in. A
    tracking server decides for itself (``None``).
    """
    if uri.startswith(("http://", "https://", "databricks")):
        return None
    db = sqlite_path(uri)
    root = db.resolve().parent if db is not None else Path.cwd()
    return (root / "mlartifacts").as_uri()


class TrialRun:
    """The child run of one trial: buffers metrics and sends them in batches."""

    def __init__(self, client: MlflowClient, run_id: str, flush_every_s: float = 2.0) -> None:
        self.client, self.run_id, self.flush_every_s = client, run_id, flush_every_s
        self._buffer: list[Metric] = []
        self._last_flush = time.monotonic()

    def log_params(self, params: Mapping[str, Any]) -> None:
        items = [Param(k, str(v)[:_MAX_PARAM]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def log_epoch(self, epoch: int, metrics: Mapping[str, float]) -> None:
        """Queue one epoch's metrics; send the queue when it is older than ``flush_every_s``."""
        now = int(time.time() * 1000)
        self._buffer.extend(Metric(k, float(v), now, epoch) for k, v in metrics.items())
        if time.monotonic() - self._last_flush >= self.flush_every_s:
            self.flush()

    def flush(self) -> None:
        for i in range(0, len(self._buffer), _MAX_BATCH):
            self.client.log_batch(self.run_id, metrics=self._buffer[i : i + _MAX_BATCH])
        self._buffer.clear()
        self._last_flush = time.monotonic()

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)[:5000]) for k, v in tags.items()])

    def log_text(self, text: str, name: str) -> None:
        self.client.log_text(self.run_id, text, name)

    def log_artifact(self, path: Path) -> None:
        self.client.log_artifact(self.run_id, str(path))

    def end(self, state: optuna.trial.TrialState, reason: str | None = None) -> None:
        """Flush, tag the final state (and the failure reason) and close the run with the matching status."""
        self.flush()
        tags = {"sweep.trial_state": state.name}
        if reason:
            tags["sweep.fail_reason"] = reason
        self.set_tags(tags)
        self.client.set_terminated(self.run_id, status=STATUS.get(state, "FAILED"))


class Tracker:
    """The MLflow side of one study: its experiment and parent run."""

    def __init__(self, cfg: TrackingSection, study: optuna.Study, parent_tags: Mapping[str, str]) -> None:
        self.uri = cfg.uri  # as the user wrote it (printed); the client gets the absolute form
        self.client = MlflowClient(tracking_uri=absolute_sqlite(cfg.uri))
        self.experiment_name = cfg.experiment or study.study_name
        self.experiment_id = self._experiment(cfg)
        self.parent_id = self._parent(study, parent_tags)

    def _experiment(self, cfg: TrackingSection) -> str:
        found = self.client.get_experiment_by_name(self.experiment_name)
        if found is not None:
            if found.lifecycle_stage == "deleted":
                self.client.restore_experiment(found.experiment_id)
            return found.experiment_id
        location = cfg.artifact_location or default_artifact_location(cfg.uri)
        try:
            return self.client.create_experiment(self.experiment_name, artifact_location=location)
        except MlflowException:  # another worker created it first
            found = self.client.get_experiment_by_name(self.experiment_name)
            if found is None:
                raise
            return found.experiment_id

    def _parent(self, study: optuna.Study, tags: Mapping[str, str]) -> str:
        """The study's parent run: found again on resume (by the study's user attribute, then by tag)."""
        run_id = study.user_attrs.get(PARENT_ATTR)
        if run_id:
            try:
                run = self.client.get_run(run_id)
                if run.info.experiment_id == self.experiment_id and run.info.lifecycle_stage == "active":
                    self.client.update_run(run_id, status="RUNNING")
                    self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
                    return run_id
            except MlflowException:
                pass  # a different tracking store than last time: make a parent run here
        found = self._parents(study.study_name)
        if found:
            run_id = found[0]
            self.client.update_run(run_id, status="RUNNING")
        else:
            run = self.client.create_run(
                self.experiment_id,
                run_name=study.study_name,
                tags={"sweep.role": "parent", "sweep.study_name": study.study_name},
            )
            run_id = run.info.run_id
            # Workers starting together may each have created one: all keep the earliest, drop the rest.
            earliest = self._parents(study.study_name)[0]
            if earliest != run_id:
                self.client.delete_run(run_id)
                run_id = earliest
        self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        study.set_user_attr(PARENT_ATTR, run_id)
        return run_id

    def _parents(self, study_name: str) -> list[str]:
        """Ids of the study's parent runs, earliest first (ties broken by id, the same for every worker)."""
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`sweep.role` = 'parent' and tags.`sweep.study_name` = '{study_name}'",
            max_results=100,
        )
        return [r.info.run_id for r in sorted(runs, key=lambda r: (r.info.start_time, r.info.run_id))]

    def start_trial(self, trial: optuna.Trial) -> TrialRun:
        """Create the trial's child run and link it both ways (run id in the trial, trial number in the run)."""
        run = self.client.create_run(
            self.experiment_id,
            run_name=f"trial-{trial.number}",
            tags={
                "mlflow.parentRunId": self.parent_id,
                "sweep.role": "trial",
                "sweep.study_name": trial.study.study_name,
                "sweep.trial_number": str(trial.number),
                "sweep.trial_state": "RUNNING",
            },
        )
        trial.set_user_attr(RUN_ATTR, run.info.run_id)
        return TrialRun(self.client, run.info.run_id)

    def trial_finished(self, trial: optuna.trial.FrozenTrial, best: float | None) -> None:
        """Parent-run progress after each trial: the best value so far, by trial number."""
        if best is not None:
            metric = Metric("best_value", float(best), int(time.time() * 1000), trial.number)
            self.client.log_batch(self.parent_id, metrics=[metric])

    def log_study_params(self, params: Mapping[str, Any]) -> None:
        """Study settings on the parent run; params are immutable in MLflow, so only new keys are sent."""
        for attempt in range(3):
            existing = self.client.get_run(self.parent_id).data.params
            new = {k: str(v) for k, v in params.items() if k not in existing}
            if not new:
                return
            try:
                self.client.log_batch(self.parent_id, params=[Param(k, v[:_MAX_PARAM]) for k, v in new.items()])
                return
            except MlflowException:
                # Another process starting the same study wrote them between our read and write.
                if attempt == 2:
                    raise

    def log_parent_text(self, text: str, name: str) -> None:
        self.client.log_text(self.parent_id, text, name)

    def log_parent_dir(self, folder: str | Path, name: str) -> None:
        self.client.log_artifacts(self.parent_id, str(folder), name)

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.parent_id, status=RunStatus.to_string(RunStatus.from_string(status)))

    def ui_command(self, python: str = "mlflow") -> str:
        """The command that opens the MLflow UI on this store, bound to loopback."""
        return (
            f"MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false {python} ui --backend-store-uri '{redact(self.uri)}' "
            "--host 127.0.0.1 --port 5000 --workers 1"
        )

    def ui_url(self, port: int = 5000) -> str:
        return f"http://127.0.0.1:{port}/#/experiments/{self.experiment_id}/runs"
