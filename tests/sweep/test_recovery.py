"""Recovering a dead worker's trial: re-queued in Optuna first, its MLflow run closed after."""

from __future__ import annotations

import optuna
import pytest

from sweep.recovery import DeadTrials


def test_dead_trial_is_requeued_even_when_its_mlflow_run_cannot_be_closed(capsys: pytest.CaptureFixture) -> None:
    """The stale-trial callback re-queues first; a tracking store that fails afterwards costs a warning only."""

    class Broken:
        """A tracking client whose every call fails."""

    study = optuna.create_study()
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    trial.set_user_attr("mlflow_run_id", "abc")
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    dead = DeadTrials(max_retry=2, grace_period=3, n_trials=5)
    dead.bind(Broken())  # type: ignore[arg-type]
    dead(study, study.trials[0])
    assert [t.state.name for t in study.trials] == ["FAIL", "WAITING"]
    assert "could not close MLflow run abc of dead trial 0" in capsys.readouterr().err


def test_a_finished_studys_dead_trial_is_not_requeued() -> None:
    """Once the study has n_trials finished, a dead process's trial is failed but not replaced."""
    study = optuna.create_study()
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    DeadTrials(max_retry=2, grace_period=3, n_trials=2)(study, study.trials[-1])
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE", "FAIL"]
