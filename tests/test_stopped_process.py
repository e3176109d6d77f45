"""A process stopped in the middle of a trial (SIGSTOP: a suspended job, a frozen VM) for longer than the
grace period: another process fails its trial as stale and re-queues it; when the stopped process goes on,
it writes nothing more to that trial or its run, and says so once."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient

from tests.conftest import start_cli, tiny_study, write_yaml
from tests.support.agreement import check_agreement
from tests.support.pausing import Pauses


def _record(client: MlflowClient, run_id: str) -> dict:
    """Everything a closed run shows: status, times, tags, params, every metric's whole history, files."""
    run = client.get_run(run_id)
    history = {
        k: [(m.step, m.value, m.timestamp) for m in client.get_metric_history(run_id, k)] for k in run.data.metrics
    }
    files = sorted(f.path for f in client.list_artifacts(run_id))
    info = (run.info.status, run.info.start_time, run.info.end_time)
    return {"info": info, "tags": run.data.tags, "params": run.data.params, "history": history, "files": files}


def _trial(study: optuna.Study, number: int) -> tuple:
    t = study.trials[number]
    return t.state, t.datetime_complete, t.user_attrs, t.intermediate_values


@pytest.mark.slow
def test_a_resumed_process_leaves_the_run_another_closed_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Held inside trial 0 at epoch 2 and stopped; a second process fails trial 0 as stale (no heartbeat for
    grace_period), re-queues it and ends the study. Resumed, the first process finds its trial ended: the
    closed run keeps its status, end time, tags, metrics and files, the trial its attributes and values; one
    line says so, exit 0, and Optuna and MLflow agree."""
    doc = tiny_study("stopped", study={"n_trials": 2, "heartbeat_interval": 1, "grace_period": 2, "pruner": "none"})
    doc["objective"]["epochs"] = 8
    path = write_yaml(tmp_path / "s.yaml", doc)
    storage = f"sqlite:///{tmp_path / '.sweep' / 'optuna.db'}"
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    pauses = Pauses(tmp_path / "pauses", "epoch:2").apply(monkeypatch)  # only the first process pauses there
    first = start_cli("sweep.run", str(path), "--no-report", "--no-progress", cwd=tmp_path)
    other = None
    try:
        pid = pauses.wait("epoch:2", [first])  # inside trial 0: epochs 0-2 written
        os.kill(pid, signal.SIGSTOP)  # its heartbeat thread stops too
        other = start_cli("sweep.run", str(path), "--no-report", "--no-progress", cwd=tmp_path)
        _, other_err = other.communicate(timeout=180)  # fails trial 0 as stale, re-queues it, ends the study
        assert other.returncode == 0, other_err
        study = optuna.load_study(study_name="stopped", storage=storage)
        assert study.trials[0].state.name == "FAIL", other_err
        run_id = study.trials[0].user_attrs["mlflow_run_id"]
        closed, trial = _record(client, run_id), _trial(study, 0)
        assert closed["info"][0] == "FAILED" and "no heartbeat" in closed["tags"]["sweep.fail_reason"]
        assert all(step <= 2 for steps in closed["history"].values() for step, _, _ in steps)
        os.kill(pid, signal.SIGCONT)
        pauses.release("epoch:2", procs=[first])
        _, err = first.communicate(timeout=120)
    finally:
        for proc in (first, other):
            if proc is not None and proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
                proc.kill()
    assert first.returncode == 0, err
    assert "Traceback" not in err, err
    study = optuna.load_study(study_name="stopped", storage=storage)
    assert _record(client, run_id) == closed  # no metric past epoch 2, same end time, same reason
    assert _trial(study, 0) == trial
    said = [line for line in err.splitlines() if "trial 0" in line]
    assert len(said) == 1 and "ended (FAIL) by another process" in said[0], err
    assert "wrote nothing more to it" in said[0]
    check_agreement(study, f"sqlite:///{tmp_path / 'mlflow.db'}", 2)
