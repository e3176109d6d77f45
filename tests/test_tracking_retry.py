"""A tracking server that goes away in the middle of a trial (issue #26): a real ``mlflow server``, stopped
(SIGSTOP: it never answers), killed and started again, while a real ``sweep.run`` trains.

Before: MLflow's own retries held the trial some 13 minutes with no output, its heartbeats beating (no other
process could take it over), SIGTERM unheeded. Now: ``study.tracking_retry`` bounds the wait, with one note
when tracking goes and one when it is back; past it the trial fails with the reason, is re-queued, and the
process exits 1 with one line; a signal ends the wait at once."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import optuna
import pytest
from mlflow import MlflowClient

from tests.conftest import ROOT, _answers, _free_port, run_cli, start_cli, tiny_study, write_yaml
from tests.support.agreement import check_agreement
from tests.support.pausing import Pauses


class Server:
    """An ``mlflow server`` on a loopback port, with its store in ``folder``, that a test stops, resumes,
    kills and starts again (on the same port)."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.port = folder, 0
        self.proc: subprocess.Popen[bytes] | None = None
        folder.mkdir(parents=True, exist_ok=True)

    def start(self) -> None:
        """Start it (on its port, once it has one) and wait until it answers."""
        env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        for _ in range(3):
            port = self.port or _free_port()
            store = ["--backend-store-uri", f"sqlite:///{self.folder / 'mlflow.db'}"]
            command = [sys.executable, "-m", "mlflow", "server", *store, "--artifacts-destination", str(self.folder)]
            self.proc = subprocess.Popen(
                [*command, "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                cwd=self.folder,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: the signals reach its workers too
            )
            if _answers(self.proc, port):
                self.port = port
                return
            assert not self.port, f"the server did not start again on port {self.port}"
        raise AssertionError("the server exited three times")

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signum)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        assert self.proc is not None
        self.proc.wait(timeout=30)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.signal(signal.SIGCONT)
            self.kill()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    served = Server(tmp_path / "server")
    served.start()
    try:
        yield served
    finally:
        served.close()


def _study(tmp_path: Path, server: Server, name: str, retry: float) -> tuple[Path, str]:
    """A tiny study tracked by ``server`` (its study file, its Optuna storage)."""
    work = tmp_path / "work"
    work.mkdir()
    study = {"n_trials": 2, "tracking_retry": retry, "pruner": "none"}
    path = write_yaml(work / "s.yaml", tiny_study(name, tracking={"uri": server.uri}, study=study))
    return path, f"sqlite:///{work / '.sweep' / 'optuna.db'}"


class Stderr:
    """A process's stderr, read line by line as it comes (a thread), so a test acts on what the process says."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        self.proc, self.lines, self._new = proc, [], queue.Queue()  # type: ignore[var-annotated]
        self._thread = threading.Thread(target=self._read, args=(proc.stderr,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self._new.put(line.rstrip("\n"))
        self._new.put(None)

    def said(self, fragment: str, timeout: float = 120) -> None:
        """Until the process says a line holding ``fragment``; fails if it ends, or is silent past ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._new.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no line with {fragment!r} in {timeout} s: {self.lines}") from None
            assert line is not None, f"the process ended without saying {fragment!r}: {self.lines}"
            self.lines.append(line)
            if fragment in line:
                return

    def rest(self, timeout: float) -> str:
        """Everything it said, once it exited (within ``timeout`` s)."""
        self.proc.wait(timeout=timeout)
        self._thread.join()
        while (line := self._new.get()) is not None:
            self.lines.append(line)
        return "\n".join(self.lines)


