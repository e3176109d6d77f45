"""Signals always work (#26): SIGTERM or Ctrl-C ends every command within seconds in every phase — a user
module that blocks at import, a build that blocks (the preflight), the storage's retry waits, the report,
``sweep.evaluate``/``sweep.export --seeds``/``sweep.report`` — with one line, exit 130 and consistent
records; Ctrl-Z of a ``--workers`` coordinator stops its workers too, and ``fg`` continues them."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient
from sqlalchemy import exc

import sweep.storage.resilient
from sweep.core.interrupts import Interrupts
from sweep.storage.resilient import ResilientStorage, StorageDown
from tests.conftest import run_main, start_cli, tiny_study, write_yaml
from tests.support.agreement import check_agreement
from tests.support.pausing import Pauses, alive

PROMPT = 30  # seconds: "within a few seconds", with room for a loaded 2-core machine


def _locked() -> exc.OperationalError:
    return exc.OperationalError("UPDATE trials ...", {}, Exception("database is locked"))


# --- units --------------------------------------------------------------------------------------------


def test_active_is_the_installed_instance_and_interruptible_ends_a_command_with_130(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Code that is not handed the process's Interrupts finds it (:meth:`Interrupts.active`); outside any,
    a fresh one that nothing reaches. A command run by :func:`interruptible` ends on the first SIGTERM at
    once, wherever it is, with its one line and 130."""
    from sweep.core.interrupts import interruptible

    before = signal.getsignal(signal.SIGTERM)
    assert not Interrupts.active().requested
    outer = Interrupts()
    with outer.installed():
        assert Interrupts.active() is outer
    assert Interrupts.active() is not outer

    def command() -> int:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(60)  # the handler raises inside the sleep
        return 0

    started = time.monotonic()
    assert interruptible(command, "Interrupted: test.") == 130
    assert time.monotonic() - started < 10
    assert capsys.readouterr().err == "Interrupted: test.\n"
    assert signal.getsignal(signal.SIGTERM) == before  # put back


class _SignalInFirstWait:
    """``time`` for sweep.storage.resilient whose first ``sleep`` receives SIGTERM (the storage's first wait)."""

    def __init__(self) -> None:
        self.sent = False

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if not self.sent:
            self.sent = True
            os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(seconds)


