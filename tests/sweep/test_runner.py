"""When a run stops starting trials (QuotaStop): its quota, a study filled by others, a dead worker's trials."""

from __future__ import annotations

import optuna

from sweep.interrupts import Interrupts
from sweep.runner import QuotaStop


def test_independent_processes_stop_at_n_trials() -> None:
    """A process whose quota is not used up still stops once the study holds n_trials (another machine filled it)."""
    study = optuna.create_study()
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=8)  # "other machines"
    stop = QuotaStop(target=5, quota=5, interval=1, grace=1, interrupts=Interrupts(), first_trial=8)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=10, callbacks=[stop])
    assert stop.ran == 1 and len(study.trials) == 9


def _dead_trial_requeued(study: optuna.Study) -> None:
    """Trial 0 as a killed worker leaves it: FAIL, re-queued by Optuna's retry callback."""
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    optuna.storages.RetryHeartbeatStaleTrialCallback()(study, study.trials[0])


def test_topping_up_counts_a_dead_trial_from_the_runs_first_trial() -> None:
    """A worker whose own quota was spent on a dead sibling's re-queued trial tops up the sibling's lost
    trials. Regression (CI flake): each worker counted its first trial itself, so a worker that started
    after trial 0 began took the retry of trial 0 for an older run's and stopped with the study short."""
    study = optuna.create_study()
    _dead_trial_requeued(study)
    stop = QuotaStop(target=4, quota=1, interval=1, grace=1, interrupts=Interrupts(), first_trial=0)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=20, callbacks=[stop])
    complete = study.get_trials(states=[optuna.trial.TrialState.COMPLETE])
    assert len(complete) == 4 and complete[0].system_attrs["failed_trial"] == 0
