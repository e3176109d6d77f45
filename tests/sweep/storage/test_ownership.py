"""Whether the trial a process trains is still its own (sweep/storage/ownership.py): looked up only when the
last look is old, lost for good once another process ended it, and a storage that cannot say leaves it owned."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from sweep.storage.ownership import Owner, TrialLost


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
    owner = Owner(_Storage(), 7, 3, every_s=3600)
    assert not owner.ended_by(ValueError("a trial's own failure"))
    assert owner.ended_by(optuna.exceptions.UpdateFinishedTrialError("finished"))


@pytest.mark.parametrize(("storage", "trial_id"), [(None, 7), (_Storage(), None)])
def test_without_a_storage_or_a_trial_id_the_trial_is_never_lost(storage: object, trial_id: int | None) -> None:
    """Nothing else can end the trial (an in-memory study, a trial not yet stored): no look, no loss."""
    owner = Owner(storage, trial_id, 3, every_s=0)
    if isinstance(storage, _Storage):
        storage.state = TrialState.FAIL
    owner.check()
    assert not owner.ended_by(ValueError("x")) and not owner.lost
    assert not isinstance(storage, _Storage) or storage.asked == 0


def test_a_trial_failed_by_another_process_is_lost_on_a_shared_sqlite_file(tmp_path: Path) -> None:
    """Two storages on one SQLite file, as two processes: while the trial runs it is the first's;
    once the second fails it (a stale heartbeat), the first's next look raises :class:`TrialLost`."""
    url = f"sqlite:///{tmp_path / 'o.db'}"
    mine, theirs = optuna.storages.RDBStorage(url), optuna.storages.RDBStorage(url)
    study = optuna.create_study(storage=mine, study_name="s")
    trial = study.ask()
    owner = Owner(mine, trial._trial_id, trial.number, every_s=0)
    owner.check()
    assert not owner.lost
    theirs.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    with pytest.raises(TrialLost, match=r"^trial 0 was ended by another process while this one trained it$"):
        owner.check()
    assert owner.ended_by(RuntimeError("the training's own error, after the loss"))


@pytest.mark.parametrize("state", [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL])
def test_every_finished_state_means_lost(state: TrialState) -> None:
    storage = _Storage()
    storage.state = state
    assert Owner(storage, 1, 0, every_s=0).ended_by(ValueError("x"))


def test_a_storage_that_cannot_say_leaves_the_trial_owned() -> None:
    """The look fails (the database is down): the failure is recorded as any other, the trial is not lost,
    and the next look asks again."""

    class Down(_Storage):
        def get_trial(self, trial_id: int) -> object:
            self.asked += 1
            raise ConnectionError("database unreachable")

    storage = Down()
    owner = Owner(storage, 1, 0, every_s=0)
    assert not owner.ended_by(ValueError("x")) and not owner.lost
    assert not owner.ended_by(TrialLost("another trial of the group was lost"))  # ends training, not ownership
    assert storage.asked == 2
