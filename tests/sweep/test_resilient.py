"""``sweep.resilient``: what a storage outage prints is one note per outage, wherever the failing call
came from (also outside a trial, e.g. the coordinator's progress reads while it waits for its workers)."""

from __future__ import annotations

import logging
from pathlib import Path

import optuna

from sweep.resilient import ResilientStorage


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
