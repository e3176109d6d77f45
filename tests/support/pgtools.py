"""The local PostgreSQL for fault tests: a throw-away database per study, and outages of it."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import optuna


@contextmanager
def database() -> Iterator[str]:
    """A fresh PostgreSQL database for one study (so an outage hits only it); dropped after."""
    name = f"sweep_{uuid.uuid4().hex[:10]}"
    admin = _admin()
    admin.cursor().execute(f"CREATE DATABASE {name}")
    try:
        yield name
    finally:
        cur = admin.cursor()
        cur.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")
        cur.execute(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")
        cur.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.close()


def outage(database: str, seconds: float) -> None:
    """Refuse connections to ``database`` and drop the open ones, for ``seconds`` (0: one blip)."""
    refuse(database, drop_only=not seconds)
    time.sleep(seconds)  # the outage's length is part of the scenario, not a wait for an event
    allow(database)


def refuse(database: str, drop_only: bool = False) -> None:
    """Drop every open connection to ``database`` and (unless ``drop_only``) refuse new ones until :func:`allow`."""
    admin = _admin()
    cur = admin.cursor()
    if not drop_only:
        cur.execute(f"ALTER DATABASE {database} ALLOW_CONNECTIONS false")
    cur.execute(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database}'")
    admin.close()


def allow(database: str) -> None:
    """Accept connections to ``database`` again."""
    admin = _admin()
    admin.cursor().execute(f"ALTER DATABASE {database} ALLOW_CONNECTIONS true")
    admin.close()


def until_refused(url: str) -> None:
    """Until the database refuses a new connection: the outage has begun."""
    from sqlalchemy import create_engine
    from sqlalchemy.exc import OperationalError
    from sqlalchemy.pool import NullPool

    engine = create_engine(url, poolclass=NullPool)
    deadline = time.monotonic() + 60
    while True:
        try:
            engine.connect().close()
        except OperationalError:
            return
        assert time.monotonic() < deadline, "the database never refused a connection"
        time.sleep(0.05)


def pg(database: str) -> str:
    return f"postgresql+psycopg2://postgres@127.0.0.1:5432/{database}"


def pg_study(name: str, url: str, wait_s: float = 120.0) -> optuna.Study:
    """``optuna.load_study`` for a test's own look at a PostgreSQL study: no pooled connection kept
    (``NullPool``), and a server at its connection limit (a busy shared CI database) waited for."""
    from sqlalchemy.exc import OperationalError
    from sqlalchemy.pool import NullPool

    deadline = time.monotonic() + wait_s
    while True:
        try:
            storage = optuna.storages.RDBStorage(url, engine_kwargs={"poolclass": NullPool})
            return optuna.load_study(study_name=name, storage=storage)
        except OperationalError as e:
            if "too many" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(2.0)


def _admin(wait_s: float = 120.0) -> Any:
    """An autocommit connection to the ``test`` database, waiting while the server is at its limit."""
    import psycopg2

    deadline = time.monotonic() + wait_s
    while True:
        try:
            admin = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="test")
            admin.autocommit = True
            return admin
        except psycopg2.OperationalError as e:
            if "too many" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(2.0)
