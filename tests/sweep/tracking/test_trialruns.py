"""The records of one process's trials (:class:`sweep.tracking.trialruns.TrialRuns`): a run opened per trial,
closed with the trial's end state, its kept weights, nothing written for a trial another process ended, and
the beats of a group's members."""

from __future__ import annotations

import threading
from pathlib import Path

import optuna
import pytest
import torch
from mlflow.exceptions import MlflowException

from sweep.core.records import Attr, Tag
from sweep.storage.storage import WEIGHTS
from sweep.studyfile.sections import TrackingSection
from sweep.tracking import trialruns
from sweep.tracking.tracking import Tracker
from sweep.tracking.trialruns import TrialRuns

COMPLETE, FAIL = optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL


@pytest.fixture
def records(tmp_path: Path) -> tuple[optuna.Study, TrialRuns]:
    """An in-memory study, and the records of its trials in an MLflow SQLite store (no beats)."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(study_name="runs")
    tracker = Tracker(TrackingSection(uri=f"sqlite:///{tmp_path / 'm.db'}"), study)
    return study, TrialRuns(tracker)


def test_a_trial_run_is_opened_linked_and_closed_with_the_trial_state(records: tuple[optuna.Study, TrialRuns]) -> None:
    """Open: the run exists, linked both ways, and is this process's to close. Close: FINISHED for a complete
    trial, FAILED with the reason for a failed one, and the parent's best-so-far curve gains the point."""
    study, runs = records
    client = runs.tracker.client
    ended = []
    for value, state in ((0.5, COMPLETE), (None, FAIL)):
        trial = study.ask()
        run, tid = runs.open(trial)
        assert tid is None  # no beats without a storage to beat on
        assert runs.is_open(trial.number) and trial.number in runs.numbers()
        assert trial.user_attrs[Attr.RUN] == run.run_id
        assert client.get_run(run.run_id).data.tags[Tag.TRIAL_NUMBER] == str(trial.number)
        if state == FAIL:
            run.fail(trial, "loss is nan")
        frozen = study.tell(trial, value, state=state)
        runs.close(study, frozen)
        assert not runs.is_open(trial.number)
        ended.append(client.get_run(run.run_id).info.status)
    assert ended == ["FINISHED", "FAILED"]
    failed_run = client.get_run(study.trials[1].user_attrs[Attr.RUN])
    assert failed_run.data.tags[Tag.FAIL_REASON] == "loss is nan"
    best = client.get_metric_history(runs.tracker.parent_id, "best_value")
    assert [(m.step, m.value) for m in best] == [(0, 0.5), (1, 0.5)]


def test_a_trial_another_process_ended_gets_nothing_more(records: tuple[optuna.Study, TrialRuns]) -> None:
    """A trial marked lost is closed by the process that ended it: this one leaves its run as it is."""
    study, runs = records
    trial = study.ask()
    run, _ = runs.open(trial)
    runs.lost(trial.number)
    runs.close(study, study.tell(trial, 1.0))
    assert runs.tracker.client.get_run(run.run_id).info.status == "RUNNING"
    assert not runs.tracker.client.get_metric_history(runs.tracker.parent_id, "best_value")


def test_a_run_taken_out_is_closed_from_the_trial_s_record(records: tuple[optuna.Study, TrialRuns]) -> None:
    """A run no longer held (taken by an unrecorded trial's handling, or opened by another process before a
    re-queue) is closed by the id the trial recorded."""
    study, runs = records
    trial = study.ask()
    run, _ = runs.open(trial)
    assert runs.take(trial.number) is run and runs.take(trial.number) is None
    trial.set_user_attr(Attr.FAIL, "the storage went away")
    runs.close(study, study.tell(trial, state=FAIL))
    closed = runs.tracker.client.get_run(run.run_id)
    assert closed.info.status == "FAILED" and closed.data.tags[Tag.FAIL_REASON] == "the storage went away"


def test_kept_weights_are_written_once_with_their_epoch(
    records: tuple[optuna.Study, TrialRuns], tmp_path: Path
) -> None:
    """``weights.pt`` and the epoch it is from (a tag and an attribute); nothing when there is nothing kept."""
    study, runs = records
    trial = study.ask()
    run, _ = runs.open(trial)
    runs.keep_weights(trial, run, lambda _path: None, 3)
    assert Attr.CHECKPOINT_EPOCH not in trial.user_attrs and run.files_written == 0

    def save(path: Path) -> Path:
        torch.save({"model": {"w": torch.ones(2)}}, path)
        return path

    runs.keep_weights(trial, run, save, 4)
    assert trial.user_attrs[Attr.CHECKPOINT_EPOCH] == 4
    client = runs.tracker.client
    assert client.get_run(run.run_id).data.tags[Tag.CHECKPOINT_EPOCH] == "4"
    assert [f.path for f in client.list_artifacts(run.run_id)] == [WEIGHTS]
    got = torch.load(client.download_artifacts(run.run_id, WEIGHTS, str(tmp_path)), weights_only=True)
    assert torch.equal(got["model"]["w"], torch.ones(2))


