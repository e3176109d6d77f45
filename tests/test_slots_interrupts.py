"""Ctrl-C at the points a vectorized group tells and refills its members (sweep.trials.slots): every trial asked
is told its own end, and none is left running."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient

from sweep.core.interrupts import Interrupts
from sweep.tracking import bulk
from tests.conftest import run_main, tiny_study, write_yaml

TrialState = optuna.trial.TrialState


def _run(tmp_path: Path, name: str, **study: object) -> optuna.Study:
    data = tiny_study(name, study={"pruner": "none", **study})
    result = run_main("sweep.run", str(write_yaml(tmp_path / f"{name}.yaml", data)), "--no-report", cwd=tmp_path)
    assert result.returncode == 130, result.stderr
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / '.sweep' / 'optuna.db'}")


def test_a_ctrl_c_while_one_finished_member_is_told_keeps_the_other_finished_member_s_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both members of a group train their 3 epochs and end at the same epoch's end. Ctrl-C comes while the
    first is told (a database write: the signal is only recorded). The second had finished training too: it
    is told COMPLETE with its value, as the first, not FAIL as interrupted (re-queued to train again)."""
    real_tell = optuna.Study.tell

    def tell(study: optuna.Study, trial: optuna.Trial, *args: object, **kwargs: object) -> object:
        frozen = real_tell(study, trial, *args, **kwargs)
        Interrupts.active().requested = True  # the SIGINT handler outside training: recorded, raised later
        return frozen

    monkeypatch.setattr(optuna.Study, "tell", tell)
    study = _run(tmp_path, "c", n_trials=2, parallel_trials=2)
    states = {t.number: t.state for t in study.trials if t.number < 2}
    assert states == {0: TrialState.COMPLETE, 1: TrialState.COMPLETE}, {
        t.number: t.user_attrs.get("fail_reason") for t in study.trials
    }


def test_a_ctrl_c_while_a_joiner_is_handed_to_the_group_leaves_no_trial_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C inside training raises at once; here it lands while the trial asked for a freed slot is handed to
    the loop (its run's metrics joining the group's queue, after it left ``ready`` and before it is among the
    group's members). Every trial asked is told: none is left RUNNING in Optuna, nor its run in MLflow."""
    real_join, joins = bulk.GroupLog.join, []

    def join(log: bulk.GroupLog, run_id: str, *args: object) -> None:
        joins.append(run_id)
        if len(joins) == 3:  # the first two: the group's first members; the third: the joiner
            Interrupts.active().requested = True  # what the SIGINT handler does before it raises in training
            raise KeyboardInterrupt
        real_join(log, run_id, *args)

    monkeypatch.setattr(bulk.GroupLog, "join", join)
    study = _run(tmp_path, "j", n_trials=3, parallel_trials=2)
    assert len(joins) == 3
    running = [t.number for t in study.trials if t.state == TrialState.RUNNING]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    assert running == [] and [r.info.status for r in runs if r.info.status == "RUNNING"] == []
