"""SQLite in write-ahead-log mode for every engine the process opens; other databases untouched."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy

from sweep.core.sqlite import use_wal


def test_every_sqlite_engine_uses_wal_and_normal_sync(tmp_path: Path) -> None:
    use_wal()
    use_wal()  # idempotent: one listener
    engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
    engine.dispose()
    memory = sqlalchemy.create_engine("sqlite://")  # no file: SQLite keeps its memory journal
    with memory.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "memory"
