"""``study.trial_timeout`` and ``study.stall_timeout``: a trial whose training hangs cannot hold the study.

A trial hung in user code keeps its process's heartbeat thread beating, so every process would see it
running for ever. While a trial trains (:meth:`Watchdog.watching`), a thread of this process watches two
clocks: the time since its training started (``trial_timeout``) and the time since it last reported an
epoch (``stall_timeout``, :meth:`Watchdog.progress`, called by the trial's reporter). When one passes its
limit:

1. the thread makes the main thread raise :class:`TrialTimeout` with the reason (a signal aimed at that
   thread, so a blocking call there — a lock, a queue, a sleep — returns with it), at once inside the
   training and otherwise when the database write under way ends, as an interrupt is
   (:mod:`sweep.core.interrupts`), and again every second while the training goes on (user code, or Python in
   a finalizer, swallowed it). The trial fails with the reason (``fail_reason``, MLflow FAILED) and the
   process goes on with its next trial.
2. If the training still has not ended ``grace`` seconds later (``study.grace_period``: stuck in C code that
   never returns to Python, or user code that swallowed the error), the thread ends the trial itself as a
   dead process's trial is ended — failed with the reason, re-queued (``study.max_retry``), its run closed
   FAILED (:func:`abandon`) — says so in one line and exits the process at once, as a killed one would:
   its heartbeats stop, and the study goes on in the other processes.

A hang that holds the GIL (C code that never releases it) stops every Python thread of the process, its
heartbeat's included: the other processes then fail and re-queue the trial once its heartbeat is older than
``study.grace_period``, as for a killed process; that process itself stays until it is killed.
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any

import optuna

from sweep.core.errors import EXIT_RUNTIME, to_stderr
from sweep.core.interrupts import Interrupts, RaisedInto
from sweep.core.records import Attr
from sweep.storage.claimlock import study_lock

# Ignored by default: one that arrives after the handler is gone (a race at the end of a study) does nothing.
SIGNAL = signal.SIGURG
ABANDON_S = 60  # the writes of abandon() get this long before the process exits anyway (faulthandler)


class TrialTimeout(RaisedInto):
    """A trial trained longer than ``study.trial_timeout``, or reported no epoch for ``study.stall_timeout``."""


@dataclass
class _Watch:
    """One watched training: when it started, its last progress, and once fired, why and when."""

    abandon: Callable[[str], None]
    start: float
    last: float
    epoch: int | None = None
    reason: str | None = None
    fired: float = 0.0
    signalled: float = 0.0


class Watchdog:
    """This process's watch over the training of its trials (see the module's docstring).

    Args:
        trial_timeout: Seconds a trial's training may take (``None``: no limit).
        stall_timeout: Seconds a trial may go without reporting an epoch (``None``: no limit).
        interrupts: The process's interrupt state (where the main thread is: training, a database write).
        grace: Seconds the training gets to stop once interrupted before the process gives up on it.
    """

    def __init__(
        self, trial_timeout: float | None, stall_timeout: float | None, interrupts: Interrupts, grace: float
    ) -> None:
        self.trial_timeout, self.stall_timeout = trial_timeout, stall_timeout
        self.interrupts, self.grace = interrupts, grace
        self._cond = threading.Condition()
        self._watch: _Watch | None = None
        self._pending: TrialTimeout | None = None  # for the main thread's signal handler
        self._stop = False
        self._signals = False  # the handler is installed: the soft stop (1.) is possible

    @property
    def enabled(self) -> bool:
        return self.trial_timeout is not None or self.stall_timeout is not None

    @contextlib.contextmanager
    def installed(self) -> Iterator[Watchdog]:
        """Run the watching thread, and handle its signal in the main thread, within the block (off the main
        thread no signal can be handled: only the last resort, 2., is left)."""
        if not self.enabled:
            yield self
            return
        main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(SIGNAL, self._handle) if main else None
        self._signals, self._stop = main, False
        thread = threading.Thread(target=self._run, name="sweep-watchdog", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            with self._cond:
                self._stop = True
                self._cond.notify_all()
            thread.join()
            if main:
                signal.signal(SIGNAL, previous)
            self._signals = False

    @contextlib.contextmanager
    def watching(self, abandon: Callable[[str], None]) -> Iterator[None]:
        """Watch the training in the block (enter it before :meth:`Interrupts.training`, so that arming and
        disarming are never interrupted). ``abandon(why)``: the last resort, before the process exits."""
        if not self.enabled:
            yield
            return
        now = time.monotonic()
        with self._cond:
            self._watch = _Watch(abandon, now, now)
            self._cond.notify_all()
        try:
            yield
        finally:
            with self._cond:
                self._watch = self._pending = None
            self.interrupts.defer(None)

    def progress(self, epoch: int) -> None:
        """The watched training reported ``epoch``: its stall clock starts again."""
        watch = self._watch
        if watch is not None:
            watch.last, watch.epoch = time.monotonic(), epoch

    def _due(self, watch: _Watch) -> tuple[float, str]:
        """When the watched training passes a limit next, and the reason it will then fail with."""
        due = [(float("inf"), "")]
        if self.trial_timeout is not None:
            why = f"timed out: still training after {self.trial_timeout:g} s (study.trial_timeout)"
            due.append((watch.start + self.trial_timeout, why))
        if self.stall_timeout is not None:
            since = "since its training started" if watch.epoch is None else f"after epoch {watch.epoch}"
            why = f"no progress: no epoch reported for {self.stall_timeout:g} s {since} (study.stall_timeout)"
            due.append((watch.last + self.stall_timeout, why))
        return min(due)

    def _run(self) -> None:
        with self._cond:
            while not self._stop:
                watch, now = self._watch, time.monotonic()
                if watch is None:
                    self._cond.wait()
                elif watch.reason is None:
                    due, why = self._due(watch)
                    if now < due:
                        self._cond.wait(min(due - now, 3600.0))
                        continue
                    watch.reason, watch.fired = why, now
                    self._signal(watch, now)
                elif now < watch.fired + self.grace or (self._signals and not self.interrupts.interruptible):
                    # Not yet; or the main thread is in a database write (the storage's retries bound it).
                    # Once a second, the error again if it was raised but the training goes on (swallowed by
                    # user code, or by Python in a finalizer).
                    if self._pending is None and self.interrupts.interruptible and now - watch.signalled >= 1:
                        self._signal(watch, now)
                    self._cond.wait(max(0.05, min(1.0, watch.fired + self.grace - now)))
                else:  # given up on (2.): under the lock, so the main thread cannot disarm meanwhile
                    self._give_up(watch)

    def _signal(self, watch: _Watch, now: float) -> None:
        """Have the main thread raise the watch's :class:`TrialTimeout` (1.)."""
        self._pending, watch.signalled = TrialTimeout(watch.reason), now
        if self._signals:
            signal.pthread_kill(threading.main_thread().ident, SIGNAL)  # type: ignore[arg-type]

    def _give_up(self, watch: _Watch) -> None:
        """The last resort (2.): end the trial as a dead process's is ended, then exit at once."""
        why = f"{watch.reason}; the training did not stop within {self.grace:g} s (study.grace_period)"
        stderr = sys.__stderr__
        with contextlib.suppress(Exception):  # the writes below may hang too: exit after ABANDON_S anyway
            faulthandler.dump_traceback_later(ABANDON_S, exit=True, file=stderr)  # type: ignore[arg-type]
        try:
            watch.abandon(why)
        except Exception as e:
            to_stderr(f"warning: could not record the end of the hung trial ({type(e).__name__}: {e})")
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(EXIT_RUNTIME)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        error, self._pending = self._pending, None
        if error is None:
            return  # the training ended meanwhile
        if self.interrupts.interruptible:
            raise error
        self.interrupts.defer(error)  # raised when the database write under way ends


