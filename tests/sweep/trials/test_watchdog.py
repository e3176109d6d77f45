"""A trial whose training hangs (:mod:`sweep.trials.watchdog`), in this process: the limits, the error raised
into the training, the last resort, and how a hung trial is ended.

Most tests move the watchdog's own clock (its module's ``time``, :class:`Clock`): the watching thread sees
a new time only when a test advances it, and a test waits for the thread to have looked, so what fires
when follows the test's steps, at any machine speed. Hung trials in real processes (the CLI, a process
that exits) are in tests/test_hung_trials.py."""

from __future__ import annotations

import signal
import sys
import threading
import time
import types
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
import pytest

from sweep.core.errors import EXIT_RUNTIME
from sweep.core.interrupts import Interrupts
from sweep.core.records import Attr
from sweep.storage.claimlock import study_lock
from sweep.storage.storage import open_storage
from sweep.trials import watchdog as module
from sweep.trials.watchdog import ABANDON_S, SIGNAL, TrialTimeout, Watchdog, _Watch, abandon, main_thread_stack
from tests.support.pausing import until

WAIT_S = 60  # a bound on waits for the watching thread (it answers in milliseconds): a broken one fails, not hangs


def _never(why: str) -> None:
    raise AssertionError(f"gave up on the training: {why}")


def test_a_stall_interrupts_a_blocked_main_thread() -> None:
    """No progress for stall_timeout: the blocked wait in the training raises TrialTimeout with the reason."""
    interrupts = Interrupts()
    watchdog = Watchdog(None, 0.3, interrupts, grace=600)
    stalled = pytest.raises(TrialTimeout, match=r"no progress: no epoch reported for 0\.3 s after epoch 4")
    with watchdog.installed(), stalled, watchdog.watching(_never), interrupts.training():
        watchdog.progress(4)
        threading.Event().wait()


def test_a_swallowed_timeout_is_raised_again() -> None:
    """User code that catches the error and blocks again gets it again (a second later)."""
    interrupts = Interrupts()
    watchdog = Watchdog(0.2, None, interrupts, grace=600)
    caught = []
    timed_out = pytest.raises(TrialTimeout, match="timed out")
    with watchdog.installed(), timed_out, watchdog.watching(_never), interrupts.training():
        try:
            threading.Event().wait()
        except TrialTimeout as e:  # swallowed
            caught.append(e)
        threading.Event().wait()
    assert len(caught) == 1


def test_a_limit_passed_in_a_database_write_is_raised_when_the_write_ends() -> None:
    """Inside a shielded write (a database call) the error waits for the write's end, then is raised."""
    interrupts = Interrupts()
    watchdog = Watchdog(0.2, None, interrupts, grace=600)
    written = threading.Event()

    def write_ends_once_the_limit_has_passed() -> None:
        until(lambda: interrupts._deferred is not None, "deferred timeout")  # fired; the handler deferred it
        written.set()

    helper = threading.Thread(target=write_ends_once_the_limit_has_passed)
    timed_out = pytest.raises(TrialTimeout, match=r"timed out: still training after 0\.2 s")
    with watchdog.installed(), timed_out, watchdog.watching(_never), interrupts.training():
        helper.start()
        with interrupts.shielded():
            written.wait()  # the "write": it is not interrupted
        raise AssertionError("not raised after the write")
    helper.join()
    assert written.is_set()


# --- the limits, on the watchdog's own clock -------------------------------------------------------------


class Clock:
    """The watchdog module's ``time`` while a test runs: ``monotonic()`` is what the test says."""

    def __init__(self, watchdog: Watchdog) -> None:
        self.now = 1000.0
        self.watchdog = watchdog
        self.looked = threading.Event()  # the watching thread read the clock

    def monotonic(self) -> float:
        if threading.current_thread().name == "sweep-watchdog":
            self.looked.set()
        return self.now

    def move(self, seconds: float) -> None:
        """Time passes; the watching thread is woken to look (it may then fire: the caller waits for that)."""
        with self.watchdog._cond:
            self.now += seconds
            self.looked.clear()
            self.watchdog._cond.notify_all()

    def advance(self, seconds: float) -> None:
        """Time passes, and the watching thread has looked and decided before this returns (when nothing is
        to fire: a limit it passes raises in the main thread here)."""
        self.move(seconds)
        assert self.looked.wait(WAIT_S), "the watching thread did not look at the clock"
        with self.watchdog._cond:  # it holds the lock from its look to its wait
            pass


