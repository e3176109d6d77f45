"""Several worker processes on one study: SQLite locally, PostgreSQL for real, and a real SIGKILL."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import uuid
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient

from tests.conftest import (
    PG_URL,
    interrupt,
    postgres_error,
    run_cli,
    start_cli,
    tiny_study,
    write_yaml,
)
from tests.support.pausing import Pauses, alive
from tests.support.pgtools import pg_study

PG = PG_URL


# Nothing is killed in these tests: beat often (a worker past its share waits one interval at a time)
# but allow a long silence, so a worker starved by a loaded machine is not taken for dead.
CALM = {"heartbeat_interval": 1, "grace_period": 120}

needs_postgres = pytest.mark.skipif(bool(postgres_error()), reason=postgres_error() or "")


def _children(study: optuna.Study, tmp_path: Path) -> dict[str, object]:
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name(study.study_name)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("sweep.role") == "parent"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    return {r.info.run_id: r for r in runs if r.data.tags.get("sweep.role") == "trial"}


def _assert_exact(study: optuna.Study, tmp_path: Path, n: int) -> None:
    """Exactly n finished trials, numbered 0..n-1 once each, no failure, one child run per trial."""
    assert [t.number for t in study.trials] == list(range(n))
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    children = _children(study, tmp_path)
    assert sorted(children) == sorted(t.user_attrs["mlflow_run_id"] for t in study.trials)


@pytest.mark.slow
def test_local_workers_on_sqlite(tmp_path: Path) -> None:
    """--workers 2 on the default SQLite storage: exactly n_trials, one MLflow child run each."""
    doc = tiny_study("local-workers", study={"n_trials": 5, "pruner": "none", **CALM})
    path = write_yaml(tmp_path / "w.yaml", doc)
    result = run_cli("sweep.run", str(path), "--workers", "2", "--no-report", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    ran = [int(n) for n in re.findall(r"worker \d: (\d+) trial\(s\) run", result.stderr)]
    assert len(ran) == 1 and ran[0] < 5, result.stderr  # the worker beside the coordinator, which trains too
    assert "(5 complete, 0 pruned, 0 failed; 5 run now by this command)" in result.stdout
    study = optuna.load_study(study_name="local-workers", storage=f"sqlite:///{tmp_path / '.sweep' / 'optuna.db'}")
    _assert_exact(study, tmp_path, 5)
    # Each process seeds its sampler from its first trial's number: the same seed would replay points.
    assert len({tuple(sorted(t.params.items())) for t in study.trials}) == 5


@pytest.mark.slow
@needs_postgres
def test_four_workers_on_postgres(tmp_path: Path) -> None:
    """4 workers × 8 trials on the real PostgreSQL: exactly 8 finished trials, no duplicates, no errors."""
    name = f"pg4-{uuid.uuid4().hex[:8]}"
    path = write_yaml(
        tmp_path / "w.yaml", tiny_study(name, study={"n_trials": 8, "storage": PG, "pruner": "none", **CALM})
    )
    try:
        result = run_cli("sweep.run", str(path), "--workers", "4", "--no-report", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert "warning" not in result.stderr and "failed" not in result.stderr
        _assert_exact(pg_study(name, PG), tmp_path, 8)
    finally:
        optuna.delete_study(study_name=name, storage=PG)


@pytest.mark.slow
@needs_postgres
def test_killed_worker_is_recovered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGKILL one worker mid-trial: its trial goes FAIL (heartbeat) in Optuna and FAILED in MLflow, is
    re-queued and run by another worker, and the study still reaches n_trials finished trials."""
    name = f"pgkill-{uuid.uuid4().hex[:8]}"
    study_cfg = {"n_trials": 6, "storage": PG, "pruner": "none", "heartbeat_interval": 1, "grace_period": 2}
    path = write_yaml(tmp_path / "k.yaml", tiny_study(name, study=study_cfg))
    # A worker held inside its training, the coordinator after its first trial (so that it cannot run them
    # all while the workers start): the worker is killed there, then the coordinator goes on.
    pauses = Pauses(tmp_path / "pauses", "epoch:1@workers", "closed@main").apply(monkeypatch)
    coordinator = start_cli("sweep.run", str(path), "--workers", "3", "--no-report", "--no-progress", cwd=tmp_path)
    try:
        os.kill(pauses.wait("epoch:1@workers", [coordinator]), signal.SIGKILL)
        pauses.wait("closed@main", [coordinator])
        pauses.release("closed@main", procs=[coordinator])
        _, err = coordinator.communicate(timeout=240)
        assert coordinator.returncode == 0, err
        assert "exited with code -9" in err

        study = pg_study(name, PG)
        finished = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        failed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
        states = [(t.number, t.state.name, t.system_attrs.get("failed_trial")) for t in study.trials]
        assert len(finished) == 6, (states, err)  # claims: never one past n_trials
        assert len(failed) == 1, (states, err)
        dead = failed[0]
        retried = [t for t in finished if t.system_attrs.get("failed_trial") == dead.number]
        assert len(retried) == 1 and retried[0].params == dead.params, (states, err)
        children = _children(study, tmp_path)
        assert len(children) == len(study.trials)
        dead_run = children[dead.user_attrs["mlflow_run_id"]]
        assert dead_run.info.status == "FAILED" and "no heartbeat" in dead_run.data.tags["sweep.fail_reason"]
    finally:
        if coordinator.poll() is None:
            coordinator.kill()
        optuna.delete_study(study_name=name, storage=PG)


