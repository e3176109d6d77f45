"""The MLflow UI, in a real headless browser, shows the study's experiment, parent run and child runs."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest

from tests.conftest import run_main, serving, tiny_study, write_yaml

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


@pytest.fixture
def tracked(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """A tiny study's tracking store, served by ``python -m sweep.ui`` (the MLflow UI) on a free port."""
    path = write_yaml(tmp_path / "b.yaml", tiny_study("browser-study", study={"n_trials": 2}))
    assert run_main("sweep.run", str(path), "--no-report", cwd=tmp_path).returncode == 0
    with serving(lambda port: [sys.executable, "-m", "sweep.ui", str(path), "--port", str(port)], tmp_path) as port:
        yield tmp_path, port


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
