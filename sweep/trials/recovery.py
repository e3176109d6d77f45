"""Recovering what a dead process leaves behind, so every trial and every run reaches a final state.

A process can die (SIGKILL, OOM killer, lost machine) at any instant of a trial's life
(:mod:`sweep.core.faultpoints` names them). What each instant leaves, and who closes it:

- a RUNNING trial with a heartbeat: stale after ``grace_period`` s without a beat; Optuna fails it
  before its next trial in any live process and hands it to :class:`DeadTrials`, which re-queues it
  and closes its MLflow run FAILED with the reason;
- a RUNNING trial that never beat (killed between ``ask`` and the first beat): the same, once it is
  ``grace_period`` s old (:meth:`sweep.storage.resilient.ResilientStorage._get_stale_trial_ids`);
- a RUNNING MLflow run whose trial is finished (killed after Optuna stored the result, or the tracking
  store was down when the run was to close): :func:`close_stray_runs` closes it with the trial's state;
- a run created but never linked to its trial (killed in between): linked while the trial is
  RUNNING, so the two close together; a run whose trial links another run is marked FAILED "orphaned".

:func:`close_stray_runs` runs when a study starts and when it finishes.
"""

from __future__ import annotations

import contextlib
from datetime import datetime

import optuna
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from sweep.core.errors import one_line, warn
from sweep.core.records import Attr, Role, Tag, runs_filter
from sweep.storage.claimlock import after_release
from sweep.storage.storage import count_finished, trial_id
from sweep.tracking.tracking import TrialRun, close_run
from sweep.tracking.trackingretry import TrackingDown, gave_up

RUNNING = optuna.trial.TrialState.RUNNING


class DeadTrials:
    """Optuna's stale-trial callback: a dead worker's trial (its heartbeat stopped) is re-queued, then its
    MLflow run is closed FAILED with the reason."""

    def __init__(self, max_retry: int | None, grace_period: int, n_trials: int) -> None:
        self.max_retry = max_retry
        self.n_trials = n_trials
        self.grace_period = grace_period
        self.client: MlflowClient | None = None

    def bind(self, client: MlflowClient) -> None:
        """Close MLflow runs through ``client`` from now on (the storage, which calls this, opens first)."""
        self.client = client

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        # First (a finished study needs no replacement): the re-queue must not depend on the tracking store.
        queued = count_finished(study) < self.n_trials and requeue(study, trial, self.max_retry)
        # Then its run, once this process holds no claim lock: a slow tracking server holds up no claim.
        after_release(lambda: self._close(trial, queued))

    def _close(self, trial: optuna.trial.FrozenTrial, queued: bool) -> None:
        run_id = trial.user_attrs.get(Attr.RUN)
        if run_id is None or self.client is None:
            return  # a run never linked is closed by close_stray_runs
        try:
            why = trial.user_attrs.get(Attr.FAIL) or f"no heartbeat for {self.grace_period} s"
            close_run(self.client, run_id, optuna.trial.TrialState.FAIL, f"{why}{'; re-queued' if queued else ''}")
        except Exception as e:  # busy or unreachable store: the trial is safe; close_stray_runs retries
            warn(f"could not close MLflow run {run_id} of dead trial {trial.number}: {one_line(e)}")


def requeue(study: optuna.Study, trial: optuna.trial.FrozenTrial, max_retry: int | None) -> bool:
    """Queue ``trial``'s point to run again (WAITING: the next ``ask`` of any process takes it first), unless
    its line of retries already has ``max_retry``; whether it was queued.

    What Optuna's ``RetryHeartbeatStaleTrialCallback`` does, except that the retry starts with only what it
    inherits — its parameters and the link to what it retries (``failed_trial``, ``retry_history``) — not
    the dead trial's attributes (its fail reason, its MLflow run)."""
    system_attrs = {"failed_trial": trial.number, **trial.system_attrs}  # a retry's retry: the first one's
    system_attrs["retry_history"] = [*trial.system_attrs.get("retry_history", []), trial.number]
    if max_retry is not None and len(system_attrs["retry_history"]) > max_retry:
        return False
    study.add_trial(
        optuna.create_trial(
            state=optuna.trial.TrialState.WAITING,
            params=trial.params,
            distributions=trial.distributions,
            system_attrs=system_attrs,
        )
    )
    return True


def requeue_unrun(trial: optuna.Trial) -> None:
    """Queue again the point of a trial that ends before it sampled anything (a surplus claim) when it
    came from the queue (an enqueued baseline, a dead trial's retry): as the same WAITING trial, with
    the same attributes (``fixed_params`` and a retry's line), so nothing queued is lost."""
    frozen = next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number)
    if "fixed_params" in frozen.system_attrs:
        waiting = optuna.trial.TrialState.WAITING
        trial.study.add_trial(optuna.create_trial(state=waiting, system_attrs=dict(frozen.system_attrs)))


