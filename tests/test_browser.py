"""The MLflow UI, in a real headless browser, shows the study's experiment, parent run and child runs, and the
link ``sweep.run`` prints opens the runs sorted by the study's target with the searched params as columns."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient

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
    "--window-size=1920,1080",  # the grid renders only the columns in view
]
SEARCHED = ("optimizer.lr", "weights.log10_ratio")  # the tiny study's searched params


@pytest.fixture(scope="module")
def tracked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, int, str]]:
    """A tiny study's tracking store, served by ``python -m sweep.ui`` (the MLflow UI) on a free port, and
    the UI link ``sweep.run`` printed (for port 5000)."""
    tmp_path = tmp_path_factory.mktemp("browser")
    path = write_yaml(tmp_path / "b.yaml", tiny_study("browser-study", study={"n_trials": 3}))
    ran = run_main("sweep.run", str(path), "--no-report", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    link = re.search(r"then browse (\S+)", ran.stdout)
    assert link, ran.stdout
    with serving(lambda port: [sys.executable, "-m", "sweep.ui", str(path), "--port", str(port)], tmp_path) as port:
        yield tmp_path, port, link[1]


def _dom(url: str) -> str:
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run(
            [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", url],
            capture_output=True,
            text=True,
            timeout=120,
        )
    return done.stdout


def _headers(page: str) -> set[str]:
    """The names of the runs table's column headers (each carries ``data-testid="sort-header-<name>"``)."""
    return set(re.findall(r'data-testid="sort-header-([^"]+)"', page))


@pytest.mark.slow
def test_mlflow_ui_shows_study_parent_and_children(tracked: tuple[Path, int, str]) -> None:
    """The runs page lists the study's parent run; each child run's page names the trial and its parent."""
    tmp_path, port, _ = tracked
    study = optuna.load_study(study_name="browser-study", storage=f"sqlite:///{tmp_path / '.sweep' / 'optuna.db'}")
    base = f"http://127.0.0.1:{port}/#/experiments/1"
    runs_page = _dom(f"{base}/runs")
    assert "browser-study" in runs_page  # the experiment (breadcrumb) and the parent run's name
    assert "Training runs" in runs_page
    assert not _headers(runs_page) & set(SEARCHED)  # the default view shows no param columns
    for trial in study.trials:
        child_page = _dom(f"{base}/runs/{trial.user_attrs['mlflow_run_id']}")
        assert f"trial-{trial.number}" in child_page
        assert "Parent run" in child_page and "browser-study" in child_page


@pytest.mark.slow
def test_printed_link_sorts_by_the_target_and_shows_the_searched_params(tracked: tuple[Path, int, str]) -> None:
    """Opened on the link ``sweep.run`` printed (``sweep.ui`` prints the same), the runs table shows the
    target and each searched param as columns, is sorted by the target, and lists the trials best first."""
    tmp_path, port, printed = tracked
    link = printed.replace("http://127.0.0.1:5000/", f"http://127.0.0.1:{port}/", 1)
    assert link != printed
    shown = run_main("sweep.ui", str(tmp_path / "b.yaml"), "--port", str(port), "--print-only", cwd=tmp_path)
    assert f"MLflow UI: {link}\n" in shown.stdout
    page = _dom(link)
    assert {"val_total_loss", *SEARCHED} <= _headers(page)
    ordered_by = set(re.findall(r'class="[^"]*\bis-ordered-by\b[^"]*"[^>]*col-id="([^"]+)"', page))
    assert ordered_by == {"metrics.`val_total_loss`"}
    # Rows, top to bottom: the trials by their val_total_loss, lowest (best) first, then the parent (no value).
    row_of = {run_id: int(i) for i, run_id in re.findall(r'row-index="(\d+)" row-id="([0-9a-f]+)"', page)}
    study = optuna.load_study(study_name="browser-study", storage=f"sqlite:///{tmp_path / '.sweep' / 'optuna.db'}")
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = [client.get_run(t.user_attrs["mlflow_run_id"]) for t in study.trials]
    best_first = sorted(runs, key=lambda r: r.data.metrics["val_total_loss"])
    assert [row_of.get(r.info.run_id) for r in best_first] == list(range(len(runs)))
    assert row_of.get(study.user_attrs["mlflow_parent_run_id"]) == len(runs)
