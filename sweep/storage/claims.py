"""Deciding, across every process on a study's storage, whether one more trial should start.

``n_trials`` counts finished (complete or pruned) trials. Each process, before it asks Optuna for a
trial, takes a lock that every process on the same storage shares (a PostgreSQL advisory lock, a
MySQL/MariaDB named lock, a file lock beside a SQLite file), looks at the study and decides:

- the study has ``n_trials`` finished: stop;
- finished + trials that live processes are running reach ``n_trials``: wait (one of them may still fail,
  and then a live process tops up);
- otherwise: start one more (a re-queued or enqueued trial first).

The lock (:mod:`sweep.storage.claimlock`) is held from the decision until the new trial's row exists (the
storage says so, :meth:`Claims.created`), so two processes never both take the last place: a study ends
with exactly ``n_trials`` finished however many machines run it, whichever of them dies and whenever.

A holder that stopped (SIGSTOP, a frozen VM) holds the others up for ``study.grace_period`` at most:
then they claim without the lock. So every claim, once its trial exists, counts again (:meth:`Claims.release`):
the finished trials and the RUNNING ones claimed before it (a lower number) already make ``n_trials``:
this one is surplus and fails without training. Of several claimed at once, the lowest always trains.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna

from sweep.core.errors import to_stderr
from sweep.core.faultpoints import pause
from sweep.core.interrupts import Interrupts
from sweep.storage.claimlock import SLICE, Held, run_after_release, study_lock
from sweep.storage.storage import FINISHED, fail_stale_trials

__all__ = ["Census", "Claims", "Held", "census", "study_lock"]

RUNNING = optuna.trial.TrialState.RUNNING
WAITING = optuna.trial.TrialState.WAITING


@dataclass(frozen=True)
class Census:
    """A study's trials as the decision sees them."""

    finished: int
    running: int  # RUNNING and owned by a live process (fresh heartbeat, or just started)
    waiting: int  # re-queued or enqueued, not yet taken

    def decide(self, target: int) -> str:
        """``"stop"``, ``"run"`` or ``"wait"`` (see the module's docstring)."""
        if self.finished >= target:
            return "stop"
        if self.finished + self.running >= target:
            return "wait"
        return "run"  # Optuna's ask takes a waiting (re-queued or enqueued) trial first


def census(study: optuna.Study, live: set[int] | None = None) -> Census:
    """Count the study's trials; ``live`` = numbers of the RUNNING trials a live process owns (default:
    every RUNNING trial)."""
    trials = study.get_trials(deepcopy=False)
    running = [t for t in trials if t.state == RUNNING]
    return Census(
        finished=sum(t.state in FINISHED for t in trials),
        running=len(running) if live is None else sum(t.number in live for t in running),
        waiting=sum(t.state == WAITING for t in trials),
    )