@pytest.mark.slow
def test_a_server_that_never_answers_fails_the_trial_within_the_budget(
    tmp_path: Path, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server stopped (SIGSTOP) inside trial 0: the process says it retries, gives up after
    ``tracking_retry`` (5 s: some 20 s in all, well under MLflow's 13 minutes) and exits 1 with one line;
    trial 0 is FAIL with the reason and queued again, nothing RUNNING. The server back and the same command
    run again: the study ends with n_trials, Optuna and MLflow agreeing."""
    path, storage = _study(tmp_path, server, "hung", retry=5)
    pauses = Pauses(tmp_path / "pauses", "epoch:1").apply(monkeypatch)
    proc = start_cli("sweep.run", str(path), "--no-report", "--no-progress", cwd=path.parent)
    try:
        pauses.wait("epoch:1", [proc])
        server.signal(signal.SIGSTOP)
        stopped = time.monotonic()
        pauses.release("epoch:1", procs=[proc])
        _, err = proc.communicate(timeout=90)
        took = time.monotonic() - stopped
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1 and took < 60, (proc.returncode, took, err)
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "unreachable for" in errors[0] and "(study.tracking_retry: 5)" in errors[0], err
    notes = [line for line in err.splitlines() if "unreachable (" in line]
    assert len(notes) == 1 and "retrying for up to 5 s (study.tracking_retry)" in notes[0], err
    study = optuna.load_study(study_name="hung", storage=storage)
    failed, queued = study.trials
    assert failed.state.name == "FAIL" and "(study.tracking_retry: 5)" in failed.user_attrs["fail_reason"]
    assert queued.state.name == "WAITING" and queued.params == failed.params

    server.signal(signal.SIGCONT)
    monkeypatch.delenv("SWEEP_PAUSE_AT")
    again = run_cli("sweep.run", str(path), "--no-report", "--no-progress", cwd=path.parent)
    assert again.returncode == 0, again.stderr
    study = optuna.load_study(study_name="hung", storage=storage)
    check_agreement(study, server.uri, 2)
    parent = MlflowClient(server.uri).get_run(study.user_attrs["mlflow_parent_run_id"])
    assert parent.info.status == "FINISHED"  # left RUNNING by the process that gave up, closed by the re-run
    assert study.trials[1].system_attrs["failed_trial"] == 0 and study.trials[1].state.name == "COMPLETE"


@pytest.mark.slow
def test_a_server_restarted_within_the_budget_loses_nothing(
    tmp_path: Path, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server killed inside trial 0 and started again once the process says it retries: the trial
    completes, one note says tracking went, one that it is back; the study ends with n_trials, exit 0."""
    path, storage = _study(tmp_path, server, "restarted", retry=600)
    pauses = Pauses(tmp_path / "pauses", "epoch:1").apply(monkeypatch)
    proc = start_cli("sweep.run", str(path), "--no-report", "--no-progress", cwd=path.parent)
    try:
        pauses.wait("epoch:1", [proc])
        server.kill()
        pauses.release("epoch:1", procs=[proc])
        err = Stderr(proc)
        err.said("unreachable (")
        server.start()
        said = err.rest(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, said
    assert "Traceback" not in said and "error:" not in said, said
    assert len([line for line in said.splitlines() if "unreachable (" in line]) == 1, said
    assert len([line for line in said.splitlines() if "MLflow tracking back after" in line]) == 1, said
    study = optuna.load_study(study_name="restarted", storage=storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    check_agreement(study, server.uri, 2)


@pytest.mark.slow
def test_sigterm_during_the_retries_ends_the_process_at_once(
    tmp_path: Path, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM while the process retries a server that never answers (told by its own note): it exits 130 in
    seconds, not after the budget (600 s) or MLflow's minutes; the trial is FAIL "interrupted" and queued."""
    path, storage = _study(tmp_path, server, "stopped", retry=600)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")  # the user's own wait for an answer is kept
    pauses = Pauses(tmp_path / "pauses", "epoch:1").apply(monkeypatch)
    proc = start_cli("sweep.run", str(path), "--no-report", "--no-progress", cwd=path.parent)
    try:
        pauses.wait("epoch:1", [proc])
        server.signal(signal.SIGSTOP)
        pauses.release("epoch:1", procs=[proc])
        err = Stderr(proc)
        err.said("unreachable (")
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        said = err.rest(timeout=60)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and took < 10, (proc.returncode, took, said)
    assert "Traceback" not in said and "Interrupted" in said, said
    study = optuna.load_study(study_name="stopped", storage=storage)
    interrupted, queued = study.trials
    assert interrupted.state.name == "FAIL" and "interrupted" in interrupted.user_attrs["fail_reason"]
    assert queued.state.name == "WAITING" and queued.params == interrupted.params