class Exits:
    """The watchdog module's ``os`` and ``faulthandler`` while a test runs: the last resort's exit and its
    deadline are recorded; the exit ends the watching thread of :attr:`watchdog` (as the process's exit
    would, without ending the test's process)."""

    def __init__(self) -> None:
        self.codes: list[int] = []
        self.deadlines: list[tuple[tuple, dict]] = []
        self.done = threading.Event()
        self.watchdog: Watchdog | None = None

    def _exit(self, code: int) -> None:
        self.codes.append(code)
        if self.watchdog is not None:
            self.watchdog._stop = True  # (under its lock: _give_up runs holding it) its loop ends
        self.done.set()

    def dump_traceback_later(self, *args: object, **kwargs: object) -> None:
        self.deadlines.append((args, kwargs))


@pytest.fixture
def exits(monkeypatch: pytest.MonkeyPatch) -> Exits:
    fake = Exits()
    monkeypatch.setattr(module, "os", types.SimpleNamespace(_exit=fake._exit))
    monkeypatch.setattr(module, "faulthandler", types.SimpleNamespace(dump_traceback_later=fake.dump_traceback_later))
    return fake


def _clocked(
    monkeypatch: pytest.MonkeyPatch,
    trial_timeout: float | None,
    stall_timeout: float | None,
    grace: float = 600,
    exits: Exits | None = None,
) -> tuple[Watchdog, Interrupts, Clock]:
    """A watchdog on a :class:`Clock` (whose last resort ends its thread, given ``exits``)."""
    interrupts = Interrupts()
    watchdog = Watchdog(trial_timeout, stall_timeout, interrupts, grace=grace)
    clock = Clock(watchdog)
    monkeypatch.setattr(module, "time", clock)
    if exits is not None:
        exits.watchdog = watchdog
    return watchdog, interrupts, clock


def _interrupted() -> None:
    """The training blocks until the watchdog's error arrives (within a bound, so that a broken watchdog fails).

    Blocked in short waits: a signal that lands after a wait released the GIL but before it blocks does not
    end that wait (its handler runs when the wait returns)."""
    deadline = time.monotonic() + WAIT_S  # this module's time: the real one
    while time.monotonic() < deadline:
        threading.Event().wait(0.05)
    raise AssertionError(f"no TrialTimeout within {WAIT_S} s")


def test_each_epoch_starts_the_stall_clock_again(monkeypatch: pytest.MonkeyPatch, exits: Exits) -> None:
    """stall_timeout 30 s: an epoch at 25 s, nothing at 40 s (15 s since it); at 56 s it fires, naming the
    epoch."""
    watchdog, interrupts, clock = _clocked(monkeypatch, None, 30)
    passed: list[float] = []
    stalled = pytest.raises(TrialTimeout, match=r"^no progress: no epoch reported for 30 s after epoch 1 \(study")
    with watchdog.installed(), stalled, watchdog.watching(_never), interrupts.training():
        clock.advance(25)
        watchdog.progress(1)
        clock.advance(15)
        passed.append(clock.now - 1000)
        clock.move(16)
        _interrupted()
    assert passed == [40] and clock.now == 1056 and not exits.codes


def test_a_stall_before_the_first_epoch_says_so(monkeypatch: pytest.MonkeyPatch, exits: Exits) -> None:
    watchdog, interrupts, clock = _clocked(monkeypatch, None, 30)
    stalled = pytest.raises(TrialTimeout, match=r"no epoch reported for 30 s since its training started")
    with watchdog.installed(), stalled, watchdog.watching(_never), interrupts.training():
        clock.advance(29)
        clock.move(1)
        _interrupted()


def test_the_trial_timeout_counts_from_the_start_whatever_the_epochs(
    monkeypatch: pytest.MonkeyPatch, exits: Exits
) -> None:
    """trial_timeout 65 s: epochs (every 20 s, under the 25 s stall limit) do not restart it."""
    watchdog, interrupts, clock = _clocked(monkeypatch, 65, 25)
    passed: list[float] = []
    timed_out = pytest.raises(TrialTimeout, match=r"^timed out: still training after 65 s \(study.trial_timeout\)$")
    with watchdog.installed(), timed_out, watchdog.watching(_never), interrupts.training():
        for epoch in range(3):
            clock.advance(20)
            watchdog.progress(epoch)
        passed.append(clock.now - 1000)  # 60 s: not there yet
        clock.move(5)
        _interrupted()
    assert passed == [60] and not exits.codes


