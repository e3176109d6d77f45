"""A process stopped while it holds the study's claim lock (SIGSTOP: a suspended job, Ctrl-Z, a frozen VM)
holds the others up for ``study.grace_period`` at most; a process waiting for the lock obeys SIGTERM at once.

Each test holds a real process where it wants it with a pause point (:mod:`sweep.core.faultpoints`): ``claimed``
(it decided to start a trial and holds the lock), ``lock_wait`` (it found the lock held and waits)."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest

from tests.conftest import postgres_error, start_cli, tiny_study, write_yaml
from tests.support.agreement import check_agreement
from tests.support.pausing import Pauses, alive

KINDS = [
    "sqlite",
    pytest.param("postgres", marks=pytest.mark.skipif(bool(postgres_error()), reason=postgres_error() or "")),
]


@contextlib.contextmanager
def _storage(kind: str, tmp_path: Path) -> Iterator[str]:
    """The study's storage: a SQLite file, or a fresh database of the local PostgreSQL (dropped after)."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / '.sweep' / 'optuna.db'}"
        return
    from tests.support.pgtools import database, pg

    with database() as db:
        yield pg(db)


def _stop(*procs: object) -> None:
    for proc in procs:
        if proc is not None and proc.poll() is None:  # type: ignore[attr-defined]
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGCONT)  # type: ignore[attr-defined]
            proc.kill()  # type: ignore[attr-defined]
            proc.wait()  # type: ignore[attr-defined]


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_a_stopped_lock_holder_holds_the_others_up_for_grace_period_at_most(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first process decides to start a trial and is stopped holding the claim lock. A second one waits
    grace_period for it, says in one line who holds it and claims without it: it runs the whole study.
    Resumed, the first one creates its trial, finds the study full without it (the lower-numbered trials
    make n_trials) and fails it unrun: exactly n_trials finished, nothing RUNNING, no point run twice,
    Optuna and MLflow agree, both exit 0."""
    with _storage(kind, tmp_path) as url:
        study = {"n_trials": 3, "heartbeat_interval": 1, "grace_period": 2, "pruner": "none", "storage": url}
        path = write_yaml(tmp_path / "s.yaml", tiny_study("stalled", study=study))
        pauses = Pauses(tmp_path / "pauses", "claimed").apply(monkeypatch)  # only the first process pauses
        first = start_cli("sweep.run", str(path), "--no-report", "--no-progress", cwd=tmp_path)
        other = None
        try:
            pid = pauses.wait("claimed", [first])  # decided, holding the lock, no trial yet
            os.kill(pid, signal.SIGSTOP)  # for realism: a paused process only blocks; a stopped one is frozen
            other = start_cli("sweep.run", str(path), "--no-report", "--no-progress", cwd=tmp_path)
            _, other_err = other.communicate(timeout=240)  # the whole study, while the first one is stopped
            assert other.returncode == 0, other_err
            said = [line for line in other_err.splitlines() if "claim lock" in line]
            assert len(said) == 1 and "claiming without it" in said[0], other_err
            assert f"pid {pid} " in said[0] and "study.grace_period" in said[0], said  # who holds it
            done = optuna.load_study(study_name="stalled", storage=url)
            assert [t.state.name for t in done.trials] == ["COMPLETE"] * 3
            os.kill(pid, signal.SIGCONT)
            pauses.release("claimed", procs=[first])
            _, err = first.communicate(timeout=240)
        finally:
            _stop(first, other)
        assert first.returncode == 0, err
        assert "Traceback" not in err, err
        study_now = optuna.load_study(study_name="stalled", storage=url)
        fails = [t for t in study_now.trials if t.state.name == "FAIL"]
        assert len(fails) == 1 and fails[0].number == 3, [(t.number, t.state.name) for t in study_now.trials]
        assert fails[0].user_attrs["fail_reason"].startswith("not needed") and not fails[0].params
        check_agreement(study_now, f"sqlite:///{tmp_path / 'mlflow.db'}", 3)


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_sigterm_ends_a_process_waiting_for_the_lock(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process waiting for the claim lock (its holder paused with it, far short of grace_period) obeys
    SIGTERM within seconds: exit 130, one line; the holder then finishes the study."""
    with _storage(kind, tmp_path) as url:
        study = {"n_trials": 2, "grace_period": 600, "pruner": "none", "storage": url}
        path = write_yaml(tmp_path / "s.yaml", tiny_study("waiting", study=study))
        pauses = Pauses(tmp_path / "pauses", "claimed", "lock_wait").apply(monkeypatch)
        holder = start_cli("sweep.run", str(path), "--no-report", "--no-progress", cwd=tmp_path)
        waiter = None
        try:
            pauses.wait("claimed", [holder])  # holds the lock
            waiter = start_cli("sweep.run", str(path), "--no-report", "--no-progress", cwd=tmp_path)
            pid = pauses.wait("lock_wait", [waiter])  # found the lock held
            pauses.release("lock_wait", procs=[waiter])  # and waits on for it
            assert alive(pid)
            waiter.send_signal(signal.SIGTERM)
            sent = time.monotonic()
            _, err = waiter.communicate(timeout=30)  # generous: the wait is sliced into 0.5 s tries
            took = time.monotonic() - sent
            pauses.release("claimed", procs=[holder])
            _, holder_err = holder.communicate(timeout=240)
        finally:
            _stop(holder, waiter)
        assert waiter.returncode == 130, err
        assert err.strip().splitlines() == [
            "Interrupted: finished trials are saved; run the same command again to resume."
        ], err
        assert took < 30
        assert holder.returncode == 0, holder_err
        check_agreement(optuna.load_study(study_name="waiting", storage=url), f"sqlite:///{tmp_path / 'mlflow.db'}", 2)
