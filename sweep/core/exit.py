"""End a command's process without the interpreter's teardown.

With torch, MLflow, SQLAlchemy and pandas loaded, Python's own shutdown spends about 1 s freeing
every module's objects one by one (1.0-1.1 s measured on the 2-core machine, against 0.02 s for
``os._exit``): more than a short trial trains, paid by every run, every ``--workers`` process (the
coordinator waits for the others' exit before its report) and every report or export. Nothing in
that teardown writes a record. What does is done first, in the order the interpreter would do it.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading
import weakref
from typing import Any, NoReturn

from sqlalchemy import event
from sqlalchemy.engine import Engine

_open: weakref.WeakSet = weakref.WeakSet()  # pool entries of the database connections opened since import


def _track(_dbapi_connection: Any, record: Any) -> None:
    _open.add(record)


# Every connection SQLAlchemy opens from here on (Optuna's, MLflow's) is known, to be closed at the exit:
# a command imports this module before its main() runs.
event.listen(Engine, "connect", _track)


def exit_now(code: int | None) -> NoReturn:
    """Exit with ``code`` (``None``: 0) as ``sys.exit`` would, minus the teardown.

    1. Threads: a live non-daemon thread (a user's problem may start one) is waited for, as the
       interpreter does: then this exits the usual way. So does a process run under a profiler,
       tracer or debugger (``python -m cProfile``, coverage, pdb), which writes its results after
       the program's end.
    2. ``atexit`` handlers run (temporary folders, logging, DataLoader worker processes).
    3. The database connections SQLAlchemy opened are closed (:func:`close_connections`): the last
       connection to a SQLite database in WAL mode (:mod:`sweep.core.sqlite`) checkpoints the WAL into
       the file and removes ``-wal``/``-shm``; a PostgreSQL or MySQL server sees a clean goodbye.
    4. The standard streams are flushed, then ``os._exit``.
    """
    if _observed() or any(
        t.is_alive() and not t.daemon and t is not threading.main_thread() for t in threading.enumerate()
    ):
        sys.exit(code)  # 1.
    atexit._run_exitfuncs()  # 2. (the interpreter's own call; there is no public one)
    close_connections()  # 3.
    for stream in (sys.stdout, sys.stderr):  # 4.
        with contextlib.suppress(OSError, ValueError):  # a closed pipe or stream: nothing more to say
            stream.flush()
    os._exit(code or 0)


def _observed() -> bool:
    """Whether a profiler, tracer or debugger watches this process (``sys.setprofile``/``settrace``, or a
    ``sys.monitoring`` tool on Python 3.12+, as cProfile and coverage use there)."""
    if sys.getprofile() is not None or sys.gettrace() is not None:
        return True
    monitoring = getattr(sys, "monitoring", None)
    return monitoring is not None and any(monitoring.get_tool(i) is not None for i in range(6))


def close_connections() -> None:
    """Close every database connection SQLAlchemy opened in this process since this module's import."""
    for record in list(_open):
        connection = getattr(record, "dbapi_connection", None)
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.close()
