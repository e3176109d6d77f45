"""One trial's objective call, without training: what it records and in which order."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from sweep.core.interrupts import Interrupts
from sweep.execution.trial import Objective, ProblemCache
from sweep.studyfile.config import parse_study
from tests.conftest import tiny_study


def test_trial_beats_before_its_mlflow_run_exists(tmp_path: Path) -> None:
    """The objective records a heartbeat before anything else, so a worker killed at any point after
    its MLflow run exists leaves a trial the others see as stale (Optuna's own first beat is racy)."""
    calls: list[str] = []
    storage = optuna.storages.InMemoryStorage()

    class Beat:
        """The study's storage as the objective sees it, recording heartbeats."""

        heartbeat_interval = 1
        get_study_id_from_name = storage.get_study_id_from_name
        get_trial_id_from_study_id_trial_number = storage.get_trial_id_from_study_id_trial_number

        def record_heartbeat(self, trial_id: int) -> None:
            calls.append(f"beat {trial_id}")

    class Client:
        def create_run(self, *args: object, **kwargs: object) -> None:
            calls.append("run")
            raise RuntimeError("stop here")

    class Tracker:
        client, experiment_id, parent_id, run_prefix = Client(), "0", "p", ""

    sf = parse_study(tiny_study("beat"), "b.yaml")
    objective = Objective(sf, Tracker(), ProblemCache(), Interrupts(), beat=Beat())  # type: ignore[arg-type]
    study = optuna.create_study(study_name="beat", storage=storage)
    study.optimize(objective, n_trials=1, catch=(RuntimeError,))
    trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name("beat"), 0)
    assert calls == [f"beat {trial_id}", "run"]


class _Storage:
    """The storage as an Owner sees it: a trial's state, and how often it was asked."""

    def __init__(self) -> None:
        self.state, self.asked = optuna.trial.TrialState.RUNNING, 0

    def get_trial(self, trial_id: int) -> object:
        self.asked += 1
        return type("Frozen", (), {"state": self.state})()


def test_a_trial_is_looked_up_only_after_a_pause_and_lost_once_ended() -> None:
    """Ownership costs no storage read while the process runs without a pause (here: a check right after
    the last look); past ``every_s`` it looks, and a trial found ended is lost for good."""
    from sweep.storage.ownership import Owner, TrialLost

    storage = _Storage()
    owner = Owner(storage, 7, 3, every_s=3600)
    owner.check()
    assert storage.asked == 0
    storage.state = optuna.trial.TrialState.FAIL
    owner.every_s = 0  # as after a pause longer than the heartbeat interval
    with pytest.raises(TrialLost, match="trial 3 was ended by another process"):
        owner.check()
    assert storage.asked == 1 and owner.lost
    with pytest.raises(TrialLost):
        owner.check()  # no second look
    assert storage.asked == 1


def test_a_refused_write_to_a_finished_trial_means_it_was_lost() -> None:
    from sweep.storage.ownership import Owner

    owner = Owner(_Storage(), 7, 3, every_s=3600)
    assert not owner.ended_by(ValueError("a trial's own failure"))
    assert owner.ended_by(optuna.exceptions.UpdateFinishedTrialError("finished"))


def test_a_failed_trials_frames_are_let_go_at_once() -> None:
    """The model a failed training's frames (and closures) held is freed by release(), without the cyclic
    collector (off here) — even with the error kept in a cycle, as Optuna keeps it."""
    import gc
    import weakref

    from sweep.execution.memory import details, release

    class Model:
        pass

    def train(model: Model) -> None:
        def step() -> None:  # a closure over the model, as the loops' step functions are
            raise MemoryError()

        step()

    gc.disable()
    try:
        model = Model()
        alive = weakref.ref(model)
        try:
            train(model)
        except MemoryError as e:
            kept = [e]
            kept.append(kept)  # the error in a reference cycle
            del model
            text = details(e)
            release(e, oom=False)
        assert alive() is None
        assert "in step" in text and details(kept[0]) == text  # the text stays for a group's other trials
    finally:
        gc.enable()