def test_each_trial_gets_its_own_clocks(monkeypatch: pytest.MonkeyPatch, exits: Exits) -> None:
    """The time a trial trained and its epochs do not carry over into the next trial's watch."""
    watchdog, interrupts, clock = _clocked(monkeypatch, 30, None)
    with watchdog.installed():
        with watchdog.watching(_never), interrupts.training():
            clock.advance(29)
        with watchdog.watching(_never), interrupts.training():
            clock.advance(29)  # 58 s since the first trial started
        with pytest.raises(TrialTimeout), watchdog.watching(_never), interrupts.training():
            clock.advance(29)
            clock.move(2)
            _interrupted()
    assert clock.now == 1089 and not exits.codes


def test_a_training_that_does_not_stop_is_given_up_on_after_the_grace_period(
    monkeypatch: pytest.MonkeyPatch, exits: Exits
) -> None:
    """The error swallowed, the training goes on: ``grace`` seconds after the limit the thread ends the trial
    (``abandon(why)``) and exits the process with EXIT_RUNTIME, a deadline set for the writes first."""
    watchdog, interrupts, clock = _clocked(monkeypatch, 10, None, grace=5, exits=exits)
    given_up: list[str] = []
    with watchdog.installed(), watchdog.watching(given_up.append), interrupts.training():
        with pytest.raises(TrialTimeout):  # swallowed
            clock.move(11)
            _interrupted()
        clock.advance(0.5)  # raised again once a second at most
        with pytest.raises(TrialTimeout):  # 4 s into the grace period: raised again, not given up on yet
            clock.move(3.5)
            _interrupted()
        assert not given_up and not exits.codes
        clock.move(1)
        assert exits.done.wait(WAIT_S)
    assert given_up == [
        "timed out: still training after 10 s (study.trial_timeout); "
        "the training did not stop within 5 s (study.grace_period)"
    ]
    assert exits.codes == [EXIT_RUNTIME]
    assert exits.deadlines == [((ABANDON_S,), {"exit": True, "file": sys.__stderr__})]


def test_a_database_write_holds_off_the_last_resort(monkeypatch: pytest.MonkeyPatch, exits: Exits) -> None:
    """Past the grace period inside a shielded write (the storage's retries bound it): no give-up; the error
    is raised when the write ends."""
    watchdog, interrupts, clock = _clocked(monkeypatch, 10, None, grace=5, exits=exits)
    timed_out = pytest.raises(TrialTimeout, match="timed out")
    with watchdog.installed():
        try:
            with timed_out, watchdog.watching(_never), interrupts.training():
                with interrupts.shielded():
                    clock.advance(11)  # fires: deferred
                    clock.advance(100)  # far past the grace period, still in the write
                    assert not exits.codes
                    # From the write's end to the watch's end the training is interruptible again: the
                    # thread, looking every 50 ms there, may not look in between (it would give up).
                    watchdog._cond.acquire()
                raise AssertionError("not raised after the write")
        finally:
            watchdog._cond.release()
    assert not exits.codes


def test_off_the_main_thread_only_the_last_resort_is_left(monkeypatch: pytest.MonkeyPatch, exits: Exits) -> None:
    """Installed from another thread no signal handler can be set: at the limit nothing is raised; after the
    grace period the trial is given up on."""
    watchdog, interrupts, clock = _clocked(monkeypatch, 10, None, grace=5, exits=exits)
    given_up: list[str] = []
    handler = signal.getsignal(SIGNAL)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with watchdog.installed(), watchdog.watching(given_up.append), interrupts.training():
                assert signal.getsignal(SIGNAL) is handler
                clock.advance(11)
                clock.move(5)
                assert exits.done.wait(WAIT_S)
        except BaseException as e:
            errors.append(e)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert errors == [] and len(given_up) == 1 and exits.codes == [EXIT_RUNTIME]


def test_a_give_up_whose_writes_fail_still_exits(
    monkeypatch: pytest.MonkeyPatch, exits: Exits, capsys: pytest.CaptureFixture[str]
) -> None:
    """abandon() raising (the storage gone too): one warning line, and the process exits all the same."""
    watchdog = Watchdog(10, None, Interrupts(), grace=5)

    def fails(why: str) -> None:
        raise RuntimeError("database is locked")

    watchdog._give_up(_Watch(fails, 0.0, 0.0, reason="timed out: x"))
    assert exits.codes == [EXIT_RUNTIME]
    err = capsys.readouterr().err
    assert err == "warning: could not record the end of the hung trial (RuntimeError: database is locked)\n"


# --- the parts, one at a time ---------------------------------------------------------------------------


STALL = "no progress: no epoch reported for {} (study.stall_timeout)"


