"""The end of a study, done once however many processes reach it (:mod:`sweep.execution.finishing`), in this
process: the claim on a study (on SQLite, and on the local PostgreSQL where one answers), the report and
the parent run closed once, the evaluation's claim, and :func:`finish`'s choice of how the parent run ends.

Another process's claim is a record naming another ``host:pid``. Real processes ending one study at once
(a claimer killed, four processes held at the end) are in tests/test_finish_once.py."""

from __future__ import annotations

import os
import socket
import types
import uuid
import warnings
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import optuna
import pytest
from sqlalchemy import text

from sweep.execution import finishing
from sweep.execution.finishing import (
    EVALUATING,
    FINISHED_BY,
    claimed,
    close_once,
    evaluation_claim,
    finish,
    me,
    server_now,
    settle,
)
from sweep.storage.resilient import StorageDown
from sweep.storage.storage import open_storage
from sweep.studyfile.config import parse_study
from sweep.studyfile.sections import StudySection
from tests.conftest import postgres_error, tiny_study
from tests.support.pgtools import database, pg

GRACE = 60  # seconds a claim stays live without a renewal
SECTION = types.SimpleNamespace(grace_period=GRACE, heartbeat_interval=3600)  # no renewal within a test
OTHER = "elsewhere:4242"  # another machine's process


class Store:
    """A new study in the module's storage, and what a test reads and writes of its claims."""

    def __init__(self, url: str, rdb: optuna.storages.RDBStorage) -> None:
        self.url, self.rdb = url, rdb
        self.name = f"f{uuid.uuid4().hex[:8]}"
        self.study = optuna.create_study(study_name=self.name, storage=rdb)
        self.study_id = rdb.get_study_id_from_name(self.name)

    def record(self, key: str = FINISHED_BY) -> dict[str, Any] | None:
        return self.rdb.get_study_system_attrs(self.study_id).get(key)

    def set(self, key: str = FINISHED_BY, ago_s: float = 0.0, **record: Any) -> dict[str, Any]:
        """Write a claim record renewed ``ago_s`` seconds ago by the storage's clock."""
        at = (server_now(self.rdb) - timedelta(seconds=ago_s)).isoformat()
        record = {"running": True, "done": False, "at": at, **record}
        self.rdb.set_study_system_attr(self.study_id, key, record)
        return record

    def complete(self, n: int) -> None:
        for _ in range(n):
            self.study.tell(self.study.ask(), 1.0)


Storage = tuple[str, optuna.storages.RDBStorage]


@pytest.fixture(scope="module")
def sqlite_storage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Storage]:
    """One SQLite storage for the module (making its tables takes a while); each test has its own study."""
    url = f"sqlite:///{tmp_path_factory.mktemp('finishing') / 'o.db'}"
    rdb = open_storage(url)
    yield url, rdb
    rdb.engine.dispose()


@pytest.fixture(scope="module")
def postgres_storage() -> Iterator[Storage]:
    """A database of the local PostgreSQL for the module (dropped after)."""
    if postgres_error():
        pytest.skip(f"claims on a database server: {postgres_error()}")
    with database() as db:
        rdb = open_storage(pg(db))
        yield pg(db), rdb
        rdb.engine.dispose()


@pytest.fixture
def store(sqlite_storage: Storage) -> Store:
    return Store(*sqlite_storage)


@pytest.fixture(params=["sqlite", "postgres"])
def either(request: pytest.FixtureRequest) -> Store:
    """A study on SQLite, and on the local PostgreSQL (skipped, saying why, where no server answers)."""
    return Store(*request.getfixturevalue(f"{request.param}_storage"))


def _dead_pid() -> int:
    """A process id no process of this machine has now."""
    for pid in range(int(Path("/proc/sys/kernel/pid_max").read_text()) - 1, 1, -1):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            continue
    raise AssertionError("no free pid")


# --- who this process is, and the storage's clock --------------------------------------------------------


def test_me_is_host_and_pid() -> None:
    assert me() == f"{socket.gethostname()}:{os.getpid()}"