def test_a_signal_ends_the_storage_retry_wait(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The storage is busy and a call waits to retry (budget 60 s): SIGTERM in the wait ends it at once with
    StorageDown ("until interrupted"), and the calls after it (closing the interrupted work) fail at once
    too. Before, the wait went on (here: until the storage answered again, 3 tries later)."""
    storage = ResilientStorage(f"sqlite:///{tmp_path / 'o.db'}", retry_s=60)
    calls = []

    def busy() -> str:
        calls.append(1)
        if len(calls) <= 3:
            raise _locked()
        return "answered"

    monkeypatch.setattr(sweep.storage.resilient, "time", _SignalInFirstWait())
    started = time.monotonic()
    with Interrupts().installed() as interrupts, pytest.raises(StorageDown, match="until interrupted"):
        storage.retrying("test", busy)
    assert interrupts.requested and len(calls) == 1 and time.monotonic() - started < 10
    with pytest.raises(StorageDown):
        storage.retrying("test", lambda: (_ for _ in ()).throw(_locked()))  # given up: at once


def test_after_a_signal_a_blip_is_ridden_out_and_an_outage_is_not_waited_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once interrupted, the writes that close the work still retry a blip (here two busy answers), but stop
    retrying an outage after AFTER_SIGNAL_S, not after the whole budget (60 s)."""
    monkeypatch.setattr(sweep.storage.resilient, "AFTER_SIGNAL_S", 1.0, raising=False)
    storage = ResilientStorage(f"sqlite:///{tmp_path / 'o.db'}", retry_s=60)
    calls = []

    def blip() -> str:
        calls.append(1)
        if len(calls) <= 2:
            raise _locked()
        return "answered"

    def down() -> None:
        raise _locked()

    with Interrupts().installed() as interrupts:
        os.kill(os.getpid(), signal.SIGTERM)  # recorded: not inside a raising phase
        assert interrupts.requested
        assert storage.retrying("test", blip) == "answered"
        started = time.monotonic()
        with pytest.raises(StorageDown, match="until interrupted"):
            storage.retrying("test", down)
        assert time.monotonic() - started < 10


# --- real processes -----------------------------------------------------------------------------------


def _wait_for(marker: Path, proc: subprocess.Popen[str], timeout: float = 240) -> None:
    """Until ``marker`` exists (the process reached the phase under test); fails if the process ended."""
    deadline = time.monotonic() + timeout
    while not marker.exists():
        if proc.poll() is not None:
            raise AssertionError(f"exited {proc.returncode} first: {proc.communicate()[1][-3000:]}")
        assert time.monotonic() < deadline, f"no {marker.name} in time"
        time.sleep(0.05)


def _terminate(proc: subprocess.Popen[str]) -> tuple[str, str]:
    """SIGTERM ``proc``; its stdout and stderr once it exited (within :data:`PROMPT` seconds)."""
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.communicate(timeout=PROMPT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError(f"still running {PROMPT} s after SIGTERM") from None


@pytest.mark.slow
@pytest.mark.parametrize("check", [True, False], ids=["--check", "run"])
@pytest.mark.parametrize("phase", ["import", "build"])
def test_sigterm_while_the_users_code_blocks_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, phase: str, check: bool
) -> None:
    """A user module that blocks while imported, or a problem whose build blocks (the preflight): SIGTERM
    ends ``sweep.run`` (``--check`` or a run) within seconds, exit 130, one line, no storage nor MLflow
    store written. Before, the signal waited for a safe point the blocked code never reached (``--check``
    hung 9 minutes)."""
    marker = tmp_path / "markers" / "blocked"
    marker.parent.mkdir()
    problem = "tests.support.sleeps_on_import:make" if phase == "import" else "tests.support.signal_problems:blocks"
    monkeypatch.setenv("SWEEP_TEST_MARKER" if phase == "import" else "SWEEP_TEST_BLOCK", str(marker))
    doc = tiny_study("blocked")
    doc["objective"]["problem"] = {"name": problem, "options": {}}
    write_yaml(tmp_path / "b.yaml", doc)
    proc = start_cli("sweep.run", "b.yaml", *(["--check"] if check else ["--no-progress"]), cwd=tmp_path)
    try:
        _wait_for(marker, proc)
        out, err = _terminate(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert err.splitlines() == ["Interrupted before the study started: nothing was run."], err
    assert out == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.yaml", "markers"]  # no .sweep, no mlflow.db


@pytest.mark.slow
def test_sigterm_during_the_report_closes_the_parent_killed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGTERM while the study's report is drawn (every trial told): the report is skipped with one line
    saying ``python -m sweep.report`` writes it, exit 130 promptly, the parent run closed KILLED and the
    trials consistent. Before, the signal waited for the whole report."""
    path = write_yaml(tmp_path / "r.yaml", tiny_study("report", study={"n_trials": 2, "pruner": "none"}))
    pauses = Pauses(tmp_path / "pauses", "report").apply(monkeypatch)
    proc = start_cli("sweep.run", str(path), "--no-progress", cwd=tmp_path)
    try:
        pauses.wait("report", [proc])
        _, err = _terminate(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    said = [line for line in err.splitlines() if "Interrupted" in line or line.startswith(("error", "warning"))]
    assert len(said) == 1 and "python -m sweep.report" in said[0], err
    study = optuna.load_study(study_name="report", storage=f"sqlite:///{tmp_path / '.sweep' / 'optuna.db'}")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert MlflowClient(uri).get_run(study.user_attrs["mlflow_parent_run_id"]).info.status == "KILLED"
    check_agreement(study, uri, 2)


@pytest.mark.slow
@pytest.mark.parametrize("command", ["evaluate", "export --seeds", "report"])
def test_sigterm_ends_the_other_commands_mid_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    """``sweep.evaluate`` and ``sweep.export --seeds`` held in their retraining's build, ``sweep.report``
    at the start of its report: SIGTERM ends each within seconds with one line and exit 130 (before: killed
    by the signal, status -15, nothing said), the study's records untouched."""
    doc = tiny_study("cmd", study={"n_trials": 2, "pruner": "none"})
    doc["objective"]["problem"] = {"name": "tests.support.signal_problems:blocks", "options": {}}
    path = write_yaml(tmp_path / "c.yaml", doc)
    assert run_main("sweep.run", str(path), "--no-report", cwd=tmp_path).returncode == 0
    marker = tmp_path / "markers" / "blocked"
    marker.parent.mkdir()
    if command == "report":
        pauses = Pauses(tmp_path / "pauses", "report").apply(monkeypatch)
        marker = pauses.folder / "report.paused"
        args = ["sweep.report", str(path)]
    else:
        monkeypatch.setenv("SWEEP_TEST_BLOCK", str(marker))
        args = ["sweep.evaluate", str(path), "--seeds", "2", "--no-progress"]
        if command.startswith("export"):
            args = ["sweep.export", str(path), "--seeds", "2", "-o", str(tmp_path / "best.yaml")]
    proc = start_cli(*args, cwd=tmp_path)
    try:
        _wait_for(marker, proc)
        _, err = _terminate(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert len(err.splitlines()) == 1 and err.startswith("Interrupted"), err
    study = optuna.load_study(study_name="cmd", storage=f"sqlite:///{tmp_path / '.sweep' / 'optuna.db'}")
    assert "sweep.evaluation" not in study.user_attrs
    check_agreement(study, f"sqlite:///{tmp_path / 'mlflow.db'}", 2)


def _state(pid: int) -> str:
    """The process's state letter in /proc (``T``: stopped)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def _until(condition: object, proc: subprocess.Popen[str], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert proc.poll() is None, f"the coordinator exited: {proc.communicate()[1][-3000:]}"
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


@pytest.mark.slow
def test_ctrl_z_stops_the_workers_with_their_coordinator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGTSTP (Ctrl-Z) to the coordinator of ``--workers 3`` while its two workers are held in a trial: the
    coordinator and both workers (each in a session of its own, which the terminal's signal does not
    reach) are stopped; SIGCONT to the coordinator (``fg``) continues them, and the study ends with
    n_trials, Optuna and MLflow agreeing. Before, only the coordinator stopped."""
    calm = {"heartbeat_interval": 1, "grace_period": 120, "pruner": "none", "n_trials": 4}
    path = write_yaml(tmp_path / "z.yaml", tiny_study("ctrl-z", study=calm))
    # The coordinator is held after its first trial (so that it cannot run them all while the workers
    # start), each worker inside its first trial's training.
    pauses = Pauses(tmp_path / "pauses", "epoch:1@workers", "closed@main", each=True).apply(monkeypatch)
    coordinator = start_cli("sweep.run", str(path), "--workers", "3", "--no-report", "--no-progress", cwd=tmp_path)
    try:
        workers = pauses.wait_each("epoch:1@workers", 2, [coordinator])
        pauses.wait_each("closed@main", 1, [coordinator])
        coordinator.send_signal(signal.SIGTSTP)
        everyone = [coordinator.pid, *workers]
        _until(lambda: all(_state(p) == "T" for p in everyone), coordinator, "not all stopped")
        coordinator.send_signal(signal.SIGCONT)
        _until(lambda: all(_state(p) != "T" for p in everyone), coordinator, "not all continued")
        for pid in workers:
            pauses.release("epoch:1@workers", pid, [coordinator])
        pauses.release("closed@main", coordinator.pid, [coordinator])
        _, err = coordinator.communicate(timeout=240)
    finally:
        if coordinator.poll() is None:
            coordinator.kill()
        for pid in locals().get("workers", []):
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    assert coordinator.returncode == 0, err
    study = optuna.load_study(study_name="ctrl-z", storage=f"sqlite:///{tmp_path / '.sweep' / 'optuna.db'}")
    check_agreement(study, f"sqlite:///{tmp_path / 'mlflow.db'}", 4)
