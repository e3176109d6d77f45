"""Recovering a dead worker's trial: re-queued in Optuna first, its MLflow run closed after."""

from __future__ import annotations

import optuna
import pytest

from sweep.trials.recovery import DeadTrials, requeue, requeue_interrupted


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


def test_a_retry_inherits_its_parameters_and_link_only_up_to_max_retry() -> None:
    """A re-queued trial has the dead one's parameters and the link to it (``failed_trial``: the first of
    the line, ``retry_history``: every one), not its attributes (fail reason, MLflow run); a line of
    retries stops at ``max_retry``."""
    study = optuna.create_study()
    x = {"x": optuna.distributions.FloatDistribution(0, 1)}
    trial = study.ask(x)
    trial.set_user_attr("mlflow_run_id", "abc")
    trial.set_user_attr("fail_reason", "no heartbeat for 3 s")
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    for expected_history in ([0], [0, 1]):
        assert requeue(study, study.trials[-1], max_retry=2)
        retry = study.trials[-1]
        assert retry.state.name == "WAITING" and retry.params == study.trials[0].params
        assert retry.system_attrs["failed_trial"] == 0 and retry.system_attrs["retry_history"] == expected_history
        assert retry.user_attrs == {}
        asked = study.ask(x)  # the retry is taken first, and dies too
        assert asked.number == retry.number and asked.params == study.trials[0].params
        study.tell(asked, state=optuna.trial.TrialState.FAIL)
    assert not requeue(study, study.trials[-1], max_retry=2)  # two retries of trial 0 already ran
    assert [t.state.name for t in study.trials] == ["FAIL"] * 3


def test_an_interrupted_trial_is_requeued_once_it_has_parameters() -> None:
    """Ctrl-C: a trial with sampled parameters is queued again (its point is not lost); one interrupted
    before sampling leaves nothing to re-run."""
    study = optuna.create_study()
    early = study.ask()
    requeue_interrupted(early, max_retry=2)
    study.tell(early, state=optuna.trial.TrialState.FAIL)
    trial = study.ask()
    trial.suggest_float("x", 0, 1)
    requeue_interrupted(trial, max_retry=2)
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    assert [t.state.name for t in study.trials] == ["FAIL", "FAIL", "WAITING"]
    assert study.trials[2].params == trial.params and study.trials[2].system_attrs["failed_trial"] == 1


def test_a_surplus_claim_of_a_queued_point_puts_it_back_in_the_queue() -> None:
    """A claim found surplus ends before it samples; when it took a queued point (a retry, a baseline),
    the point goes back to the queue with its retry line, so it is not lost if a lower trial fails."""
    from sweep.trials.recovery import requeue_unrun

    study = optuna.create_study()
    study.enqueue_trial({"x": 0.25})
    retry_line = {"failed_trial": 3, "retry_history": [3]}
    for key, value in retry_line.items():
        study._storage.set_trial_system_attr(study.trials[0]._trial_id, key, value)
    taken = study.ask()  # pops the queued point, samples nothing yet
    requeue_unrun(taken)
    study.tell(taken, state=optuna.trial.TrialState.FAIL)
    (waiting,) = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert waiting.system_attrs["fixed_params"] == {"x": 0.25}
    assert {k: waiting.system_attrs[k] for k in retry_line} == retry_line
    again = study.ask()
    assert again.suggest_float("x", 0, 1) == 0.25
    fresh = optuna.create_study()
    requeue_unrun(fresh.ask())  # a point the sampler would draw: nothing to queue
    assert not fresh.get_trials(states=(optuna.trial.TrialState.WAITING,))