@pytest.mark.parametrize(
    ("trial_timeout", "stall_timeout", "epoch", "due", "why"),
    [
        (None, None, None, float("inf"), ""),
        (60, None, 3, 1060, "timed out: still training after 60 s (study.trial_timeout)"),
        (None, 2.5, None, 1022.5, STALL.format("2.5 s since its training started")),
        (None, 30, 4, 1050, STALL.format("30 s after epoch 4")),
        (None, 30, 0, 1050, STALL.format("30 s after epoch 0")),  # epoch 0 is an epoch
        (60, 30, 4, 1050, STALL.format("30 s after epoch 4")),  # the stall comes first
        (40, 30, 4, 1040, "timed out: still training after 40 s (study.trial_timeout)"),  # the time limit first
    ],
)
def test_the_next_limit_and_its_reason(
    trial_timeout: float | None, stall_timeout: float | None, epoch: int | None, due: float, why: str
) -> None:
    """A training that started at 1000 s and last reported (its epoch, or its start) at 1020 s."""
    watchdog = Watchdog(trial_timeout, stall_timeout, Interrupts(), grace=5)
    found_due, found_why = watchdog._due(_Watch(_never, start=1000.0, last=1020.0, epoch=epoch))
    assert (found_due, found_why) == (due, why)


@pytest.mark.parametrize(("trial_timeout", "stall_timeout"), [(None, None), (1, None), (None, 1), (1, 1)])
def test_enabled_with_either_limit(trial_timeout: float | None, stall_timeout: float | None) -> None:
    watchdog = Watchdog(trial_timeout, stall_timeout, Interrupts(), grace=5)
    assert watchdog.enabled is (trial_timeout is not None or stall_timeout is not None)


def _watchdog_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "sweep-watchdog"]


def test_without_limits_nothing_runs_and_nothing_is_watched() -> None:
    """No limit: no thread, no signal handler, no watch (progress is a no-op)."""
    watchdog = Watchdog(None, None, Interrupts(), grace=5)
    handler = signal.getsignal(SIGNAL)
    with watchdog.installed() as installed, watchdog.watching(_never):
        assert installed is watchdog
        assert not _watchdog_threads() and signal.getsignal(SIGNAL) is handler
        assert watchdog._watch is None
        watchdog.progress(1)
    assert watchdog._watch is None


def test_installed_runs_one_thread_and_handles_its_signal_in_the_block(monkeypatch: pytest.MonkeyPatch) -> None:
    """Inside: the handler is the watchdog's and its thread runs; after: the handler before it is back
    and the thread is gone (also when the block raises)."""
    watchdog, _, _ = _clocked(monkeypatch, 10, None)

    def previous(signum: int, frame: object) -> None:
        raise AssertionError("not the watchdog's")

    old = signal.signal(SIGNAL, previous)
    try:
        with pytest.raises(KeyError), watchdog.installed():
            assert signal.getsignal(SIGNAL) == watchdog._handle and len(_watchdog_threads()) == 1
            raise KeyError("the study ends with an error")
        assert signal.getsignal(SIGNAL) is previous and not _watchdog_threads()
    finally:
        signal.signal(SIGNAL, old)


def test_watching_starts_a_watch_and_forgets_it_and_its_error_after(monkeypatch: pytest.MonkeyPatch) -> None:
    """The watch starts at the block's start; progress moves its stall clock and epoch; after the block no
    watch is left, nor an error deferred for a write (the next trial does not get this one's)."""
    watchdog, interrupts, clock = _clocked(monkeypatch, 10, 5)
    with watchdog.watching(_never):
        watch = watchdog._watch
        assert watch is not None and (watch.start, watch.last, watch.epoch) == (1000, 1000, None)
        clock.now = 1003.0
        watchdog.progress(7)
        assert (watch.start, watch.last, watch.epoch) == (1000, 1003, 7)
        interrupts.defer(TrialTimeout("pending"))
    assert watchdog._watch is None
    with interrupts.training(), interrupts.shielded():
        pass  # nothing deferred is raised
    watchdog.progress(8)  # no watch: nothing
    assert watch.epoch == 7


def test_the_handler_raises_in_training_defers_in_a_write_and_ignores_a_late_signal() -> None:
    interrupts = Interrupts()
    watchdog = Watchdog(10, None, interrupts, grace=5)
    watchdog._handle(SIGNAL, None)  # nothing pending (the training ended meanwhile): nothing

    watchdog._pending = TrialTimeout("in training")
    with pytest.raises(TrialTimeout, match="in training"), interrupts.training():
        watchdog._handle(SIGNAL, None)
    assert watchdog._pending is None

    watchdog._pending = TrialTimeout("in a write")
    with pytest.raises(TrialTimeout, match="in a write"), interrupts.training():
        with interrupts.shielded():
            watchdog._handle(SIGNAL, None)  # not here
            reached_the_end_of_the_write = True
        raise AssertionError("not raised after the write")
    assert reached_the_end_of_the_write and watchdog._pending is None


