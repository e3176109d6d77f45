"""``sweep.core.exit.exit_now``: the commands end without the interpreter's teardown, and nothing that
teardown would have done for the user is lost (atexit handlers, waiting threads, buffered output,
SQLite WAL files folded back into their database)."""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_cli, tiny_study, write_yaml


def _python(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.slow
def test_exit_now_runs_atexit_flushes_output_and_keeps_the_code(tmp_path: Path) -> None:
    done = _python(
        """
        import atexit, sys, tempfile
        from pathlib import Path
        from sweep.core.exit import exit_now
        atexit.register(lambda: Path("atexit.txt").write_text("ran"))
        folder = tempfile.TemporaryDirectory(dir=".")  # removed by its finalizer, an atexit handler
        Path(folder.name, "x").write_text("x")
        sys.stdout.write("y" * 1000)  # buffered (a pipe), no newline: written only by a flush
        sys.stderr.write("said")
        exit_now(3)
        """,
        tmp_path,
    )
    assert done.returncode == 3, done.stderr
    assert done.stdout == "y" * 1000 and done.stderr == "said"
    assert (tmp_path / "atexit.txt").read_text() == "ran"
    assert [p.name for p in tmp_path.iterdir()] == ["atexit.txt"]  # the temporary folder went


@pytest.mark.slow
def test_exit_now_waits_for_a_live_non_daemon_thread(tmp_path: Path) -> None:
    done = _python(
        """
        import threading, time
        from pathlib import Path
        from sweep.core.exit import exit_now
        threading.Thread(target=lambda: (time.sleep(0.5), Path("thread.txt").write_text("done"))).start()
        exit_now(None)
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "thread.txt").read_text() == "done"


@pytest.mark.slow
def test_exit_now_folds_the_sqlite_wal_back_into_the_database(tmp_path: Path) -> None:
    """Through SQLAlchemy in WAL mode, as Optuna and MLflow use it: after exit no ``-wal``/``-shm`` file
    is left and the database file alone holds every row (a copy of it is complete)."""
    done = _python(
        """
        from sqlalchemy import create_engine, text
        from sweep.core.sqlite import use_wal
        from sweep.core.exit import exit_now
        use_wal()
        engine = create_engine("sqlite:///t.db")
        with engine.begin() as c:
            c.execute(text("create table t (x integer)"))
            c.execute(text("insert into t values (1), (2), (3)"))
        assert list((__import__("pathlib").Path(".")).glob("t.db-wal"))  # open: the rows are in the WAL
        exit_now(0)
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.db"]
    copy = tmp_path / "copy.db"
    copy.write_bytes((tmp_path / "t.db").read_bytes())
    with contextlib.closing(sqlite3.connect(copy)) as db:
        assert db.execute("select count(*) from t").fetchone() == (3,)


@pytest.mark.slow
def test_a_study_run_ends_with_its_records_complete_in_the_database_files(tmp_path: Path) -> None:
    write_yaml(tmp_path / "s.yaml", tiny_study())
    done = run_cli("sweep.run", "s.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Best trial #" in done.stdout  # the summary came through the pipe
    left = [p.name for p in [*tmp_path.iterdir(), *(tmp_path / ".sweep").iterdir()]]
    assert not [name for name in left if name.endswith(("-wal", "-shm"))], left
    for db, query in (
        (tmp_path / "mlflow.db", "select count(*) from runs"),
        (tmp_path / ".sweep" / "optuna.db", "select count(*) from trials"),
    ):
        copy = tmp_path.parent / f"{tmp_path.name}-copy-{db.name}"
        copy.write_bytes(db.read_bytes())  # the file alone, as a user copies it
        with contextlib.closing(sqlite3.connect(copy)) as c:
            assert c.execute(query).fetchone()[0] >= 3
    for command in ("sweep.report", "sweep.export"):  # the reading commands open the databases too
        assert run_cli(command, "s.yaml", cwd=tmp_path).returncode == 0
        left = [p.name for p in [*tmp_path.iterdir(), *(tmp_path / ".sweep").iterdir()]]
        assert not [name for name in left if name.endswith(("-wal", "-shm"))], (command, left)
    bad = run_cli("sweep.run", "missing.yaml", cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0  # one line, the config exit code


@pytest.mark.slow
def test_under_a_profiler_the_process_exits_the_usual_way(tmp_path: Path) -> None:
    """``python -m cProfile -o FILE -m sweep.run ...`` writes its profile after the program ends: the
    fast exit steps aside (as for coverage and pdb) and the file is there. (cProfile itself ends with 0
    whatever the program's exit code: it swallows ``SystemExit``.)"""
    done = subprocess.run(
        [sys.executable, "-m", "cProfile", "-o", "run.prof", "-m", "sweep.run", "missing.yaml"],
        cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "MLFLOW_DISABLE_TELEMETRY": "true"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.stderr.startswith("error: missing.yaml"), done.stderr
    assert (tmp_path / "run.prof").stat().st_size > 0