def requeue_interrupted(trial: optuna.Trial, max_retry: int | None) -> None:
    """Queue an interrupted trial's point to run again, as :class:`DeadTrials` does for a dead process's
    trial (Ctrl-C landing on the best configuration must not lose it). A trial interrupted before its
    parameters were sampled leaves nothing to re-run."""
    frozen = next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number)
    if frozen.params:
        requeue(trial.study, frozen, max_retry)


def unrecorded(trial: optuna.Trial, run: TrialRun | None, stop: BaseException, max_retry: int | None) -> None:
    """End a trial that ``stop`` ended before its records were all written — an interrupt, or the tracking
    store unreachable past ``study.tracking_retry`` (:class:`sweep.tracking.trackingretry.TrackingDown`): it fails
    with the reason and its point is queued again (:func:`requeue_interrupted`: not its configuration's
    fault); its ``run`` is closed FAILED if the store answers, else by the next start's :func:`agree`.
    ``run`` ``None``: ended already (nothing to do)."""
    if run is None:
        return
    run.fail(trial, stop.reason if isinstance(stop, TrackingDown) else f"interrupted ({type(stop).__name__})")
    requeue_interrupted(trial, max_retry)
    if gave_up(run.client) is None:
        with contextlib.suppress(MlflowException, TrackingDown):  # not answering: closed at the next start
            run.close(optuna.trial.TrialState.FAIL)


def running_runs(client: MlflowClient, experiment_id: str, study_name: str) -> list[object]:
    """The study's trial runs MLflow still shows RUNNING."""
    filters = f"{runs_filter(Role.TRIAL, study_name)} and attributes.status = 'RUNNING'"
    runs: list[object] = []
    token = None
    while True:
        page = client.search_runs([experiment_id], filter_string=filters, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def close_stray_runs(
    study: optuna.Study,
    storage: optuna.storages.BaseStorage,
    client: MlflowClient,
    experiment_id: str,
    settle_s: float = 0.0,
) -> int:
    """Make every RUNNING trial run of the study agree with its trial: link unlinked runs of RUNNING
    trials, close runs of finished trials with their state, mark runs their trial disowns FAILED.

    A trial that finished less than ``settle_s`` seconds ago is left alone: its live process closes its
    run a moment after Optuna records the end (a later sweep closes it if that process died).

    Returns:
        How many runs were closed.
    """
    runs = running_runs(client, experiment_id, study.study_name)
    if not runs:
        return 0
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    closed = 0
    for run in runs:
        number = run.data.tags.get(Tag.TRIAL_NUMBER)  # type: ignore[attr-defined]
        run_id = run.info.run_id  # type: ignore[attr-defined]
        trial = trials.get(int(number)) if number is not None and number.isdigit() else None
        if trial is None:
            close_run(client, run_id, optuna.trial.TrialState.FAIL, "orphaned: its trial is not in the study")
            closed += 1
            continue
        linked = trial.user_attrs.get(Attr.RUN)
        if linked not in (None, run_id):
            reason = f"orphaned: trial {trial.number} is recorded by run {linked}"
            close_run(client, run_id, optuna.trial.TrialState.FAIL, reason)
            closed += 1
        elif trial.state == RUNNING:
            if linked is None:  # killed between creating the run and linking it: link it now
                storage.set_trial_user_attr(trial_id(storage, study, trial.number), Attr.RUN, run_id)
        elif trial.state.is_finished():
            done = trial.datetime_complete
            if settle_s and done is not None and (datetime.now() - done).total_seconds() < settle_s:
                continue
            close_run(client, run_id, trial.state, trial.user_attrs.get(Attr.FAIL))
            closed += 1
    return closed


def agree(
    study: optuna.Study, storage: optuna.storages.BaseStorage, client: MlflowClient, experiment_id: str, when: str
) -> None:
    """:func:`close_stray_runs`, saying what it closed; a tracking store that does not answer is a warning
    (the next start or finish tries again)."""
    settle = 10.0 if when == "at start" else 0.0  # at start, other live processes may be closing theirs
    try:
        closed = close_stray_runs(study, storage, client, experiment_id, settle)
    except Exception as e:
        warn(f"could not check the study's MLflow runs {when}: {one_line(e)}")
        return
    if closed:
        warn(f"closed {closed} MLflow run(s) left RUNNING by a process that died or lost tracking (found {when})")
