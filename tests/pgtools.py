"""The local PostgreSQL for fault tests: a throw-away database per study, and outages of it."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def database() -> Iterator[str]:
    """A fresh PostgreSQL database for one study (so an outage hits only it); dropped after."""
    import psycopg2

    name = f"sweep_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="test")
    admin.autocommit = True
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
    import psycopg2

    admin = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="test")
    admin.autocommit = True
    cur = admin.cursor()
    if seconds:
        cur.execute(f"ALTER DATABASE {database} ALLOW_CONNECTIONS false")
    cur.execute(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database}'")
    time.sleep(seconds)
    cur.execute(f"ALTER DATABASE {database} ALLOW_CONNECTIONS true")
    admin.close()


def pg(database: str) -> str:
    return f"postgresql+psycopg2://postgres@127.0.0.1:5432/{database}"
