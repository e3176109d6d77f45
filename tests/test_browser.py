"""The MLflow UI, in a real headless browser, shows the study's experiment, parent run and child runs."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest

from tests.conftest import run_main, tiny_study, write_yaml

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium on this machine (.ci/run installs Debian's chromium package)"
)
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=15000",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def tracked(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """A tiny study's tracking store, served by the MLflow UI on a free loopback port."""
    path = write_yaml(tmp_path / "b.yaml", tiny_study("browser-study", study={"n_trials": 2}))
    assert run_main("sweep.run", str(path), "--no-report", cwd=tmp_path).returncode == 0
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
    for attempt in range(3):  # the free port can be taken between our probe and the server's bind: retry
        port = _free_port()
        command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]
        command += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
        server = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        if _answers(server, port):
            break
        assert attempt < 2, "mlflow ui exited three times"
    try:
        yield tmp_path, port
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def _answers(server: subprocess.Popen, port: int) -> bool:
    """Wait for the UI to answer (True), or for the server to exit (False, e.g. the port was taken)."""
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
            raise AssertionError("mlflow ui did not answer in 90 s")
        time.sleep(0.5)
    return False


def _dom(url: str) -> str:
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run(
            [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", url],
            capture_output=True,
            text=True,
            timeout=120,
        )
    return done.stdout


def test_mlflow_ui_shows_study_parent_and_children(tracked: tuple[Path, int]) -> None:
    """The runs page lists the study's parent run; each child run's page names the trial and its parent."""
    tmp_path, port = tracked
    study = optuna.load_study(study_name="browser-study", storage=f"sqlite:///{tmp_path / '.sweep' / 'optuna.db'}")
    base = f"http://127.0.0.1:{port}/#/experiments/1"
    runs_page = _dom(f"{base}/runs")
    assert "browser-study" in runs_page  # the experiment (breadcrumb) and the parent run's name
    assert "Training runs" in runs_page
    for trial in study.trials:
        child_page = _dom(f"{base}/runs/{trial.user_attrs['mlflow_run_id']}")
        assert f"trial-{trial.number}" in child_page
        assert "Parent run" in child_page and "browser-study" in child_page
