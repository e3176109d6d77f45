"""A trial that fails explains itself: its whole reason, its traceback in MLflow, and a run in which
every trial failed does not look like a success."""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient

from tests.conftest import ROOT, _answers, _free_port, run_main, tiny_study, write_yaml


def test_failed_trials_keep_reason_and_traceback_and_an_all_failed_run_exits_1(tmp_path: Path) -> None:
    doc = tiny_study("fails", study={"n_trials": 2})
    doc["objective"]["problem"] = {"name": "tests.support.fault_problems:fails_in_training"}
    write_yaml(tmp_path / "f.yaml", doc)
    out = run_main("sweep.run", "f.yaml", "--no-report", "--verbose", cwd=tmp_path)
    assert out.returncode == 1
    assert "error: all 2 trial(s) run now failed; each run's error.txt in MLflow has the traceback" in out.stderr
    assert "Traceback (most recent call last)" in out.stderr  # --verbose prints it
    study = optuna.load_study(study_name="fails", storage=f"sqlite:///{tmp_path / '.sweep' / 'optuna.db'}")
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    for trial in study.trials:
        assert trial.state.name == "FAIL"
        reason = trial.user_attrs["fail_reason"]
        assert reason == "ValueError: the layer went wrong\nsecond line: the detail that matters"  # every line
        run = client.get_run(trial.user_attrs["mlflow_run_id"])
        assert run.data.tags["sweep.fail_reason"] == reason and run.info.status == "FAILED"
        text = Path(client.download_artifacts(run.info.run_id, "error.txt", str(tmp_path / str(trial.number))))
        error = text.read_text()
        assert error.startswith("Traceback (most recent call last)") and "fault_problems.py" in error
        assert error.rstrip().endswith("second line: the detail that matters")


def test_without_verbose_a_failure_is_one_line(tmp_path: Path) -> None:
    doc = tiny_study("quiet", study={"n_trials": 1})
    doc["objective"]["problem"] = {"name": "tests.support.fault_problems:fails_in_training"}
    write_yaml(tmp_path / "f.yaml", doc)
    out = run_main("sweep.run", "f.yaml", "--no-report", cwd=tmp_path)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "ValueError: the layer went wrong" in out.stderr


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.slow
def test_sigterm_stops_the_ui_and_its_server(tmp_path: Path) -> None:
    """SIGTERM to ``python -m sweep.ui`` (as a script or a service manager sends it) stops the MLflow
    server it started: nothing listens on the port afterwards and no process of its group is left."""
    import subprocess

    write_yaml(tmp_path / "s.yaml", tiny_study("ui", study={"n_trials": 1}))
    assert run_main("sweep.run", "s.yaml", "--no-report", cwd=tmp_path).returncode == 0
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_DISABLE_TELEMETRY": "true"}
    ui = subprocess.Popen(
        [sys.executable, "-m", "sweep.ui", "s.yaml", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own group, so the test can find everything it started
    )
    try:
        assert _answers(ui, port), "the UI did not start"
        ui.send_signal(signal.SIGTERM)
        assert ui.wait(timeout=30) == 0
        deadline = time.monotonic() + 15
        while _listening(port) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _listening(port)
        leftovers = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _group(p) == ui.pid]
        assert leftovers == []
    finally:
        if ui.poll() is None:
            os.killpg(ui.pid, signal.SIGKILL)


def _group(proc: Path) -> int | None:
    try:
        return int((proc / "stat").read_text().rsplit(")", 1)[1].split()[2])
    except (OSError, IndexError, ValueError):
        return None