def test_main_thread_stack_is_the_main_thread_s_from_any_thread() -> None:
    """Where the main thread is, as traceback lines, also when asked from the watching thread."""
    found: list[str] = []

    def _the_helper_asks() -> None:
        found.append(main_thread_stack())

    def _main_thread_waits_here() -> None:
        helper = threading.Thread(target=_the_helper_asks)
        helper.start()
        helper.join()

    _main_thread_waits_here()
    assert "in _main_thread_waits_here" in found[0] and "in test_main_thread_stack" in found[0]
    assert "_the_helper_asks" not in found[0]  # not the asking thread's own stack


# --- abandon(): a hung trial ended as a dead process's is ---------------------------------------------


@pytest.fixture
def stored(tmp_path: Path) -> Iterator[tuple[optuna.storages.RDBStorage, optuna.Study, list[tuple[int, str]]]]:
    """A SQLite study with two RUNNING trials, whose stale-trial callback records what it is handed."""
    handed: list[tuple[int, str]] = []

    def callback(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        handed.append((trial.number, trial.state.name))
        with study_lock(rdb.engine, rdb.url, study.study_name, wait=0) as held:  # another process's try
            assert not held.taken, "failed and re-queued outside the claim lock"

    beat = (60, 120, callback)
    with warnings.catch_warnings():  # heartbeats are "experimental", and "to be used with Study.optimize"
        warnings.simplefilter("ignore")
        rdb = open_storage(f"sqlite:///{tmp_path / 'o.db'}", beat)
        study = optuna.create_study(study_name="h", storage=rdb)
        study.ask()
        study.ask()
    yield rdb, study, handed
    rdb.engine.dispose()


def _tid(rdb: optuna.storages.RDBStorage, study: optuna.Study, number: int) -> int:
    return rdb.get_trial_id_from_study_id_trial_number(rdb.get_study_id_from_name(study.study_name), number)


def test_abandon_fails_each_trial_with_the_reason_and_hands_it_on(
    stored: tuple[optuna.storages.RDBStorage, optuna.Study, list[tuple[int, str]]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Each trial: the reason and the main thread's stack in its run's error.txt, failed with the reason,
    handed to the stale-trial callback (re-queue, run closed) as FAIL; then one line on stderr."""
    rdb, study, handed = stored
    logged: list[tuple[int, str, str]] = []

    def log_text(number: int) -> Callable[[str, str], None]:
        return lambda text, name: logged.append((number, text, name))

    trials = [(n, _tid(rdb, study, n), log_text(n)) for n in (0, 1)]
    abandon(rdb, study, trials, "timed out: still training after 5 s (study.trial_timeout)")
    assert [t.state.name for t in study.get_trials()] == ["FAIL", "FAIL"]
    assert [t.user_attrs[Attr.FAIL] for t in study.get_trials()] == [
        "timed out: still training after 5 s (study.trial_timeout)"
    ] * 2
    assert handed == [(0, "FAIL"), (1, "FAIL")]
    assert [(n, name) for n, _, name in logged] == [(0, "error.txt"), (1, "error.txt")]
    text = logged[0][1]
    assert text.startswith("timed out: still training after 5 s (study.trial_timeout)\n\nThe main thread was here:\n")
    assert "in test_abandon_fails_each_trial_with_the_reason_and_hands_it_on" in text
    assert capsys.readouterr().err == (
        "error: trial 0, 1: timed out: still training after 5 s (study.trial_timeout): this process exits, as a "
        "killed one would; the trial is failed and re-queued for the study's other processes (or the next run)\n"
    )


def test_abandon_without_a_storage_or_a_trial_id_only_logs(
    stored: tuple[optuna.storages.RDBStorage, optuna.Study, list[tuple[int, str]]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A trial whose id is unknown, or no storage at all: its run gets error.txt, the study is not written."""
    rdb, study, handed = stored
    logged: list[str] = []
    abandon(rdb, study, [(0, None, lambda text, name: logged.append(name))], "why")
    abandon(None, study, [(1, _tid(rdb, study, 1), lambda text, name: logged.append(name))], "why")
    assert logged == ["error.txt", "error.txt"] and handed == []
    assert [t.state.name for t in study.get_trials()] == ["RUNNING", "RUNNING"]
    assert capsys.readouterr().err.splitlines()[1].startswith("error: trial 1: why: this process exits")