def test_server_now_is_the_storage_s_clock_in_naive_utc(either: Store) -> None:
    """SQLite's CURRENT_TIMESTAMP and PostgreSQL's now() (with a time zone): both naive UTC, as Optuna's
    heartbeats are."""
    found = server_now(either.rdb)
    assert found.tzinfo is None
    assert abs((found - datetime.now(UTC).replace(tzinfo=None)).total_seconds()) < GRACE  # not hours off


def test_server_now_in_another_time_zone_is_utc(postgres_storage: Storage) -> None:
    """A server (or a session) in another time zone: its clock still read as UTC."""
    url, _ = postgres_storage
    options = {"connect_args": {"options": "-c timezone=Asia/Kolkata"}}  # UTC+05:30
    kolkata = optuna.storages.RDBStorage(url, engine_kwargs=options, skip_compatibility_check=True)
    try:
        found = server_now(kolkata)
    finally:
        kolkata.engine.dispose()
    assert found.tzinfo is None
    assert abs((found - datetime.now(UTC).replace(tzinfo=None)).total_seconds()) < GRACE


# --- claimed(): one process does the work ---------------------------------------------------------------


def _claim(store: Store, settled: Callable[[dict[str, Any]], bool] = lambda _r: False, **fields: Any) -> Any:
    return claimed(store.rdb, store.url, store.name, FINISHED_BY, SECTION, settled, **fields)


def test_the_first_process_claims_records_who_and_whether_done(either: Store) -> None:
    """No record: the work is this process's; the record names it, running, with the fields, then says
    whether it was done."""
    before = server_now(either.rdb)
    with _claim(either, finished=3) as claim:
        assert claim.other is None
        record = either.record()
        assert record is not None and record["by"] == me() and record["running"] and not record["done"]
        assert record["finished"] == 3 and datetime.fromisoformat(record["at"]) >= before - timedelta(seconds=1)
        claim.done = True
    assert either.record() == {**record, "running": False, "done": True}


def test_a_claim_whose_block_fails_is_left_not_done(store: Store) -> None:
    with pytest.raises(RuntimeError), _claim(store) as claim:
        assert claim.other is None
        raise RuntimeError("the report failed")
    record = store.record()
    assert record is not None and record["by"] == me() and not record["running"] and not record["done"]


def test_a_live_claim_of_another_process_is_left_alone(either: Store) -> None:
    """Renewed within the grace period by another machine's process: this one does nothing, writes nothing."""
    theirs = either.set(by=OTHER, ago_s=GRACE / 2, finished=2)
    with _claim(either, finished=2) as claim:
        assert claim.other == theirs
        claim.done = True  # ignored: not this process's claim
    assert either.record() == theirs


def test_a_stale_claim_of_another_process_is_taken_over(either: Store) -> None:
    """Not renewed for the grace period (its process killed): the next process claims it."""
    either.set(by=OTHER, ago_s=GRACE + 5)
    with _claim(either) as claim:
        assert claim.other is None and either.record()["by"] == me()  # type: ignore[index]


def test_a_claim_of_a_gone_process_on_this_machine_is_taken_over_at_once(store: Store) -> None:
    """On this machine the process is looked for: gone, its claim is taken over before its grace period."""
    store.set(by=f"{socket.gethostname()}:{_dead_pid()}")
    with _claim(store) as claim:
        assert claim.other is None


def test_a_claim_of_another_live_process_on_this_machine_is_left_alone(store: Store) -> None:
    theirs = store.set(by=f"{socket.gethostname()}:{os.getppid()}")
    with _claim(store) as claim:
        assert claim.other == theirs


@pytest.mark.parametrize(
    "record",
    [
        {"by": OTHER, "running": False, "done": True},  # ended, but the caller wants more (a resume)
        {"by": OTHER, "running": True, "done": False},  # no "at": not known to be alive
        {"by": OTHER, "running": True, "done": False, "at": "yesterday"},
    ],
    ids=["ended", "no time", "bad time"],
)
def test_a_claim_not_known_to_be_live_is_taken_over(store: Store, record: dict[str, Any]) -> None:
    store.rdb.set_study_system_attr(store.study_id, FINISHED_BY, record)
    with _claim(store) as claim:
        assert claim.other is None and store.record()["by"] == me()  # type: ignore[index]


