"""Recovering what a dead process leaves behind: its trial re-queued, its MLflow run closed FAILED."""

from __future__ import annotations

import optuna
from mlflow import MlflowClient

from sweep.console import warn
from sweep.errors import one_line
from sweep.storage import Attr
from sweep.tracking import close_run


class DeadTrials:
    """Optuna's stale-trial callback: a dead worker's trial (its heartbeat stopped) is re-queued, then its
    MLflow run is closed FAILED with the reason."""

    def __init__(self, max_retry: int | None, grace_period: int) -> None:
        self.retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
        self.reason = f"worker died (no heartbeat for {grace_period} s); re-queued"
        self.client: MlflowClient | None = None

    def bind(self, client: MlflowClient) -> None:
        """Close MLflow runs through ``client`` from now on (the storage, which calls this, opens first)."""
        self.client = client

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self.retry(study, trial)  # first: the re-queue must not depend on the tracking store answering
        run_id = trial.user_attrs.get(Attr.RUN)
        if run_id is None or self.client is None:
            return
        try:
            close_run(self.client, run_id, optuna.trial.TrialState.FAIL, self.reason)
        except Exception as e:  # busy or unreachable store: the trial is safe; say which run stays open
            warn(f"could not close MLflow run {run_id} of dead trial {trial.number}: {one_line(e)}")
