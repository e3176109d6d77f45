"""A full or unusable artifact store, on real processes and a real (small, mounted) filesystem: refused
before anything is created; filling up mid-study keeps every trial's metrics and state, says why its
files are missing, stops the study with one line, and a re-run finishes it."""

from __future__ import annotations

import contextlib
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient

from sweep.tracking.artifacts import STOP_AFTER
from tests.conftest import run_cli, start_cli, tiny_study, write_yaml
from tests.support.agreement import check_agreement


def _mount_error() -> str | None:
    probe = Path(f"/tmp/sweep-mount-probe-{uuid.uuid4().hex[:8]}")
    probe.mkdir()
    try:
        out = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)], capture_output=True)
        if out.returncode:
            return f"cannot mount a small tmpfs here (needs root with CAP_SYS_ADMIN): {out.stderr.decode().strip()}"
        subprocess.run(["umount", str(probe)], check=True)
        return None
    except FileNotFoundError:
        return "no mount command on this machine"
    finally:
        probe.rmdir()


MOUNT_ERROR = _mount_error()
needs_mount = pytest.mark.skipif(MOUNT_ERROR is not None, reason=MOUNT_ERROR or "")


@contextlib.contextmanager
def small_disk(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path`` (a disk that can really fill up), unmounted after."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(disk: Path) -> Path:
    """Write a file until the disk is full; returns it (delete it to free the disk)."""
    filler = disk / "filler.bin"
    with contextlib.suppress(OSError), open(filler, "wb") as f:
        while True:
            f.write(b"\0" * 65536)
            f.flush()
    return filler


def run_and_fill(tmp_path: Path, disk: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[int, str, Path]:
    """Run ``s.yaml``, pause it once trial 0 is recorded everywhere, fill ``disk``, let it go on.

    Returns:
        The exit status, the stderr and the filler file (delete it to free the disk).
    """
    monkeypatch.setenv("SWEEP_PAUSE_AT", "closed")
    monkeypatch.setenv("SWEEP_PAUSE_DIR", str(tmp_path))
    proc = start_cli("sweep.run", "s.yaml", "--no-progress", cwd=tmp_path)
    try:
        while not (tmp_path / "closed.paused").exists():
            assert proc.poll() is None, proc.communicate()[1]
            time.sleep(0.05)
        filler = fill(disk)
        (tmp_path / "closed.go").touch()
        _, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    monkeypatch.delenv("SWEEP_PAUSE_AT")
    return proc.returncode, err, filler


# ---- real processes ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_an_artifact_location_that_is_a_file_is_refused_before_anything_is_created(tmp_path: Path) -> None:
    write_yaml(tmp_path / "s.yaml", tiny_study("blocked"))
    (tmp_path / "mlartifacts").write_text("not a directory")
    out = run_cli("sweep.run", "s.yaml", "--no-progress", cwd=tmp_path)
    assert out.returncode == 1, out.stderr
    assert out.stderr.strip().splitlines() == ["error: artifact location mlartifacts: mlartifacts is not a directory"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlartifacts", "s.yaml"]  # no study, no mlflow.db


@pytest.mark.slow
@needs_mount
def test_a_full_artifact_disk_is_refused_before_anything_is_created(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", "256k") as disk:  # less than one trial's margin
        location = (disk / "artifacts").as_uri()
        write_yaml(tmp_path / "s.yaml", tiny_study("full", tracking={"artifact_location": location}))
        out = run_cli("sweep.run", "s.yaml", "--no-progress", cwd=tmp_path)
        assert out.returncode == 1, out.stderr
        (line,) = out.stderr.strip().splitlines()
        assert line.startswith(f"error: artifact location {disk / 'artifacts'} has ") and "free" in line, line
        assert sorted(p.name for p in tmp_path.iterdir()) == ["disk", "s.yaml"]
        assert list(disk.iterdir()) == []


@pytest.mark.slow
@needs_mount
def test_a_disk_filling_up_mid_study_keeps_the_trials_and_stops_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    n_trials = STOP_AFTER + 3
    study = tiny_study("filling", study={"n_trials": n_trials, "pruner": "none"})
    with small_disk(tmp_path / "disk", "4m") as disk:
        study["tracking"]["artifact_location"] = (disk / "artifacts").as_uri()
        write_yaml(tmp_path / "s.yaml", study)
        returncode, err, filler = run_and_fill(tmp_path, disk, monkeypatch)
        assert returncode == 1, err
        last = err.strip().splitlines()[-1]
        assert last.startswith(f"error: the last {STOP_AFTER} trials could write no artifact ("), err
        assert "No space left on device" in last and "run the same command again" in last
        assert err.count("Traceback") == 0, err

        optuna_study = optuna.load_study(study_name="filling", storage=f"sqlite:///{tmp_path / '.sweep/optuna.db'}")
        trials = optuna_study.get_trials(deepcopy=False)
        assert [t.state.name for t in trials] == ["COMPLETE"] * (1 + STOP_AFTER)  # trained fine: kept as such
        assert "artifact_error" not in trials[0].user_attrs
        client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
        for t in trials[1:]:
            assert "No space left on device" in t.user_attrs["artifact_error"], t.user_attrs
            run = client.get_run(t.user_attrs["mlflow_run_id"])
            assert run.info.status == "FINISHED" and "No space left" in run.data.tags["sweep.artifact_error"]
            assert run.data.metrics["val_total_loss"] == pytest.approx(t.value)  # the metrics are all there
            assert len(client.get_metric_history(run.info.run_id, "val_total_loss")) == 3
        parent = client.get_run(optuna_study.user_attrs["mlflow_parent_run_id"])
        assert parent.info.status == "FAILED"

        filler.unlink()  # room again: the same command finishes the study
        again = run_cli("sweep.run", "s.yaml", "--no-progress", cwd=tmp_path)
        assert again.returncode == 0, again.stderr
        check_agreement(optuna_study, f"sqlite:///{tmp_path / 'mlflow.db'}", n_trials)
        last_ones = optuna_study.get_trials(deepcopy=False)[1 + STOP_AFTER :]
        assert all("artifact_error" not in t.user_attrs for t in last_ones)
        assert client.get_run(parent.info.run_id).info.status == "FINISHED"


@pytest.mark.slow
@needs_mount
def test_a_tracking_store_that_fills_up_stops_the_study_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    n_trials = STOP_AFTER + 3
    study = tiny_study("store", study={"n_trials": n_trials, "pruner": "none"})
    with small_disk(tmp_path / "disk", "16m") as disk:
        study["tracking"]["uri"] = "sqlite:///disk/mlflow.db"  # artifacts beside it: every MLflow write fails
        write_yaml(tmp_path / "s.yaml", study)
        returncode, err, filler = run_and_fill(tmp_path, disk, monkeypatch)
        assert returncode == 1, err
        assert err.count("Traceback") == 0, err
        last = err.strip().splitlines()[-1]
        # Which write fails first depends on what the WAL file still had room for: the store's rows, or
        # (the rows fitting) every artifact of STOP_AFTER trials. Either way: one line, and it says why.
        store = last.startswith("error: the MLflow tracking store cannot be written (") and "disk is full" in last
        files = last.startswith(f"error: the last {STOP_AFTER} trials could write no artifact (") and "No space" in last
        assert (store or files) and "run the same command again" in last, err
        optuna_study = optuna.load_study(study_name="store", storage=f"sqlite:///{tmp_path / '.sweep/optuna.db'}")
        states = [t.state.name for t in optuna_study.get_trials(deepcopy=False)]
        assert states[0] == "COMPLETE" and "RUNNING" not in states, states

        filler.unlink()
        again = run_cli("sweep.run", "s.yaml", "--no-progress", cwd=tmp_path)
        assert again.returncode == 0, again.stderr
        counts = check_agreement(optuna_study, f"sqlite:///{disk / 'mlflow.db'}", n_trials)
        assert counts
