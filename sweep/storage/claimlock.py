"""The lock that serialises trial claims on one study, for every process on its storage.

A PostgreSQL advisory lock, a MySQL/MariaDB named lock, or a file lock beside a SQLite file, one per
name (the trials' claims, and others: :mod:`sweep.execution.finishing`). It is taken in short slices, never by
one blocking call, so that:

1. a process waiting for it obeys Ctrl-C or SIGTERM within a slice (:data:`SLICE` s), however long the
   holder keeps it;
2. a holder that stopped (SIGSTOP, Ctrl-Z, a frozen VM, swapped out) holds the others up for at most
   ``wait`` seconds (``study.grace_period``): then :func:`study_lock` says who holds it and lets the
   caller go on without it (:attr:`Held.taken` false; :class:`sweep.storage.claims.Claims` then makes its
   decision safe by a recount once its trial exists).

Work that may be slow and needs no lock (closing a dead trial's MLflow run on a tracking server) is
put off with :func:`after_release` while this process holds the lock, and done once it is let go.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

from sweep.core.faultpoints import pause
from sweep.core.interrupts import Interrupts
from sweep.core.sqlite import private_dir, private_file
from sweep.core.urls import sqlite_path

SLICE = 0.5  # seconds: the longest one try for the lock lasts (1.)
_held_here = 0  # how many claim locks this process holds now
_after: list[Callable[[], None]] = []  # work put off until this process holds none (after_release)


class Held:
    """What :func:`study_lock` says: whether the lock was taken, and when it is let go, whether it was
    still ours (a server lock dies with its connection: a storage blip while it was held let another
    process claim meanwhile)."""

    kept = True  # held to the end (false too when it was never taken)
    taken = True  # false: given up after ``wait`` s; the caller goes on without it
    holder = ""  # who held it when it was given up ("" when unknown)


def after_release(work: Callable[[], None]) -> None:
    """Run ``work`` now, or, while this process holds a claim lock, once it holds none (so slow work
    never holds up the other processes' claims)."""
    if _held_here:
        _after.append(work)
    else:
        work()


def run_after_release() -> None:
    """The work :func:`after_release` put off, now that no claim lock of this process is held."""
    while _after and not _held_here:
        _after.pop(0)()


def _digest(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def _who() -> str:
    return f"pid {os.getpid()} on {socket.gethostname()}"


class _Lock(Protocol):
    def acquire(self, seconds: float) -> bool: ...
    def release(self) -> bool: ...
    def holder(self) -> str: ...


class _FileLock:
    """``flock`` on ``<db>.claim.lock``, polled; the holder writes who it is into the file."""

    def __init__(self, path: Path) -> None:
        private_dir(path.parent)
        private_file(path)  # it names its holder (pid and host): the owner's only, as the stores beside it
        self.handle = open(path, "a+")  # not "w": that would empty the holder's line  # noqa: SIM115

    def acquire(self, seconds: float) -> bool:
        import fcntl

        end, pause = time.monotonic() + seconds, 0.002
        while True:
            try:
                fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() >= end:
                    return False
                time.sleep(pause)
                pause = min(pause * 2, 0.02)
                continue
            self.handle.seek(0)
            self.handle.truncate()
            self.handle.write(_who())
            self.handle.flush()
            return True

    def release(self) -> bool:
        import fcntl

        fcntl.flock(self.handle, fcntl.LOCK_UN)
        return True

    def holder(self) -> str:
        self.handle.seek(0)
        return self.handle.read().strip()

    def close(self) -> None:
        self.handle.close()


class _ServerLock:
    """A PostgreSQL advisory lock (each try waits at most ``lock_timeout``) or a MySQL/MariaDB named
    lock (``GET_LOCK`` with a timeout), on one connection of the storage's engine."""

    def __init__(self, conn: Any, dialect: str, study_name: str) -> None:
        self.conn, self.pg = conn, dialect == "postgresql"
        digest = hashlib.sha256(f"sweep:{study_name}".encode()).digest()[:8]
        self.key = int.from_bytes(digest, "big", signed=True)  # pg_advisory_lock(bigint)
        self.name = f"sweep:{_digest(study_name)[:40]}"

    def acquire(self, seconds: float) -> bool:
        from sqlalchemy import text
        from sqlalchemy.exc import DBAPIError

        if not self.pg:
            got = self.conn.execute(text("SELECT GET_LOCK(:n, :t)"), {"n": self.name, "t": round(seconds, 3)})
            taken = got.scalar() == 1
            self.conn.commit()
            return taken
        try:  # the holder names itself in its session's application_name (see holder)
            self.conn.execute(text(f"SET LOCAL lock_timeout = {max(1, int(seconds * 1000))}"))
            lock = "SELECT pg_advisory_lock(:k), set_config('application_name', :who, false)"
            self.conn.execute(text(lock), {"k": self.key, "who": f"sweep: {_who()}"[:63]})
        except DBAPIError as e:
            self.conn.rollback()
            if getattr(e.orig, "pgcode", None) == "55P03":  # lock_not_available: the slice ran out
                return False
            raise
        self.conn.commit()
        return True

    def release(self) -> bool:
        from sqlalchemy import text

        if self.pg:
            unlock = "SELECT pg_advisory_unlock(:k), set_config('application_name', '', false)"
            kept = self.conn.execute(text(unlock), {"k": self.key}).scalar()
        else:
            kept = self.conn.execute(text("SELECT RELEASE_LOCK(:n)"), {"n": self.name}).scalar()
        self.conn.commit()
        return bool(kept)

    def holder(self) -> str:
        from sqlalchemy import text

        if not self.pg:
            found = self.conn.execute(text("SELECT IS_USED_LOCK(:n)"), {"n": self.name}).scalar()
            return f"MySQL connection {found}" if found else ""
        query = (
            "SELECT a.pid, a.application_name, a.client_addr FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
            "AND l.classid::bigint = :hi AND l.objid::bigint = :lo"
        )
        unsigned = self.key % 2**64
        row = self.conn.execute(text(query), {"hi": unsigned >> 32, "lo": unsigned & 0xFFFFFFFF}).first()
        self.conn.rollback()
        if row is None:
            return ""
        who = row[1].removeprefix("sweep: ") if str(row[1]).startswith("sweep: ") else f"client {row[2]}"
        return f"{who} (PostgreSQL session {row[0]})"


@contextlib.contextmanager
def study_lock(
    engine: Any,
    url: str,
    study_name: str,
    wait: float | None = None,
    interrupts: Interrupts | None = None,
    run_after: bool = True,
) -> Iterator[Held]:
    """Hold the lock that serialises trial claims on one study, for every process on ``url``.

    ``engine`` is the storage's SQLAlchemy engine (``RDBStorage.engine``). A lock on a server is tied
    to its connection: a process that dies (or loses its connection) releases it at once; the
    :class:`Held` yielded says, once the lock is let go, whether it was held to the end.

    Args:
        wait: Give up after this many seconds (``None``: wait as long as it takes): the block then runs
            without the lock, with ``taken`` false and ``holder`` saying who had it.
        interrupts: A requested interrupt ends the wait within a slice (KeyboardInterrupt).
        run_after: Once let go, do the work :func:`after_release` put off meanwhile (``False``: the
            caller does it, :func:`run_after_release`).

    Raises:
        KeyboardInterrupt: ``interrupts`` was requested while waiting.
    """
    held = Held()
    path = sqlite_path(url)
    dialect = "sqlite" if url.startswith("sqlite") else engine.dialect.name if engine is not None else ""
    if (dialect == "sqlite" and path is None) or dialect not in ("sqlite", "postgresql", "mysql", "mariadb"):
        yield held  # in memory (one process), or a database without a shared lock (a trial or two too many)
        return
    try:
        with _taken(engine, path, dialect, study_name, wait, interrupts, held):
            yield held
    finally:
        if run_after:
            run_after_release()


@contextlib.contextmanager
def _taken(
    engine: Any, path: Path | None, dialect: str, study_name: str, wait: float | None, interrupts: Any, held: Held
) -> Iterator[None]:
    """:func:`study_lock`'s wait in slices, the holding, and the letting go."""
    global _held_here
    with contextlib.ExitStack() as stack:
        if dialect == "sqlite":
            lock: _Lock = _FileLock(Path(f"{path}.{_digest(study_name)[:12]}.lock"))  # one per name
            stack.callback(lock.close)  # type: ignore[attr-defined]
        else:
            lock = _ServerLock(stack.enter_context(engine.connect()), dialect, study_name)
        deadline = None if wait is None else time.monotonic() + wait
        while True:
            left = SLICE if deadline is None else min(SLICE, max(0.0, deadline - time.monotonic()))
            if lock.acquire(left):
                break
            pause("lock_wait")  # another process holds it: this one waits (sweep.core.faultpoints)
            if interrupts is not None and interrupts.requested:
                raise KeyboardInterrupt
            if deadline is not None and time.monotonic() >= deadline:
                held.taken = held.kept = False
                with contextlib.suppress(Exception):  # who it is: a courtesy
                    held.holder = lock.holder()
                break
        _held_here += held.taken
        try:
            yield
        finally:
            if held.taken:
                _held_here -= 1
                try:  # true: it was ours to the end; false, or a dead connection: it was lost meanwhile
                    held.kept = lock.release()
                except Exception:
                    held.kept = False