class Claims:
    """This process's claims: whether to start its first trial, and after each trial (as an Optuna
    callback) whether to start another, holding :func:`study_lock` from the decision until the trial
    exists (the storage calls :meth:`created`; without that hook, :meth:`release` lets it go), then
    counting again (the objective calls :meth:`release` with the trial's number first thing).

    A process stops when the study has ``target`` finished trials, when it is interrupted, or when
    ``target`` of its own trials failed (every trial failing: replacing them would never end).
    """

    def __init__(
        self,
        study: optuna.Study,
        engine: Any,
        url: str,
        target: int,
        interval: float,
        interrupts: Interrupts,
        say: Callable[[str], None] | None = None,
        halt: Callable[[], bool] = lambda: False,
        retry: Callable[[str, Callable[[], Any]], Any] = lambda _name, work: work(),
        grace: float | None = None,
        storage: Any = None,
    ) -> None:
        self.study, self.engine, self.url, self.target = study, engine, url, target
        self.interval, self.interrupts, self.say = interval, interrupts, say
        self.halt = halt  # a reason of the caller's to start no more trials (sweep.tracking.artifacts.ArtifactWatch)
        self.retry = retry  # database work retried through outages (sweep.storage.resilient.ResilientStorage.retrying)
        self.grace = grace  # how long a claim waits for the lock before it goes on without it (None: for ever)
        self.ran = self.failed = 0
        self.gave_up = False  # stopped because target trials of this run failed
        self.surplus: set[int] = set()  # trials this process claimed that the recount found not needed
        self._lock: Held | None = None  # the lock of the current claim, until let go
        self._claimed: int | None = None  # the storage id of the trial the current claim created
        self._stalled = False  # the last claim gave up waiting: the holder seems stopped
        self._held = contextlib.ExitStack()
        self.storage = storage  # sweep.storage.storage.SealedStorage: says when the trial exists (created)
        if storage is not None:
            storage.on_running = self.created

    def claim(self, wait: bool = True) -> bool:
        """Decide under the lock; ``True``: start a trial (the lock stays held until the trial exists).

        Args:
            wait: When trials running elsewhere may finish the study, wait for them; ``False``: say no at
                once (a group of trials in this process asks for its next member while its first ones run).
        """
        said, pause_s = False, 0.1
        try:
            while not self.interrupts.requested:
                now, decision = self.retry("claim", self._decide)
                if decision == "run":
                    return True
                self.release()
                if decision == "stop" or not wait:
                    return False
                if not said and self.say is not None:
                    said = True
                    self.say(
                        f"{now.running} trial(s) running elsewhere may finish the study; waiting (a trial whose "
                        "process died is re-queued once its heartbeat is older than study.grace_period)"
                    )
                # The last trials elsewhere often end within a second or two: look again soon, then back off
                # to once a second (each look takes the study's lock and counts its trials).
                time.sleep(pause_s)
                pause_s = min(pause_s * 1.5, self.interval, 1.0)
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM while waiting for the lock (sweep.storage.claimlock)
            self.release()
            if not self.interrupts.requested:
                raise
        return False

    def _decide(self) -> tuple[Census, str]:
        """Take the lock (or give up waiting for it), then count: the lock stays held when the answer is
        "run" (see :meth:`claim`)."""
        # 1. A holder already found stalled: wait a slice, not the whole grace period again.
        wait = self.grace if self.grace is None or not self._stalled else min(self.grace, SLICE)
        lock = study_lock(self.engine, self.url, self.study.study_name, wait, self.interrupts, run_after=False)
        self._lock, self._claimed = self._held.enter_context(lock), None
        try:
            self._stalled = self._said(self._lock)
            # 2. Dead processes' trials failed and re-queued under the lock: a process counting between the
            # two (failed, its retry not yet queued) would fill the place with a fresh trial and leave the
            # retry WAITING in a full study. Their MLflow runs are closed once the lock is let go.
            fail_stale_trials(self.study)
            now = census(self.study)
            decision = now.decide(self.target)
            if decision == "run":
                self._stale_checked(True)  # Study.optimize's look before its ask would only repeat 2.
                pause("claimed")  # decided, the lock held, no trial yet (sweep.core.faultpoints)
            return now, decision
        except BaseException:
            self.release()
            raise

    def _said(self, lock: Held) -> bool:
        """Whether the lock was given up on; said in one line, once per stalled holder."""
        if lock.taken:
            return False
        if not self._stalled:
            who = f" by {lock.holder}" if lock.holder else ""
            to_stderr(
                f"note: study {self.study.study_name!r}: the claim lock has been held{who} for over {self.grace:g} s "
                "(study.grace_period), by a stopped or frozen process; claiming without it (a trial claimed "
                "beside another one runs only if the lower-numbered trials leave it a place)"
            )
        return True

    def created(self, trial_id: int) -> None:
        """The storage's word that a trial of this process is RUNNING (created, or taken from the queue):
        the current claim's trial exists, so its lock is let go at once."""
        if self._lock is not None and self._claimed is None:
            self._claimed = trial_id
            self._lock = None
            self._held.close()
            self._stale_checked(False)

    def _stale_checked(self, checked: bool) -> None:
        if self.storage is not None:
            self.storage.stale_checked = checked

    def release(self, number: int | None = None) -> bool:
        """Let other processes claim (if the trial's creation did not already), then do what waited for
        the lock to go (closing dead trials' MLflow runs, :func:`sweep.storage.claimlock.after_release`).

        Args:
            number: The claimed trial, now that it exists: count again.

        Returns:
            Whether trial ``number`` is wanted: ``False`` when the finished trials and the RUNNING ones
            with a lower number already make ``target`` (it was claimed beside them: the lock given up on
            a stopped holder, or lost in a storage blip) — the caller fails it rather than train one too
            many. The same rule in every process, so of trials claimed at once the lowest trains.
        """
        claimed, self._claimed, self._lock = self._claimed, None, None
        self._held.close()
        self._stale_checked(False)
        run_after_release()
        if number is None:
            return True
        if self.retry("recount", lambda: self._wanted(number, claimed)):
            return True
        self.surplus.add(number)
        return False

    def _wanted(self, number: int, claimed: int | None) -> bool:
        trials = self.study.get_trials(deepcopy=False, states=(*FINISHED, RUNNING))
        numbered = [t for t in trials if t.number == number]  # two, when PostgreSQL numbered two at once
        mine = next((t for t in numbered if t._trial_id == claimed), numbered[0] if numbered else None)
        if mine is None or mine.state != RUNNING:
            return True  # ended by another process meanwhile: sweep.storage.ownership deals with it
        ahead = sum(t.state in FINISHED or (t.number, t._trial_id) < (number, mine._trial_id) for t in trials)
        return ahead < self.target

    def count(self, trial: optuna.trial.FrozenTrial, ended_elsewhere: bool = False) -> bool:
        """Count a trial this process ran; ``False`` when this process should start no more (every one
        of ``target`` trials failed, or the caller's ``halt`` said so). ``ended_elsewhere``: another
        process failed it as stale during an outage (it is re-queued): not a failure of its config. A
        surplus trial (see :meth:`release`) is not counted at all."""
        if trial.number in self.surplus:
            self.surplus.discard(trial.number)
        else:
            self.ran += 1
            self.failed += trial.state == optuna.trial.TrialState.FAIL and not ended_elsewhere
        if self.failed >= self.target:
            self.gave_up = True
        return not (self.gave_up or self.halt())

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if not self.count(trial) or not self.claim():
            study.stop()