def test_this_process_s_own_running_claim_is_claimed_again(store: Store) -> None:
    """A running claim naming this process (an earlier block of it that never recorded its end) is no other
    process's: claimed again, at once."""
    store.set(by=me(), ago_s=1)
    with _claim(store, finished=5) as claim:
        assert claim.other is None and store.record()["finished"] == 5  # type: ignore[index]


def test_a_settled_record_is_the_answer_and_nothing_is_written(store: Store) -> None:
    """``settled`` says the record shows the work done: nothing is claimed, whoever did it (this process
    too, earlier)."""
    for by in (OTHER, me()):
        done = store.set(by=by, running=False, done=True, finished=4)
        with _claim(store, lambda r: r.get("finished", -1) >= 4, finished=4) as claim:
            assert claim.other == done
        assert store.record() == done


def test_the_claims_of_two_keys_are_apart(store: Store) -> None:
    """The end of the study and its evaluation are claimed apart: one held does not hold the other."""
    store.set(by=OTHER)
    with claimed(store.rdb, store.url, store.name, EVALUATING, SECTION) as claim:
        assert claim.other is None
    assert store.record()["by"] == OTHER and store.record(EVALUATING)["by"] == me()  # type: ignore[index]


class _Beats:
    """``stop`` for :func:`finishing._renew`: ``n`` heartbeats are due, then the claim's block ends."""

    def __init__(self, n: int) -> None:
        self.left = n

    def wait(self, every_s: float) -> bool:
        self.left -= 1
        return self.left < 0


def test_the_claim_s_heartbeat_renews_only_this_process_s_running_claim(either: Store) -> None:
    old = either.set(by=me(), ago_s=GRACE - 1)
    finishing._renew(either.rdb, either.study_id, FINISHED_BY, _Beats(2), 1.0)  # type: ignore[arg-type]
    renewed = either.record()
    assert renewed is not None and renewed["at"] > old["at"] and {**renewed, "at": old["at"]} == old
    for record in ({"by": OTHER}, {"by": me(), "running": False}):
        theirs = either.set(ago_s=GRACE - 1, **record)
        finishing._renew(either.rdb, either.study_id, FINISHED_BY, _Beats(1), 1.0)  # type: ignore[arg-type]
        assert either.record() == theirs


def test_a_heartbeat_that_fails_waits_for_the_next(store: Store) -> None:
    """An outage at one beat: the next beat tries again (the thread does not die)."""
    calls: list[int] = []

    class Flaky:
        def get_study_system_attrs(self, study_id: int) -> dict[str, Any]:
            calls.append(study_id)
            if len(calls) == 1:
                raise ConnectionError("server closed the connection")
            return store.rdb.get_study_system_attrs(study_id)

        def set_study_system_attr(self, *args: Any) -> None:
            store.rdb.set_study_system_attr(*args)

        engine = store.rdb.engine

    old = store.set(by=me(), ago_s=GRACE - 1)
    finishing._renew(Flaky(), store.study_id, FINISHED_BY, _Beats(2), 1.0)  # type: ignore[arg-type]
    assert len(calls) == 2 and store.record()["at"] > old["at"]  # type: ignore[index]


# --- close_once(): the report and the parent run, once ----------------------------------------------------


class _Page(list):
    """A page of MLflow's search results: none, and no next page."""

    token = None


class _Client:
    """The MLflow client as :mod:`sweep.execution.finishing` uses it: the parent run's status, no stray run."""

    def __init__(self, status: str) -> None:
        self.status = status

    def get_run(self, run_id: str) -> Any:
        return types.SimpleNamespace(info=types.SimpleNamespace(status=self.status))

    def search_runs(self, *args: Any, **kwargs: Any) -> _Page:
        return _Page()


