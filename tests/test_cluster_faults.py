"""What real clusters do, on real processes: a kill at any instant of a trial, a worker lost between
trials, a re-run within the grace period, signals from scripts and lost terminals, storage blips and
outages on the real PostgreSQL, several machines started at the same instant."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient

from sweep.core.faultpoints import POINTS
from tests.conftest import ROOT, postgres_error, run_cli, start_cli, tiny_study, write_yaml
from tests.support.agreement import check_agreement
from tests.support.chaos import chaos
from tests.support.pausing import Pauses, alive
from tests.support.pgtools import database as _database
from tests.support.pgtools import outage as _outage
from tests.support.pgtools import pg as _pg
from tests.support.pgtools import pg_study
from tests.support.pgtools import until_refused as _until_refused

# Kills in these tests: beat every second, call a process dead after 2 s without a beat.
FAST = {"heartbeat_interval": 1, "grace_period": 2, "pruner": "none"}
needs_postgres = pytest.mark.skipif(bool(postgres_error()), reason=postgres_error() or "")


def _sqlite(tmp_path: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / '.sweep' / 'optuna.db'}")


@pytest.mark.slow
def test_a_kill_at_any_instant_is_recovered_by_the_next_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGKILL at each named instant of a trial's life in turn (each run killed at the next point, having
    recovered what the previous one left), then the same command once more: the study ends with exactly
    n_trials finished, no trial or run RUNNING, every failure explained, the parent run FINISHED."""
    path = write_yaml(tmp_path / "k.yaml", tiny_study("k", study={"n_trials": 3, **FAST}))
    for point in POINTS:
        pauses = Pauses(tmp_path / "pauses", point).apply(monkeypatch)
        proc = start_cli("sweep.run", str(path), "--no-report", "--no-progress", cwd=tmp_path)
        try:
            pauses.wait(point, [proc])
        finally:
            proc.kill()
            proc.communicate()
    monkeypatch.delenv("SWEEP_PAUSE_AT")
    again = run_cli("sweep.run", str(path), "--no-report", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "Traceback" not in again.stderr
    study = _sqlite(tmp_path, "k")
    check_agreement(study, f"sqlite:///{tmp_path / 'mlflow.db'}", 3)
    parent = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(study.user_attrs["mlflow_parent_run_id"])
    assert parent.info.status == "FINISHED"
    killed = [t for t in study.trials if t.state.name == "FAIL"]  # asked, beat, run_created, linked, epoch:1
    assert len(killed) == 5 and all("heartbeat" in t.user_attrs["fail_reason"] for t in killed)


@pytest.mark.slow
def test_a_rerun_within_the_grace_period_waits_for_the_dead_trial(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed mid-trial and re-run at once (the dead trial still looks alive): the re-run runs what it
    can, waits until the trial is stale, fails and replaces it, and ends with n_trials, exit 0."""
    study_cfg = {"n_trials": 3, "heartbeat_interval": 1, "grace_period": 6, "pruner": "none"}
    path = write_yaml(tmp_path / "g.yaml", tiny_study("g", study=study_cfg))
    pauses = Pauses(tmp_path / "pauses", "linked").apply(monkeypatch)
    proc = start_cli("sweep.run", str(path), "--no-report", "--no-progress", cwd=tmp_path)
    try:
        pauses.wait("linked", [proc])
    finally:
        proc.kill()
        proc.communicate()
    again = run_cli("sweep.run", str(path), "--no-report", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "(3 complete, 0 pruned, 1 failed" in again.stdout and "running" not in again.stdout.split("\n")[0]
    check_agreement(_sqlite(tmp_path, "g"), f"sqlite:///{tmp_path / 'mlflow.db'}", 3)


@pytest.mark.slow
def test_a_worker_lost_between_trials_is_topped_up_by_the_living(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--workers 2, the worker SIGKILLed between two trials (it holds no trial): the coordinator (which
    trains too) runs the rest, reports the dead worker and exits 0 with exactly n_trials finished."""
    study_cfg = {"n_trials": 8, "heartbeat_interval": 1, "grace_period": 30, "pruner": "none"}
    path = write_yaml(tmp_path / "w.yaml", tiny_study("w", study=study_cfg))
    # Each process stops after its first trial, so the coordinator cannot run them all before the worker starts.
    pauses = Pauses(tmp_path / "pauses", "closed", each=True).apply(monkeypatch)
    coordinator = start_cli("sweep.run", str(path), "--workers", "2", "--no-report", "--no-progress", cwd=tmp_path)
    try:
        pids = pauses.wait_each("closed", 2, [coordinator])
        (worker,) = [pid for pid in pids if pid != coordinator.pid]
        os.kill(worker, signal.SIGKILL)
        pauses.release("closed", coordinator.pid, [coordinator])
        _, err = coordinator.communicate(timeout=240)
    finally:
        if coordinator.poll() is None:
            coordinator.kill()
    assert coordinator.returncode == 0, err
    assert re.search(r"worker \d exited with code -9", err)
    check_agreement(_sqlite(tmp_path, "w"), f"sqlite:///{tmp_path / 'mlflow.db'}", 8)


def _shell(script: str, cwd: Path) -> subprocess.Popen[str]:
    """A non-interactive shell (no job control: its background jobs ignore SIGINT), as scripts run."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_DISABLE_TELEMETRY": "true"}
    return subprocess.Popen(
        ["bash", "-c", script], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _worker_pids(coordinator: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(coordinator)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _gone(pids: list[int], timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(alive(p) for p in pids):
            return True
        time.sleep(0.2)
    return False


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "workers"), [("TERM", 2), ("HUP", 1)])
def test_kill_from_a_script_stops_a_background_run(tmp_path: Path, sig: str, workers: int) -> None:
    """``sweep.run … --workers 2 &`` then ``kill $!`` from a non-interactive shell (workers used to inherit
    SIGINT ignored and run their whole share), or SIGHUP (the terminal closed), once every process is in
    its trial's training: the run stops within seconds, its trials FAIL "interrupted", the parent run
    KILLED, exit 130."""
    doc = tiny_study("bg", study={"n_trials": 2, "heartbeat_interval": 1, "grace_period": 120, "pruner": "none"})
    path = write_yaml(tmp_path / "bg.yaml", doc)
    pauses = Pauses(tmp_path / "pauses", "epoch:1", each=True)
    env = " ".join(f"{k}={v}" for k, v in pauses.env().items())
    shell = _shell(
        f"{env} {sys.executable} -m sweep.run {path} --workers {workers} --no-report --no-progress & pid=$!; "
        f"while [ $(ls {pauses.folder} | grep -c paused) -lt {workers} ]; do sleep 0.1; done; "
        f"kill -{sig} $pid; wait $pid; echo rc=$?",
        tmp_path,
    )
    try:
        out, err = shell.communicate(timeout=240)
    finally:
        if shell.poll() is None:
            shell.kill()
    assert "rc=130" in out, (out, err)
    assert "Traceback" not in err
    study = _sqlite(tmp_path, "bg")
    stopped = [t for t in study.trials if t.state.name != "WAITING"]  # each queued again (WAITING)
    assert [t.state.name for t in stopped] == ["FAIL"] * workers and len(study.trials) == 2 * workers
    assert all("interrupted" in t.user_attrs["fail_reason"] for t in stopped)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert client.get_run(study.user_attrs["mlflow_parent_run_id"]).info.status == "KILLED"


@pytest.mark.slow
def test_workers_die_with_a_killed_coordinator_and_a_rerun_finishes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kill -9 of the coordinator while both processes train: its workers notice within seconds and stop
    (their trials FAIL, runs FAILED); the same command again finishes the study and closes the parent
    run FINISHED."""
    doc = tiny_study("orphan", study={"n_trials": 3, **FAST})
    path = write_yaml(tmp_path / "o.yaml", doc)
    pauses = Pauses(tmp_path / "pauses", "epoch:1", each=True).apply(monkeypatch)
    coordinator = start_cli("sweep.run", str(path), "--workers", "2", "--no-report", "--no-progress", cwd=tmp_path)
    try:
        pauses.wait_each("epoch:1", 2, [coordinator])
        workers = _worker_pids(coordinator.pid)
        assert len(workers) == 1  # --workers 2: the coordinator and one more
        coordinator.kill()
        coordinator.communicate()
        assert _gone(workers), "workers outlived their coordinator"
    finally:
        if coordinator.poll() is None:
            coordinator.kill()
    monkeypatch.delenv("SWEEP_PAUSE_AT")
    again = run_cli("sweep.run", str(path), "--no-report", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    study = _sqlite(tmp_path, "orphan")
    check_agreement(study, f"sqlite:///{tmp_path / 'mlflow.db'}", 3)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert client.get_run(study.user_attrs["mlflow_parent_run_id"]).info.status == "FINISHED"


# --- PostgreSQL: outages, blips, several machines ---------------------------------------------------


def _wait_finished(url: str, name: str, n: int, proc: subprocess.Popen[str], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        try:
            study = pg_study(name, url)
            if sum(t.state.is_finished() for t in study.get_trials(deepcopy=False)) >= n:
                return
        except KeyError:
            pass
        time.sleep(0.3)


@pytest.mark.slow
@needs_postgres
def test_a_storage_blip_and_a_short_outage_lose_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """During --workers 2 on PostgreSQL: every connection dropped once (a blip) while both processes
    train, later connections refused for 8 s while both are between trials: every call is retried; the
    study ends with exactly n_trials, exit 0, notes, no traceback."""
    with _database() as db:
        url = _pg(db)
        doc = tiny_study("blip", study={"n_trials": 8, "storage": url, "storage_retry": 60, **FAST, "grace_period": 30})
        path = write_yaml(tmp_path / "b.yaml", doc)
        pauses = Pauses(tmp_path / "pauses", "epoch:1", "closed", each=True).apply(monkeypatch)
        proc = start_cli("sweep.run", str(path), "--workers", "2", "--no-report", "--no-progress", cwd=tmp_path)
        try:
            for point, seconds in (("epoch:1", 0), ("closed", 8)):
                pids = pauses.wait_each(point, 2, [proc])
                down = threading.Thread(target=_outage, args=(db, seconds))
                down.start()
                if seconds:
                    _until_refused(url)
                else:
                    down.join()  # every connection dropped
                for pid in pids:
                    pauses.release(point, pid, [proc])
            down.join()
            _, err = proc.communicate(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 0, err
        assert "Traceback" not in err and len(err.strip().splitlines()) <= 30, err  # was: 762 lines, 20 tracebacks
        assert "unreachable" in err and "back after" in err
        said = ("note: Optuna storage", "worker ", "[I ", "[W ")  # each process: down once, back once per event
        # ... and, when the coordinator's last trial ends before the worker's, that it waits for the other one.
        waits = re.compile(r"note: \d+ trial\(s\) running elsewhere may finish the study; waiting")
        assert all(line.startswith(said) or waits.match(line) for line in err.strip().splitlines()), err
        check_agreement(pg_study("blip", url), f"sqlite:///{tmp_path / 'mlflow.db'}", 8)


@pytest.mark.slow
@needs_postgres
def test_a_worker_starting_during_an_outage_waits_for_the_storage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker of --workers 2 opens the storage while the database refuses connections (its coordinator
    opened the study a moment before): it waits like any call, then runs trials; nobody exits 1 (CI once
    saw the worker refused at its first connection, while the coordinator finished the study alone)."""
    with _database() as db:
        url = _pg(db)
        doc = tiny_study("late", study={"n_trials": 4, "storage": url, "storage_retry": 60, **FAST, "grace_period": 30})
        path = write_yaml(tmp_path / "l.yaml", doc)
        # The worker held before its first connection, the coordinator inside its first trial: neither
        # can finish the study before the outage; the worker held again inside a trial of its own.
        points = ("opening@workers", "epoch:1@main", "epoch:1@workers")
        pauses = Pauses(tmp_path / "pauses", *points).apply(monkeypatch)
        proc = start_cli("sweep.run", str(path), "--workers", "2", "--no-report", "--no-progress", cwd=tmp_path)
        try:
            pauses.wait("opening@workers", [proc])
            pauses.wait("epoch:1@main", [proc])
            down = threading.Thread(target=_outage, args=(db, 6))
            down.start()
            _until_refused(url)
            pauses.release("opening@workers", procs=[proc])
            # The coordinator holds again inside its next trial, so it cannot run every trial left while the
            # worker opens (CI once saw "worker 1: 0 trial(s) run": the coordinator had finished the study).
            pauses.arm("epoch:1@main")
            pauses.release("epoch:1@main", procs=[proc])
            down.join()
            pauses.wait("epoch:1@workers", [proc])  # it went on to train, not only to wait
            pauses.wait("epoch:1@main", [proc])
            pauses.release("epoch:1@workers", procs=[proc])
            pauses.release("epoch:1@main", procs=[proc])
            _, err = proc.communicate(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 0, err
        assert "exited with code" not in err and "cannot open" not in err and "Traceback" not in err, err
        ran = re.search(r"worker 1: (\d+) trial\(s\) run", err)
        assert ran and int(ran.group(1)) >= 1, err
        check_agreement(pg_study("late", url), f"sqlite:///{tmp_path / 'mlflow.db'}", 4)


@pytest.mark.slow
@needs_postgres
def test_an_outage_past_the_retry_budget_is_one_line_and_a_rerun_recovers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Refused for longer than study.storage_retry while both processes are between trials: each says
    so in one line, exit 1; once the database is back the same command ends the study with n_trials and
    everything closed."""
    with _database() as db:
        url = _pg(db)
        doc = tiny_study("out", study={"n_trials": 6, "storage": url, "storage_retry": 3, **FAST})
        path = write_yaml(tmp_path / "o.yaml", doc)
        pauses = Pauses(tmp_path / "pauses", "closed", each=True).apply(monkeypatch)
        proc = start_cli("sweep.run", str(path), "--workers", "2", "--no-report", "--no-progress", cwd=tmp_path)
        try:
            pids = pauses.wait_each("closed", 2, [proc])
            down = threading.Thread(target=_outage, args=(db, 12))
            down.start()
            _until_refused(url)
            for pid in pids:
                pauses.release("closed", pid, [proc])
            _, err = proc.communicate(timeout=120)
            down.join()
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 1, err
        assert "Traceback" not in err, err
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        # Each process: one "unreachable for" line; or, for the coordinator (the storage back by then),
        # how short the study is.
        assert sum("unreachable for" in e for e in errors) >= 2, err
        assert all("unreachable for" in e or "finished trials after worker(s)" in e for e in errors), err
        monkeypatch.delenv("SWEEP_PAUSE_AT")
        again = run_cli("sweep.run", str(path), "--no-report", cwd=tmp_path)
        assert again.returncode == 0, again.stderr
        check_agreement(pg_study("out", url), f"sqlite:///{tmp_path / 'mlflow.db'}", 6)


@pytest.mark.slow
@needs_postgres
def test_four_machines_started_at_once_share_no_parameter_set(tmp_path: Path) -> None:
    """The several-machines recipe (docs/howto/scale-out.md): 4 independent processes started at the same instant on one
    PostgreSQL study with the random sampler: no parameter set twice, exactly n_trials finished."""
    with _database() as db:
        url = _pg(db)
        doc = tiny_study("many", study={"n_trials": 12, "storage": url, "grace_period": 60, "pruner": "none"})
        path = write_yaml(tmp_path / "m.yaml", doc)
        procs = [start_cli("sweep.run", str(path), "--no-report", "--no-progress", cwd=tmp_path) for _ in range(4)]
        results = [p.communicate(timeout=300) for p in procs]
        assert [p.returncode for p in procs] == [0] * 4, [e for _, e in results]
        study = pg_study("many", url)
        check_agreement(study, f"sqlite:///{tmp_path / 'mlflow.db'}", 12)
        assert len({tuple(sorted(t.params.items())) for t in study.trials}) == len(study.trials) == 12
        ran = [int(re.search(r"; (\d+) run now", out).group(1)) for out, _ in results]
        assert sum(ran) == 12, ran  # each counts its own trials


@pytest.mark.slow
@needs_postgres
def test_chaos_machines_killed_at_random_and_a_storage_outage(tmp_path: Path) -> None:
    """4 processes on one PostgreSQL study, 3 SIGKILLs at random instants (each job restarted), one 10 s
    outage: exactly n_trials finished, nothing RUNNING, every failure explained, no parameter set twice
    (``python -m tests.support.chaos`` runs a bigger one for the figures in docs/explanation/faults.md)."""
    figures = chaos(tmp_path, trials=12, processes=4, kills=3, outage_s=10.0, seed=1)
    assert figures["kills"] == 3  # each landed inside a trial, which failed and was re-queued
    assert figures["failed_trials"] >= 3 and figures["requeued"] >= 3, figures