def test_a_store_that_refuses_for_lack_of_room_stops_the_study(records: tuple[optuna.Study, TrialRuns]) -> None:
    """A full tracking store stops the study after the trial; any other MLflow error does not."""
    _, runs = records
    runs.store_refused(MlflowException("bad request: param too long"))
    assert not runs.files.stop()
    runs.store_refused(MlflowException("(sqlite3.OperationalError) database or disk is full"))
    assert runs.files.stop() and "database or disk is full" in runs.files.why()


def test_a_failing_open_counts_a_refusing_store_and_raises(records: tuple[optuna.Study, TrialRuns]) -> None:
    study, runs = records

    def full(*args: object, **kwargs: object) -> None:
        raise MlflowException("(sqlite3.OperationalError) database or disk is full")

    runs.tracker.client.create_run = full  # type: ignore[method-assign]
    trial = study.ask()
    with pytest.raises(MlflowException):
        runs.open(trial)
    assert not runs.is_open(trial.number) and runs.files.stop()


def test_a_group_s_members_beat_while_they_train() -> None:
    """Every member's heartbeat is recorded, again and again, while the block runs; none after it ends."""
    beats: list[int] = []
    enough = threading.Event()

    class Storage:
        heartbeat_interval = 0.001  # as often as it can: the test waits on the beats, not on a clock

        def record_heartbeat(self, trial_id: int) -> None:
            beats.append(trial_id)
            if beats.count(7) >= 3 and beats.count(9) >= 3:
                enough.set()

    runs = TrialRuns(tracker=None, beat=Storage())  # type: ignore[arg-type]
    with runs.beating([7, 9]):
        assert enough.wait(timeout=60), f"beats so far: {beats}"
    assert set(beats) == {7, 9}
    assert "sweep-group-heartbeat" not in [t.name for t in threading.enumerate()]  # joined: no beat after the block


def test_no_beats_without_a_heartbeat_interval() -> None:
    """A storage without heartbeats (or none at all): the block runs, no thread starts."""
    runs = TrialRuns(tracker=None, beat=None)  # type: ignore[arg-type]
    before = threading.active_count()
    with runs.beating([1, 2]):
        assert threading.active_count() == before


def test_a_group_s_records_are_held_then_sent_together(
    records: tuple[optuna.Study, TrialRuns], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Held: a member's config writes its params and tags nowhere until send_held, which sends every member's
    (and the group's tag) in one write; from then on a member's config is written at once again."""
    study, runs = records
    trials = [study.ask() for _ in range(3)]
    opened = [runs.open(t)[0] for t in trials]
    client = runs.tracker.client
    writes: list[set[str]] = []
    sent: list[str] = []
    real_write, real_log = trialruns.write_many, client.log_batch
    monkeypatch.setattr(trialruns, "write_many", lambda c, b: (writes.append(set(b)), real_write(c, b))[1])
    monkeypatch.setattr(client, "log_batch", lambda run_id, **kw: (sent.append(run_id), real_log(run_id, **kw))[1])
    runs.hold(opened)
    for i, (trial, run) in enumerate(zip(trials, opened, strict=True)):
        run.record_config(trial, {"weights": [0.5, 0.5], "seed": i, "lr": 0.1 * (i + 1)}, {Tag.DEVICE: "cpu"})
    assert sent == [] and all(client.get_run(r.run_id).data.params == {} for r in opened)
    group = {Tag.GROUP: "0, 1"}
    assert runs.send_held([(opened[0], group), (opened[1], group), (opened[2], {})]) == {}
    assert writes == [{r.run_id for r in opened}] and sent == []
    for i, run in enumerate(opened):
        data = client.get_run(run.run_id).data
        assert data.params["lr"] == str(0.1 * (i + 1)) and data.params["seed"] == str(i)
        assert data.tags[Tag.DEVICE] == "cpu" and data.tags.get(Tag.GROUP) == (None if i == 2 else "0, 1")
    opened[0].record_config(trials[0], {"weights": [0.5, 0.5], "seed": 0, "extra": 1}, {})  # no longer held
    assert sent == [opened[0].run_id] and client.get_run(opened[0].run_id).data.params["extra"] == "1"


def test_a_group_s_epochs_are_sent_together_and_a_lost_member_s_dropped(
    records: tuple[optuna.Study, TrialRuns],
) -> None:
    """Grouped: the members' epochs wait in one queue; one member's flush sends every member's epochs, except
    those of a member this process lost (to another process), whose run gets nothing more."""
    study, runs = records
    trials = [study.ask() for _ in range(3)]
    opened = [runs.open(t)[0] for t in trials]
    runs.grouped([(run, lambda: True) for run in opened])
    assert all(run.group is opened[0].group for run in opened)
    opened[0].group.flush_every_s = 3600.0  # type: ignore[union-attr]
    for epoch in range(2):
        for run in opened:
            run.log_epoch(epoch, {"val_loss": 1.0 / (epoch + 1)})
    client = runs.tracker.client
    assert all(client.get_metric_history(r.run_id, "val_loss") == [] for r in opened)
    runs.lost(trials[2].number)
    opened[1].flush()
    assert [len(client.get_metric_history(r.run_id, "val_loss")) for r in opened] == [2, 2, 0]
