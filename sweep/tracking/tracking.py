"""MLflow tracking: one parent run per study, one child run per trial, metrics sent in batches.

Our own tracker (optuna-integration's MLflowCallback is deprecated and logs no intermediate values, no
parent run and no run status). It talks to MLflow with explicit run ids, never the fluent API's "active
run", through a client that retries while the store cannot be reached (:mod:`sweep.tracking.trackingretry`).

Agreement with Optuna is kept in one place, :func:`close_run`: the child run's status follows the
trial's final state (COMPLETE→FINISHED, PRUNED→KILLED, FAIL→FAILED) with the state and failure
reason as tags; the run id is the trial's ``mlflow_run_id`` user attribute and the trial number a
tag of the run (:meth:`TrialRun.open`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import optuna
import yaml
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.exceptions import MlflowException

from sweep.core.errors import one_line
from sweep.core.faultpoints import pause
from sweep.core.records import Attr, Role, Tag, experiment_name, runs_filter
from sweep.core.urls import absolute_sqlite, redact, redact_setting, redact_tree, sqlite_path
from sweep.storage.storage import trial_id
from sweep.studyfile.sections import StudySection, TrackingSection
from sweep.tracking.artifacts import artifact_root
from sweep.tracking.bulk import GroupLog, Records, write_many
from sweep.tracking.mlflowdb import prepare_stores
from sweep.tracking.trackingretry import RetryingClient
from sweep.tracking.trackingretry import check_tracking as check_tracking  # where callers import it from
from sweep.tracking.views import runs_view_url

STATUS = {
    optuna.trial.TrialState.COMPLETE: "FINISHED",
    optuna.trial.TrialState.PRUNED: "KILLED",
    optuna.trial.TrialState.FAIL: "FAILED",
}
_MAX_BATCH = 1000  # MLflow's limit of metrics per log_batch call
_MAX_PARAM = 6000  # MLflow's limit of characters per param value


def quiet_mlflow() -> None:
    """What a tracked run sets once, before its first MLflow call.

    MLflow prints "View run ... at: <tracking URI>" on stdout whenever a run ends against a server: the
    URI as given, password included, and a line per trial through the progress bar; we print our own
    (redacted) pointers at the end instead. Set, not defaulted: no setting may print a password.
    MLflow and alembic announce schema creation at INFO: noise next to the progress bar.
    """
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a bar per downloaded weights file
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # off unless the user turns it on (=false)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)  # logs each error it raises (said once)


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


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as dotted keys (``optimizer.schedule.type``), the names searched params have too."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def tags_of(tags: Mapping[str, Any]) -> list[RunTag]:
    """MLflow tags of ``tags`` (a value as text, credentials masked, cut to MLflow's 5,000 characters)."""
    return [RunTag(k, redact(str(v))[:5000]) for k, v in tags.items()]


def close_run(
    client: MlflowClient,
    run_id: str,
    state: optuna.trial.TrialState,
    reason: str | None = None,
    also: Mapping[str, Records] | None = None,
) -> None:
    """Close a trial's run to agree with its Optuna state: tag the state (and the failure reason), set
    the matching status. The one mapping from a trial's outcome to MLflow, for every path that ends
    a run (normal end, interrupt, a dead worker's trial). ``also``: other runs' records (the parent's
    best-so-far point), in the same transaction where the store allows it (:func:`~sweep.tracking.bulk.write_many`;
    what they could not write is not this run's error)."""
    tags = {Tag.TRIAL_STATE: state.name, **({Tag.FAIL_REASON: reason} if reason else {})}
    batches = {run_id: ((), (), tags_of(tags)), **{r: v for r, v in (also or {}).items() if r != run_id}}
    error = write_many(client, batches, ends={run_id: STATUS.get(state, "FAILED")}).get(run_id)
    if error is not None:
        raise error


class TrialRun:
    """The tracking of one trial, owned in one place: it opens the child run, links it to the trial both
    ways, records the config, buffers per-epoch metrics and sends them in batches, logs artifacts, and
    closes the run to match the trial's final state."""

    def __init__(self, client: MlflowClient, run_id: str, flush_every_s: float = 2.0) -> None:
        self.client, self.run_id, self.flush_every_s = client, run_id, flush_every_s
        self.reason: str | None = None
        self.files_written = 0  # artifacts written, and why the others could not be (sweep.tracking.artifacts)
        self.artifact_errors: list[str] = []
        self._buffer: list[Metric] = []
        self._last_flush = time.monotonic()
        self.group: GroupLog | None = None  # a vectorized group's shared queue (sweep.tracking.bulk)
        self.held: list[tuple[list[Param], list[RunTag]]] | None = None  # params, tags sent with a group's

    @classmethod
    def open(
        cls,
        tracker: Tracker,
        trial: optuna.Trial,
        beat: optuna.storages.RDBStorage | None = None,
        storage_id: int | None = None,
    ) -> TrialRun:
        """Beat once, then create the trial's child run and link it both ways.

        Optuna's heartbeat thread writes its first beat concurrently with the objective; a worker
        killed before that write leaves a trial no one can see as stale (RUNNING for ever). Beating
        here, synchronously, before the run exists makes every trial with a run recoverable.
        """
        if beat is not None and beat.heartbeat_interval:
            beat.record_heartbeat(storage_id if storage_id is not None else trial_id(beat, trial.study, trial.number))
        pause("beat")
        run = tracker.client.create_run(
            tracker.experiment_id,
            run_name=f"{tracker.run_prefix}trial-{trial.number}",
            tags={
                "mlflow.parentRunId": tracker.parent_id,
                Tag.ROLE: Role.TRIAL,
                Tag.STUDY_NAME: trial.study.study_name,
                Tag.TRIAL_NUMBER: str(trial.number),
                Tag.TRIAL_STATE: "RUNNING",
            },
        )
        pause("run_created")
        trial.set_user_attr(Attr.RUN, run.info.run_id)
        pause("linked")
        return cls(tracker.client, run.info.run_id)

    def record_config(self, trial: optuna.Trial, config: Mapping[str, Any], tags: Mapping[str, Any]) -> None:
        """What the trial trains, on both sides: the resolved config (export replays it), the weights and
        seed as trial attributes; on the run every setting as a param (the resolved config flattened to
        dotted keys, the sampled values as Optuna stored them), ``config.yaml`` and ``tags``."""
        trial.set_user_attr(Attr.WEIGHTS, list(config["weights"]))
        trial.set_user_attr(Attr.SEED, config["seed"])
        trial.set_user_attr(Attr.CONFIG, dict(config))
        # Every setting that shaped the trial (flattened config), the sampled values as Optuna stored them.
        params = {**flatten(config), **trial.params}
        items = [Param(k, redact_setting(k, v)[:_MAX_PARAM]) for k, v in params.items()]
        if self.held is not None:  # a group's member: sent with the others' (TrialRuns.send_held)
            self.held.append((items, tags_of(tags)))
        else:
            last = max(0, (len(items) - 1) // 100 * 100)  # MLflow takes 100 params a call; tags ride on the last
            for i in range(0, last, 100):
                self.client.log_batch(self.run_id, params=items[i : i + 100])
            self.client.log_batch(self.run_id, params=items[last:], tags=tags_of(tags))
        shown = redact_tree(dict(config))  # a credential in a user problem's options is not recorded
        self.log_text(yaml.safe_dump(shown, sort_keys=False), "config.yaml")

    def log_epoch(self, epoch: int, metrics: Mapping[str, float]) -> None:
        """Queue one epoch's metrics; send the queue when it is older than ``flush_every_s``."""
        now = int(time.time() * 1000)
        self._buffer.extend(Metric(k, float(v), now, epoch) for k, v in metrics.items())
        if self.group is not None:  # a group's members: queued together
            self.group.add(self.run_id, self._buffer)
            self._buffer = []
        elif time.monotonic() - self._last_flush >= self.flush_every_s:
            self.flush()

    def flush(self) -> None:
        """Send what is queued (in a group: every member's queue, :class:`~sweep.tracking.bulk.GroupLog`)."""
        if self.group is not None:
            return self.group.flush(self.run_id)
        for i in range(0, len(self._buffer), _MAX_BATCH):
            self.client.log_batch(self.run_id, metrics=self._buffer[i : i + _MAX_BATCH])
        self._buffer.clear()
        self._last_flush = time.monotonic()

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self.client.log_batch(self.run_id, tags=tags_of(tags))

    def log_artifact(self, path: Path) -> bool:
        """Write a file to the run's artifacts; one that cannot be written (disk full, read-only, a server
        refusing it) is noted in :attr:`artifact_errors`, not raised: the trial keeps its metrics and state.

        Returns:
            Whether the file was written.
        """
        return self._write(path.name, lambda: self.client.log_artifact(self.run_id, str(path)))

    def log_text(self, text: str, name: str) -> bool:  # log_artifact for text (config.yaml, error.txt)
        return self._write(name, lambda: self.client.log_text(self.run_id, text, name))

    def _write(self, name: str, write: Callable[[], None]) -> bool:
        try:
            write()
        except (OSError, MlflowException) as e:
            self.artifact_errors.append(f"{name}: {one_line(e, with_type=False)}")
            return False
        self.files_written += 1
        return True

    def fail(self, trial: optuna.Trial, reason: str, details: str | None = None) -> None:
        """Record why the trial failed: the trial's ``fail_reason`` now, the run's tag when it closes, and
        ``details`` (the traceback) as the run's ``error.txt``."""
        self.reason = reason
        trial.set_user_attr(Attr.FAIL, reason)
        if details:
            self.log_text(redact(details), "error.txt")

    def close(self, state: optuna.trial.TrialState, also: Mapping[str, Records] | None = None) -> None:
        """Send what is queued and close the run with the status of the trial's final ``state`` (``also``:
        :func:`close_run`)."""
        self.flush()
        close_run(self.client, self.run_id, state, self.reason, also)


class Tracker:
    """The MLflow side of one study: its experiment and parent run (calls retried for up to ``retry_s`` s)."""

    def __init__(self, cfg: TrackingSection, study: optuna.Study, retry_s: float = 120.0, run_prefix: str = "") -> None:
        quiet_mlflow()
        prepare_stores(cfg.uri, artifact_root(cfg))  # a new SQLite store: a copy of a migrated one, the owner's only
        self.uri = cfg.uri  # as the user wrote it (printed); the client gets the absolute form
        self.client = RetryingClient(absolute_sqlite(cfg.uri), retry_s, cfg.uri)
        self.experiment_name = experiment_name(cfg.experiment, study.study_name)
        # Before each trial's run name: an export's replay (sweep.tracking.lineage), a compared choice (MemberTracking).
        self.run_prefix = run_prefix or (f"{cfg.choice} · " if hasattr(cfg, "choice") else "")
        self.experiment_id = self._experiment(cfg.artifact_location or default_artifact_location(cfg.uri))
        self.parent_id = self._parent(study)

    def _experiment(self, location: str | None) -> str:
        found = self.client.get_experiment_by_name(self.experiment_name)
        if found is not None:
            if found.lifecycle_stage == "deleted":
                self.client.restore_experiment(found.experiment_id)
            return found.experiment_id
        try:
            return self.client.create_experiment(self.experiment_name, artifact_location=location)
        except MlflowException:  # another worker created it first
            found = self.client.get_experiment_by_name(self.experiment_name)
            if found is None:
                raise
            return found.experiment_id

    def _parent(self, study: optuna.Study) -> str:
        """The study's parent run: found again on resume (by the study's user attribute, then by tag)."""
        run_id = study.user_attrs.get(Attr.PARENT)
        if run_id:
            try:
                run = self.client.get_run(run_id)
                if run.info.experiment_id == self.experiment_id and run.info.lifecycle_stage == "active":
                    self.client.update_run(run_id, status="RUNNING")
                    return run_id
            except MlflowException:
                pass  # a different tracking store than last time: make a parent run here
        found = self._parents(study.study_name)
        if found:
            run_id = found[0]
            self.client.update_run(run_id, status="RUNNING")
        else:
            tags = {Tag.ROLE: Role.PARENT, Tag.STUDY_NAME: study.study_name}
            run = self.client.create_run(self.experiment_id, run_name=study.study_name, tags=tags)
            run_id = run.info.run_id
            # Workers starting together may each have created one: all keep the earliest, drop the rest.
            earliest = self._parents(study.study_name)[0]
            if earliest != run_id:
                self.client.delete_run(run_id)
                run_id = earliest
        study.set_user_attr(Attr.PARENT, run_id)
        return run_id

    def _parents(self, study_name: str) -> list[str]:
        """Ids of the study's parent runs, earliest first (ties broken by id, the same for every worker)."""
        runs = self.client.search_runs([self.experiment_id], runs_filter(Role.PARENT, study_name), max_results=100)
        return [r.info.run_id for r in sorted(runs, key=lambda r: (r.info.start_time, r.info.run_id))]

    def set_parent_tags(self, tags: Mapping[str, Any]) -> None:
        self.client.log_batch(self.parent_id, tags=tags_of(tags))

    def trial_finished(self, trial: optuna.trial.FrozenTrial, best: float | None) -> None:
        """Parent-run progress after each trial: the best value so far, by trial number."""
        for run_id, (metrics, _, _) in self.best_point(trial, best).items():
            self.client.log_batch(run_id, metrics=list(metrics))

    def best_point(self, trial: optuna.trial.FrozenTrial, best: float | None) -> dict[str, Records]:
        """:meth:`trial_finished`'s record, to write with the trial's run's last (:func:`close_run`)."""
        metric = Metric("best_value", float(best), int(time.time() * 1000), trial.number) if best is not None else None
        return {self.parent_id: ([metric], (), ())} if metric else {}

    def log_study_params(self, params: Mapping[str, Any]) -> None:
        """Study settings on the parent run; params are immutable in MLflow, so only new keys are sent."""
        for attempt in range(3):
            existing = self.client.get_run(self.parent_id).data.params
            new = {k: redact_setting(k, v) for k, v in params.items() if k not in existing}
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

    def ui_url(
        self, port: int = 5000, target: StudySection | None = None, trials: Iterable[optuna.trial.FrozenTrial] = ()
    ) -> str:
        """The loopback URL of the runs table; with ``target``, the study's view (:func:`runs_view_url`)."""
        return runs_view_url(self.client, self.experiment_id, f"http://127.0.0.1:{port}", target, trials)