class _Tracker:
    """The study's MLflow side: records how the parent run is closed."""

    def __init__(self, status: str = "RUNNING", fails: bool = False) -> None:
        self.client = _Client(status)
        self.parent_id, self.experiment_id = "parent", "0"
        self.closed: list[str] = []
        self.fails = fails

    def finish(self, status: str) -> None:
        if self.fails:
            raise ConnectionError("tracking server gone")
        self.closed.append(status)


def _session(store: Store, tracker: _Tracker | None = None) -> Any:
    return types.SimpleNamespace(study=store.study, tracker=tracker or _Tracker(), rdb=store.rdb, storage=store.url)


class _Report:
    """A report that records each writing and returns (or raises) what it is told."""

    def __init__(self, result: Any = True) -> None:
        self.calls = 0
        self.result = result

    def __call__(self) -> bool | None:
        self.calls += 1
        if isinstance(self.result, BaseException):
            raise self.result
        return self.result  # type: ignore[no-any-return]


def test_the_first_process_writes_the_report_and_closes_the_parent_run(
    store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    store.complete(2)
    session, report = _session(store), _Report()
    assert close_once(session, report, SECTION) == ""  # type: ignore[arg-type]
    assert report.calls == 1 and session.tracker.closed == ["FINISHED"]
    assert (
        capsys.readouterr().err == f"note: this process ({me()}) writes the report of the study's 2 finished trials\n"
    )
    record = store.record()
    assert record is not None
    assert {k: record[k] for k in ("finished", "report", "by", "running", "done")} == {
        "finished": 2,
        "report": True,
        "by": me(),
        "running": False,
        "done": True,
    }


def test_a_study_ended_for_its_count_is_not_reported_again(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    """Ended with this many finished trials: one note names who wrote it; the parent run a later start
    reopened is closed again, one already closed is left."""
    store.complete(2)
    close_once(_session(store), _Report(), SECTION)  # type: ignore[arg-type]
    capsys.readouterr()
    for status, closes in (("RUNNING", ["FINISHED"]), ("FINISHED", [])):
        session, report = _session(store, _Tracker(status)), _Report()
        assert close_once(session, report, SECTION) == ""  # type: ignore[arg-type]
        assert report.calls == 0 and session.tracker.closed == closes
        assert capsys.readouterr().err == f"note: the report of the study's 2 finished trials is written by {me()}\n"


def test_a_report_under_way_elsewhere_is_left_to_it(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    """Another process claimed the end of the study and is writing: no report here, the parent run left
    to it, one note."""
    store.complete(2)
    store.set(by=OTHER, finished=2, report=True)
    session, report = _session(store), _Report()
    assert close_once(session, report, SECTION) == ""  # type: ignore[arg-type]
    assert report.calls == 0 and session.tracker.closed == []
    assert capsys.readouterr().err == f"note: the report of the study's 2 finished trials is being written by {OTHER}\n"


def test_a_resume_that_adds_trials_writes_a_new_report(store: Store) -> None:
    store.complete(2)
    close_once(_session(store), _Report(), SECTION)  # type: ignore[arg-type]
    store.complete(1)
    report = _Report()
    close_once(_session(store), report, SECTION)  # type: ignore[arg-type]
    assert report.calls == 1 and store.record()["finished"] == 3  # type: ignore[index]


def test_without_a_report_only_the_parent_run_is_closed_once(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    """``report=None`` (--no-report): closed FINISHED without a report; a later run without one says who
    closed it; a later run that asks for the report writes it (the end is not settled without one)."""
    store.complete(1)
    session = _session(store)
    assert close_once(session, None, SECTION) == "" and session.tracker.closed == ["FINISHED"]  # type: ignore[arg-type]
    assert store.record()["report"] is False  # type: ignore[index]
    assert capsys.readouterr().err == ""
    close_once(_session(store, _Tracker("FINISHED")), None, SECTION)  # type: ignore[arg-type]
    assert capsys.readouterr().err == f"note: the study's parent run (1 finished trials) is closed by {me()}\n"
    report = _Report()
    close_once(_session(store), report, SECTION)  # type: ignore[arg-type]
    assert report.calls == 1 and store.record()["report"] is True  # type: ignore[index]


def test_an_interrupted_report_closes_the_run_killed_and_leaves_the_end_to_the_next(store: Store) -> None:
    store.complete(1)
    session = _session(store)
    assert close_once(session, _Report(False), SECTION) == ""  # type: ignore[arg-type]
    assert session.tracker.closed == ["KILLED"]
    assert store.record()["done"] is False and store.record()["running"] is False  # type: ignore[index]
    report = _Report()
    close_once(_session(store), report, SECTION)  # type: ignore[arg-type]
    assert report.calls == 1


@pytest.mark.parametrize(
    ("error", "why"),
    [
        (RuntimeError("disk full"), "could not finish the study (RuntimeError: disk full); run the same command again"),
        (StorageDown("the storage is down; run again"), "the storage is down; run again"),  # its own line
    ],
    ids=["error", "storage down"],
)
def test_a_failing_end_closes_the_parent_run_failed_and_says_why(store: Store, error: Exception, why: str) -> None:
    store.complete(1)
    session = _session(store)
    assert close_once(session, _Report(error), SECTION) == why  # type: ignore[arg-type]
    assert session.tracker.closed == ["FAILED"]
    assert store.record()["done"] is False  # type: ignore[index]


def test_a_parent_run_that_cannot_be_closed_is_said(store: Store) -> None:
    """The tracking store gone at the close: one line, nothing raised."""
    store.complete(1)
    why = close_once(_session(store, _Tracker(fails=True)), None, SECTION)  # type: ignore[arg-type]
    assert why == "could not finish the study (ConnectionError: tracking server gone); run the same command again"
    assert store.record()["done"] is False  # type: ignore[index]


# --- finish(): how the parent run ends ---------------------------------------------------------------------


def _section(store: Store, n_trials: int = 2) -> StudySection:
    doc = tiny_study("f", study={"n_trials": n_trials, "storage": store.url, "grace_period": GRACE})
    return parse_study(doc, "f.yaml").study


@pytest.fixture
def reports(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, ...]]:
    """The report finish() writes, recorded instead of drawn."""
    written: list[tuple[str, ...]] = []

    def report(session: Any, section: StudySection, losses: list[str]) -> bool:
        written.append(tuple(losses))
        return True

    monkeypatch.setattr(finishing, "_report", report)
    return written


def test_a_done_study_is_closed_once_with_its_report(store: Store, reports: list[tuple[str, ...]]) -> None:
    store.complete(2)
    session = _session(store)
    assert finish(session, _section(store), ["a", "b"], report=True, interrupted=False) == ""
    assert reports == [("a", "b")] and session.tracker.closed == ["FINISHED"]
    assert store.record()["done"] is True  # type: ignore[index]


def test_a_study_others_still_run_is_left_open(store: Store, reports: list[tuple[str, ...]]) -> None:
    """Short of n_trials with a trial RUNNING (another process's): nothing closed, no report, no claim."""
    store.complete(1)
    store.study.ask()
    session = _session(store)
    assert finish(session, _section(store), ["a"], report=True, interrupted=False) == ""
    assert reports == [] and session.tracker.closed == [] and store.record() is None


def test_a_study_that_stopped_short_with_nothing_running_is_finished(
    store: Store, reports: list[tuple[str, ...]]
) -> None:
    """Short of n_trials and nothing running (a timeout): finished, once."""
    store.complete(1)
    session = _session(store)
    assert finish(session, _section(store), ["a"], report=False, interrupted=False) == ""
    assert session.tracker.closed == ["FINISHED"] and store.record() is not None


@pytest.mark.parametrize("failed", [False, True])
def test_an_interrupted_run_closes_killed_without_a_report(
    store: Store, reports: list[tuple[str, ...]], failed: bool
) -> None:
    """Interrupted (also when it failed too): KILLED, so that the next run resumes it; no report."""
    store.complete(2)
    session = _session(store)
    assert finish(session, _section(store), ["a"], report=True, interrupted=True, failed=failed) == ""
    assert session.tracker.closed == ["KILLED"] and reports == [] and store.record() is None


def test_a_failed_run_closes_failed_with_its_report(store: Store, reports: list[tuple[str, ...]]) -> None:
    """``failed`` (as many trials failed as n_trials): FAILED, the report still written, even with other
    trials running."""
    store.complete(1)
    store.study.ask()
    session = _session(store)
    assert finish(session, _section(store), ["a"], report=True, interrupted=False, failed=True) == ""
    assert session.tracker.closed == ["FAILED"] and reports == [("a",)] and store.record() is None


def test_a_storage_that_fails_at_the_end_closes_failed_and_says_why(
    store: Store, reports: list[tuple[str, ...]]
) -> None:
    class Broken:
        study_name = "f"

        def get_trials(self, *args: Any, **kwargs: Any) -> list:
            raise RuntimeError("no such table: trials")

    session = _session(store)
    session.study = Broken()
    why = finish(session, _section(store), ["a"], report=True, interrupted=False)
    assert why == "could not finish the study (RuntimeError: no such table: trials); run the same command again"
    assert session.tracker.closed == ["FAILED"] and reports == []


def test_a_parent_run_that_cannot_be_closed_at_the_end_is_said(store: Store) -> None:
    store.complete(2)
    session = _session(store, _Tracker(fails=True))
    why = finish(session, _section(store), ["a"], report=False, interrupted=True)
    assert why.startswith("could not close the study's MLflow parent run (ConnectionError: tracking server gone)")


def test_settle_fails_a_dead_process_s_running_trial(sqlite_storage: Storage) -> None:
    """A RUNNING trial whose heartbeat is older than the grace period is failed (and handed to the callback);
    one whose heartbeat is fresh is left RUNNING when the time given ends."""
    handed: list[int] = []
    with warnings.catch_warnings():  # heartbeats are "experimental", and "to be used with Study.optimize"
        warnings.simplefilter("ignore")
        rdb = open_storage(sqlite_storage[0], (60, 120, lambda s, t: handed.append(t.number)))
        study = optuna.create_study(study_name=f"s{uuid.uuid4().hex[:8]}", storage=rdb)
        dead, live = study.ask(), study.ask()
    for trial in (dead, live):
        rdb.record_heartbeat(trial._trial_id)
    with rdb.engine.begin() as conn:
        conn.execute(
            text("UPDATE trial_heartbeats SET heartbeat = '2000-01-01 00:00:00' WHERE trial_id = :t"),
            {"t": dead._trial_id},
        )
    settle(study, within_s=0.2, every_s=0.01)
    assert [t.state.name for t in study.trials] == ["FAIL", "RUNNING"] and handed == [0]
    rdb.engine.dispose()


# --- evaluation_claim(): one process evaluates ---------------------------------------------------------


def _study_section(url: str) -> StudySection:
    return parse_study(tiny_study("e", study={"storage": url, "grace_period": GRACE}), "e.yaml").study


def test_an_evaluation_without_a_storage_claims_nothing_and_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "none.db"
    with evaluation_claim(_study_section(f"sqlite:///{path}"), "e") as other:
        assert other is None
    assert not path.exists()


def test_an_evaluation_of_a_study_not_in_its_storage_claims_nothing(store: Store) -> None:
    with evaluation_claim(_study_section(store.url), "absent") as other:
        assert other is None
    assert store.record(EVALUATING) is None


def test_the_first_evaluation_claims_and_another_s_live_claim_is_named(either: Store) -> None:
    """No claim: this process evaluates (its claim held while the block runs); a live claim of another
    process: its name, nothing written; a stale one: taken over."""
    section = _study_section(either.url)
    with evaluation_claim(section, either.name) as other:
        assert other is None and either.record(EVALUATING)["running"] is True  # type: ignore[index]
    assert either.record(EVALUATING)["running"] is False  # type: ignore[index]
    theirs = either.set(EVALUATING, by=OTHER)
    with evaluation_claim(section, either.name) as other:
        assert other == OTHER
    assert either.record(EVALUATING) == theirs
    either.set(EVALUATING, by=OTHER, ago_s=GRACE + 5)
    with evaluation_claim(section, either.name) as other:
        assert other is None
