"""SQLite stores in write-ahead-log mode: a commit without an fsync.

The embedded default keeps the study in SQLite twice (Optuna's ``.sweep/optuna.db`` and MLflow's
``mlflow.db``), and a trial commits to them a few dozen times. In SQLite's default rollback-journal
mode with ``synchronous=FULL`` every commit waits for two fsyncs: 8.2 ms a commit on this project's
machine, about 0.3 s a trial. In WAL mode with ``synchronous=NORMAL`` a commit is 0.01 ms.

What it gives up: after a power cut (not a killed process: the operating system still holds what a
killed process wrote) the last commits before the cut may be rolled back; the database is never
corrupted. What it needs: the database on a local disk (WAL shares memory between processes; SQLite
over NFS is unsafe in any mode), and two files beside it (``-wal``, ``-shm``) while it is open.
PostgreSQL and MySQL storages are untouched.

The stores a study creates on this machine (the Optuna and MLflow databases, their folders, the artifact
folder) are its owner's only, whatever the umask: :func:`private_dir` and :func:`private_file` make them.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

_installed = False


def _pragmas(dbapi_connection: Any, _record: Any) -> None:
    if type(dbapi_connection).__module__.split(".")[0] not in ("sqlite3", "pysqlite2"):
        return
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")  # stored in the file: every later connection uses it too
        cursor.execute("PRAGMA synchronous=NORMAL")  # per connection
    finally:
        cursor.close()


def use_wal() -> None:
    """Make every SQLite connection this process opens through SQLAlchemy (Optuna's and MLflow's)
    use WAL mode with ``synchronous=NORMAL``. Idempotent."""
    global _installed
    if _installed:
        return
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    event.listen(Engine, "connect", _pragmas)
    _installed = True


def private_dir(path: Path) -> None:
    """Make folder ``path`` and its missing parents, each new one readable by its owner only (0700);
    folders that exist are left as they are."""
    missing = []
    while not path.exists() and path.parent != path:
        missing.append(path)
        path = path.parent
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another process made it meanwhile
            folder.mkdir(mode=0o700)


def private_file(path: Path) -> None:
    """Create ``path`` empty and readable by its owner only (0600) unless it exists. SQLite opens an empty
    file as a new database and gives its ``-wal``, ``-shm`` and journal files the database file's mode."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
