"""``sweep.storage.resilient``: what a storage outage prints is one note per outage, wherever the failing call
came from (also outside a trial, e.g. the coordinator's progress reads while it waits for its workers);
a worker's first connection waits out an outage."""

from __future__ import annotations

import logging
from pathlib import Path

import optuna
import pytest

from sweep.core.errors import SweepError
from sweep.storage.resilient import ResilientStorage, StorageDown
from sweep.storage.storage import open_storage
from tests.conftest import postgres_error
from tests.support.pgtools import allow, database, pg, refuse, until_refused


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_optunas_lost_connection_log_is_dropped_outside_any_block(tmp_path: Path) -> None:
    ResilientStorage(f"sqlite:///{tmp_path / 'r.db'}")
    lines = _Lines()
    root = logging.getLogger("optuna")
    root.addHandler(lines)
    try:
        log = optuna.logging.get_logger("optuna.storages._rdb.storage")  # where Optuna logs it
        log.warning("Caught an error from sqlalchemy: server closed the connection. Falling back ...")
        log.warning("another warning")
    finally:
        root.removeHandler(lines)
    assert lines.lines == ["another warning"]


needs_postgres = pytest.mark.skipif(bool(postgres_error()), reason=postgres_error() or "")


@needs_postgres
def test_a_worker_waits_out_an_outage_at_its_first_connection(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker that starts while the database refuses connections (its coordinator opened the study a
    moment before) waits for it; a command opening the storage itself is refused at once; a worker
    refused past the budget says so in its one line (not wrapped in "cannot open")."""
    import sweep.storage.resilient

    with database() as db:
        url = pg(db)
        open_storage(url).engine.dispose()  # the tables, as the coordinator leaves them
        refuse(db)
        try:
            until_refused(url)
            with pytest.raises(SweepError, match=r"cannot open Optuna storage .*not currently accepting"):
                open_storage(url, retry_s=30)
            with pytest.raises(StorageDown, match=r"unreachable for 1 s \(study.storage_retry: 1\)"):
                open_storage(url, retry_s=1, wait_at_open=True)
            say = sweep.storage.resilient._say

            def back_once_waiting(line: str) -> None:  # the database returns once the open is waiting
                say(line)
                if "retrying for up to 30 s" in line:
                    allow(db)

            monkeypatch.setattr(sweep.storage.resilient, "_say", back_once_waiting)
            storage = open_storage(url, retry_s=30, wait_at_open=True)
        finally:
            allow(db)
        assert optuna.create_study(study_name="s", storage=storage).study_name == "s"  # a working storage
        storage.engine.dispose()
    err = capsys.readouterr().err
    assert "Optuna storage back after" in err  # the last one waited (and said so once, when it could go on)