@pytest.mark.slow
def test_a_worker_that_crashes_is_topped_up_by_the_coordinator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker beside the coordinator dies at its first trial (a segfault as the coordinator sees it):
    the coordinator says so, fails its trial once stale, runs the rest and exits 0 with n_trials finished."""
    study_cfg = {"n_trials": 6, "pruner": "none", "heartbeat_interval": 1, "grace_period": 2}
    doc = tiny_study("crash", study=study_cfg)
    doc["objective"]["problem"] = {"name": "tests.support.fault_problems:crashes_in_workers"}
    path = write_yaml(tmp_path / "c.yaml", doc)
    # The coordinator is held after its first trial until the worker has reached its own and died.
    pauses = Pauses(tmp_path / "pauses", "closed@main", "asked@workers").apply(monkeypatch)
    coordinator = start_cli("sweep.run", str(path), "--workers", "2", "--no-report", "--no-progress", cwd=tmp_path)
    try:
        worker = pauses.wait("asked@workers", [coordinator])
        pauses.release("asked@workers", procs=[coordinator])
        while alive(worker):
            assert coordinator.poll() is None
            time.sleep(0.05)
        pauses.wait("closed@main", [coordinator])
        pauses.release("closed@main", procs=[coordinator])
        _, err = coordinator.communicate(timeout=240)
    finally:
        if coordinator.poll() is None:
            coordinator.kill()
    assert coordinator.returncode == 0, err
    assert "warning: worker 1 exited with code 3" in err
    study = optuna.load_study(study_name="crash", storage=f"sqlite:///{tmp_path / '.sweep' / 'optuna.db'}")
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials) == 6
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    parent = client.search_runs([client.get_experiment_by_name("crash").experiment_id], "tags.`sweep.role` = 'parent'")
    assert [r.info.status for r in parent] == ["FINISHED"]


@pytest.mark.slow
def test_ctrl_c_reaches_every_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGINT to the coordinator of --workers 2: it is forwarded, both running trials (the coordinator's
    and its worker's) end FAIL/FAILED,
    the parent run KILLED, the coordinator exits 130 with no worker left (resuming: the single-process test)."""
    doc = tiny_study("ctrlc-workers", study={"n_trials": 2, "pruner": "none", **CALM})
    path = write_yaml(tmp_path / "c.yaml", doc)
    pauses = Pauses(tmp_path / "pauses", "epoch:1", each=True).apply(monkeypatch)
    coordinator = start_cli("sweep.run", str(path), "--workers", "2", "--no-report", "--no-progress", cwd=tmp_path)
    try:
        pauses.wait_each("epoch:1", 2, [coordinator])  # both processes are training
        workers = subprocess.run(["pgrep", "-P", str(coordinator.pid)], capture_output=True, text=True)
        pids = [int(p) for p in workers.stdout.split()]
        assert len(pids) == 1  # --workers 2: the coordinator trains too
        err, took = interrupt(coordinator)
    finally:
        if coordinator.poll() is None:
            coordinator.kill()
    assert coordinator.returncode in (130, -signal.SIGINT) and took < 30, err
    assert "Interrupted" in err and "warning" not in err
    for pid in pids:  # no worker left behind
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    study = optuna.load_study(study_name="ctrlc-workers", storage=f"sqlite:///{tmp_path / '.sweep' / 'optuna.db'}")
    stopped = [t for t in study.trials if t.state.name != "WAITING"]  # each queued again (WAITING)
    assert [t.state.name for t in stopped] == ["FAIL", "FAIL"] and len(study.trials) == 4
    assert all("interrupted" in t.user_attrs["fail_reason"] for t in stopped)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert {client.get_run(t.user_attrs["mlflow_run_id"]).info.status for t in stopped} == {"FAILED"}
    parent = study.user_attrs["mlflow_parent_run_id"]
    assert client.get_run(parent).info.status == "KILLED"
