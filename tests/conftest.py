"""Shared fixtures. Nothing here is mutable state shared between tests: each gets its own tmp_path."""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# The migrated, empty MLflow database new stores are copied from (sweep.tracking.mlflowdb): made once per test
# session, in a folder of its own (removed at exit), not in the user's cache; every process the tests
# start inherits it. Read-only once made, so the tests share no state through it.
_CACHE = tempfile.mkdtemp(prefix="sweep-cache-")
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
os.environ["SWEEP_CACHE_DIR"] = _CACHE
# Small CPU models run faster on one thread, and far faster when test processes share the cores.
torch.set_num_threads(1)


def tiny_study(name: str = "tiny", **overrides: object) -> dict:
    """A study that trains in well under a second per trial on CPU."""
    study = {
        "study": {"name": name, "n_trials": 3, "seed": 0, "sampler": {"type": "random"}},
        "tracking": {"uri": "sqlite:///mlflow.db"},
        "objective": {
            "loop": "dual_loss",
            "problem": {"name": "linear_pair", "options": {"dim": 4, "n_a": 64, "n_b": 128, "n_val": 64}},
            "epochs": 3,
            "batch_size": 32,
            "device": "cpu",
        },
        "search": {
            "weights": {"parametrization": "log_ratio", "low": -2, "high": 2},
            "params": {"optimizer.lr": {"type": "float", "low": 1e-3, "high": 1e-1, "log": True}},
        },
    }
    for section, values in overrides.items():
        study[section] = {**study.get(section, {}), **values}  # type: ignore[dict-item]
    return study


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def run_cli(module: str, *args: str, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """``python -m <module> args`` in ``cwd`` with the project importable, stdin closed."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_DISABLE_TELEMETRY": "true"}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


PG_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"


def postgres_error() -> str | None:
    """Why the local PostgreSQL (127.0.0.1:5432, database test, trust auth) cannot be used, or ``None``."""
    try:
        import psycopg2

        psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="test", connect_timeout=3).close()
    except ImportError:
        return "psycopg2 is not installed (pip install -e '.[dev]')"
    except Exception as e:  # OperationalError: no server answers
        return f"no PostgreSQL answers at 127.0.0.1:5432/test ({str(e).strip().splitlines()[0]})"
    return None


def run_main(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python -m <module> args`` in this process (no interpreter start-up), in ``cwd``.

    For the commands' logic; the real-subprocess path is covered by the tests that use :func:`run_cli`.
    """
    import contextlib
    import importlib
    import io

    main = importlib.import_module(module).main
    out, err = io.StringIO(), io.StringIO()
    previous = Path.cwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as e:  # argparse
                code = e.code if isinstance(e.code, int) else 1
    finally:
        os.chdir(previous)
    return subprocess.CompletedProcess([module, *args], code, out.getvalue(), err.getvalue())


@pytest.fixture
def study_dict() -> dict:
    return tiny_study()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(server: subprocess.Popen, port: int) -> bool:
    """Wait for a server to answer on ``port`` (True), or to exit (False, e.g. the port was taken)."""
    deadline = time.monotonic() + 90
    while server.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
                if response.status == 200:
                    return True
        except OSError:
            pass
        if time.monotonic() > deadline:
            os.killpg(server.pid, signal.SIGTERM)
            raise AssertionError(f"nothing answered on port {port} in 90 s")
        time.sleep(0.5)
    return False


@contextlib.contextmanager
def serving(command: Callable[[int], list[str]], cwd: Path) -> Iterator[int]:
    """Run ``command(port)`` (an MLflow server or UI) on a free loopback port until the block ends.

    The port can be taken between our probe and the server's bind, so a server that exits is
    retried on another port; the whole process group is stopped at the end.
    """
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    for attempt in range(3):
        port = _free_port()
        server = subprocess.Popen(
            command(port),
            cwd=cwd,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        if _answers(server, port):
            break
        assert attempt < 2, "the server exited three times"
    try:
        yield port
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def start_cli(module: str, *args: str, cwd: Path) -> subprocess.Popen[str]:
    """``python -m <module> args`` in the background in ``cwd`` (output piped, stdin closed)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_DISABLE_TELEMETRY": "true"}
    return subprocess.Popen(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )


def interrupt(proc: subprocess.Popen[str]) -> tuple[str, float]:
    """Ctrl-C ``proc`` now (the caller holds it where it wants, see :mod:`tests.support.pausing`); its stderr and
    how long it took to exit."""
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    return err, time.monotonic() - sent


# --- the fast lane --------------------------------------------------------------------------------------
# ``make test-fast`` (``pytest -m "not slow"``) leaves out every test that starts a Python process or a
# server (a CLI run in a subprocess, workers, an MLflow server, the browser). So that the lane stays
# what it says, a test that is not marked ``slow`` and starts one fails and says to mark it.
_STARTS = ("python", "mlflow", "chromium", "bash", "sh")


class _Spawns:
    """Which processes the running test started (read and reset by :func:`pytest_runtest_call`)."""

    allowed = True
    started: list[str] = []  # noqa: RUF012 (one list, reset per test)


def _starts_python(args: object) -> bool:
    argv = [args] if isinstance(args, str | bytes | os.PathLike) else list(args)  # type: ignore[call-overload]
    if not argv:
        return False
    program = os.fsdecode(argv[0])
    return program == sys.executable or os.path.basename(program).startswith(_STARTS)


_popen_init = subprocess.Popen.__init__


def _watched_init(self: subprocess.Popen, args: object, *rest: object, **kwargs: object) -> None:
    if not _Spawns.allowed and _starts_python(args):
        _Spawns.started.append(" ".join(map(str, [args] if isinstance(args, str) else args))[:200])  # type: ignore[call-overload]
    _popen_init(self, args, *rest, **kwargs)  # type: ignore[arg-type]


subprocess.Popen.__init__ = _watched_init  # type: ignore[method-assign]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    _Spawns.allowed, _Spawns.started = item.get_closest_marker("slow") is not None, []
    try:
        result = yield
    finally:
        started, _Spawns.allowed, _Spawns.started = _Spawns.started, True, []
    if started:
        raise AssertionError(f"this test starts processes ({started[0]}): mark it @pytest.mark.slow")
    return result