def main_thread_stack() -> str:
    """Where the main thread is now (what hangs), as a traceback's lines."""
    frame = sys._current_frames().get(threading.main_thread().ident)  # type: ignore[arg-type]
    return "".join(traceback.format_stack(frame)) if frame is not None else "(the main thread's stack is unknown)\n"


def abandon(
    storage: optuna.storages.RDBStorage | None,
    study: optuna.Study,
    trials: Sequence[tuple[int, int | None, Callable[[str, str], Any]]],
    why: str,
) -> None:
    """End ``trials`` (number, storage id, the run's ``log_text``) whose training hangs, from the watchdog's
    thread: each is failed with ``why`` (the main thread's stack as its run's ``error.txt``), then handed
    to the study's stale-trial callback (:class:`sweep.trials.recovery.DeadTrials`: re-queued, its run closed
    FAILED), as a dead process's trial is; then one line says so."""
    stack = f"{why}\n\nThe main thread was here:\n{main_thread_stack()}"
    callback = storage.get_heartbeat_stale_trial_callback() if storage is not None else None
    for _number, _tid, log_text in trials:
        log_text(stack, "error.txt")
    ended = [tid for _number, tid, _log in trials if tid is not None] if storage is not None else []
    if storage is not None and ended:
        # Failed and re-queued under the claim lock, as a claim fails a dead process's trials: a claim
        # between the two would fill the freed place with a fresh trial and leave the retry WAITING.
        grace = storage.grace_period or 0
        with study_lock(storage.engine, storage.url, study.study_name, wait=grace):
            for tid in ended:
                storage.set_trial_user_attr(tid, Attr.FAIL, why)
                storage.set_trial_state_values(tid, optuna.trial.TrialState.FAIL)
                if callback is not None:
                    callback(study, storage.get_trial(tid))
    numbers = ", ".join(str(number) for number, _, _ in trials)
    to_stderr(
        f"error: trial {numbers}: {why}: this process exits, as a killed one would; the trial is failed and "
        "re-queued for the study's other processes (or the next run)"
    )
