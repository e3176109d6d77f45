"""Deciding, across every process on a study's storage, whether one more trial should start.

``n_trials`` counts finished (complete or pruned) trials. Each process, before it asks Optuna for a
trial, takes a lock that every process on the same storage shares (a PostgreSQL advisory lock, a
MySQL/MariaDB named lock, a file lock beside a SQLite file), looks at the study and decides:

- the study has ``n_trials`` finished: stop;
- finished + trials that live processes are running reach ``n_trials``: wait (one of them may still fail,
  and then a live process tops up);
- otherwise: start one more (a re-queued or enqueued trial first).

The lock is held from the decision until the new trial exists, so two processes never both take the
last place: a study ends with exactly ``n_trials`` finished however many machines run it, whichever of
them dies and whenever.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from sweep.interrupts import Interrupts
from sweep.storage import FINISHED, fail_stale_trials
from sweep.urls import sqlite_path

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


def _key(study_name: str) -> int:
    """A signed 64-bit advisory-lock key for the study (PostgreSQL's ``pg_advisory_lock(bigint)``)."""
    return int.from_bytes(hashlib.sha256(f"sweep:{study_name}".encode()).digest()[:8], "big", signed=True)


class Held:
    """What :func:`study_lock` says when it lets go: whether the lock was still ours (a server lock dies
    with its connection: a storage blip while it was held let another process claim meanwhile)."""

    kept = True


@contextlib.contextmanager
def study_lock(engine: Any, url: str, study_name: str) -> Iterator[Held]:
    """Hold the lock that serialises trial claims on one study, for every process on ``url``.

    ``engine`` is the storage's SQLAlchemy engine (``RDBStorage.engine``). A lock on a server is tied
    to its connection: a process that dies (or loses its connection) releases it at once; the
    :class:`Held` yielded says, once the lock is let go, whether it was held to the end.
    """
    held = Held()
    path = sqlite_path(url)
    if url.startswith("sqlite"):
        if path is None:  # in memory: one process
            yield held
            return
        import fcntl

        path.parent.mkdir(parents=True, exist_ok=True)
        with open(Path(f"{path}.claim.lock"), "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield held
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        return
    from sqlalchemy import text

    dialect = engine.dialect.name
    with engine.connect() as conn:
        if dialect == "postgresql":
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _key(study_name)})
            release = (text("SELECT pg_advisory_unlock(:k)"), {"k": _key(study_name)})
        elif dialect in ("mysql", "mariadb"):
            name = f"sweep:{hashlib.sha256(study_name.encode()).hexdigest()[:40]}"
            conn.execute(text("SELECT GET_LOCK(:n, -1)"), {"n": name})
            release = (text("SELECT RELEASE_LOCK(:n)"), {"n": name})
        else:  # another database: no shared lock; a study may end a trial or two past n_trials
            yield held
            return
        conn.commit()
        try:
            yield held
        finally:
            try:  # true: it was ours to the end; false, or a dead connection: it was lost meanwhile
                held.kept = bool(conn.execute(*release).scalar())
                conn.commit()
            except Exception:
                held.kept = False


class Claims:
    """This process's claims: whether to start its first trial, and after each trial (as an Optuna
    callback) whether to start another, holding :func:`study_lock` from the decision until the trial
    exists (the objective calls :meth:`release` first thing).

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
    ) -> None:
        self.study, self.engine, self.url, self.target = study, engine, url, target
        self.interval, self.interrupts, self.say = interval, interrupts, say
        self.halt = halt  # a reason of the caller's to start no more trials (sweep.artifacts.ArtifactWatch)
        self.retry = retry  # database work retried through outages (sweep.resilient.ResilientStorage.retrying)
        self.ran = self.failed = 0
        self._lock: Held | None = None  # the lock of the current claim, until released
        self.gave_up = False  # stopped because target trials of this run failed
        self._held = contextlib.ExitStack()

    def claim(self, wait: bool = True) -> bool:
        """Decide under the lock; ``True``: start a trial (the lock stays held until :meth:`release`).

        Args:
            wait: When trials running elsewhere may finish the study, wait for them; ``False``: say no at
                once (a group of trials in this process asks for its next member while its first ones run).
        """
        said, pause = False, 0.1
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
            time.sleep(pause)
            pause = min(pause * 1.5, self.interval, 1.0)
        return False

    def _decide(self) -> tuple[Census, str]:
        """Take the lock, then count: the lock stays held when the answer is "run" (see :meth:`claim`)."""
        self._lock = self._held.enter_context(study_lock(self.engine, self.url, self.study.study_name))
        try:
            fail_stale_trials(self.study)  # dead processes' trials: failed, re-queued
            now = census(self.study)
            return now, now.decide(self.target)
        except BaseException:
            self.release()
            raise

    def release(self, number: int | None = None) -> bool:
        """Let other processes claim (called with its number when the claimed trial exists).

        Returns:
            Whether trial ``number`` is still wanted: ``False`` only when the lock was lost while held
            (a storage blip dropped its connection), another process claimed meanwhile, and the other
            trials finished or running already make ``target`` — the caller fails this one rather than
            train one too many. Only a process that lost its lock asks, so of two racing claims the
            one whose lock held trains.
        """
        lock, self._lock = self._lock, None
        self._held.close()
        if number is None or lock is None or lock.kept:
            return True

        def wanted() -> bool:
            trials = self.study.get_trials(deepcopy=False)
            finished = sum(t.state in FINISHED for t in trials)
            others = sum(t.state == optuna.trial.TrialState.RUNNING and t.number != number for t in trials)
            return finished + others < self.target

        return self.retry("recount", wanted)

    def count(self, trial: optuna.trial.FrozenTrial, ended_elsewhere: bool = False) -> bool:
        """Count a trial this process ran; ``False`` when this process should start no more (every one
        of ``target`` trials failed, or the caller's ``halt`` said so). ``ended_elsewhere``: another
        process failed it as stale during an outage (it is re-queued): not a failure of its config."""
        self.ran += 1
        self.failed += trial.state == optuna.trial.TrialState.FAIL and not ended_elsewhere
        if self.failed >= self.target:
            self.gave_up = True
        return not (self.gave_up or self.halt())

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if not self.count(trial) or not self.claim():
            study.stop()
