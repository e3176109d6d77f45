"""``--workers``: which processes start, with which options and device (no training: the
worker processes are replaced by records)."""

from __future__ import annotations

import types
from pathlib import Path

import optuna
import pytest

from sweep.commands import run
from sweep.execution import workers
from sweep.storage.storage import open_storage, storage_url
from sweep.studyfile.config import load_study
from tests.conftest import tiny_study, write_yaml


def _record_workers(monkeypatch: pytest.MonkeyPatch) -> list[tuple[list[str], dict[str, str]]]:
    """Replace the worker processes run_workers starts by records of (command, env); each 'exits' 0 at once."""
    started: list[tuple[list[str], dict[str, str]]] = []

    class Done:
        returncode = 0

        def __init__(self, command: list[str], env: dict[str, str], **_: object) -> None:
            started.append((command, env))

        def poll(self) -> int:
            return 0

    # workers' own name for the module, not subprocess.Popen itself: what else runs meanwhile (MLflow's
    # first import asks platform for the processor through a subprocess) keeps the real one.
    monkeypatch.setattr(workers, "subprocess", types.SimpleNamespace(Popen=Done))
    return started


def test_each_worker_claims_until_the_study_is_done(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """run_workers starts N-1 workers (the coordinator is worker 0 and trains too) with their index, the
    passed-through options and the gate, no share of trials (each claims until the study has n_trials:
    a dead sibling's trials are topped up by the living)."""
    path = write_yaml(tmp_path / "w.yaml", tiny_study("first", study={"n_trials": 4}))
    monkeypatch.chdir(tmp_path)
    sf = load_study(path)
    study = optuna.create_study(study_name="first", storage=open_storage(storage_url(sf.study.storage)))
    study.optimize(lambda t: t.suggest_float("weights.log10_ratio", -2, 2), n_trials=1)
    started = _record_workers(monkeypatch)
    workers.run_workers(sf, path, path.read_text(), 3, [], ["--no-report"], progress=False, report=False)
    assert [c[c.index("--worker") + 1 :] for c, _ in started] == [[str(i), "--no-report"] for i in (1, 2)]
    assert len({env["SWEEP_WORKER_COUNT_FILE"] for _, env in started}) == 2
    assert len({env["SWEEP_WORKER_GATE"] for _, env in started}) == 1
    assert len(study.trials) == 4  # the coordinator ran the other three itself


@pytest.mark.parametrize(
    ("argv", "visible", "expected"),
    [
        (["--workers", "auto"], "2,3", (2, ["2", "3"])),  # narrowed already: hand on its entries
        (["--workers", "3", "--devices", "0, 1"], "2,3", (3, ["0", "1"])),  # --devices wins
        (["--workers", "auto"], "", (1, [])),  # no GPU visible: one in-process worker
    ],
)
def test_worker_devices(
    argv: list[str], visible: str, expected: tuple[int, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Which CUDA_VISIBLE_DEVICES entries the workers get. Regression: with CUDA_VISIBLE_DEVICES=2,3 the
    workers were given 0 and 1, i.e. other physical GPUs."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    args = run.parser().parse_args(["s.yaml", *argv])
    assert workers.worker_devices(args.workers, args.devices) == expected


def test_workers_are_spread_over_devices_round_robin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each worker process gets one device as its CUDA_VISIBLE_DEVICES, in turn (the coordinator, worker 0,
    takes the first)."""
    path = write_yaml(tmp_path / "d.yaml", tiny_study("spread", study={"n_trials": 3}))
    monkeypatch.chdir(tmp_path)
    started = _record_workers(monkeypatch)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)  # restored after the test: run_workers sets it
    workers.run_workers(load_study(path), path, path.read_text(), 3, ["2", "3"], [], progress=False, report=False)
    assert [env["CUDA_VISIBLE_DEVICES"] for _, env in started] == ["3", "2"]


def _dead_pid() -> int:
    """A pid no process has (one past the highest in use, checked)."""
    pid = max(int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()) + 1000
    while Path(f"/proc/{pid}").exists():
        pid += 1
    return pid


def test_a_coordinator_ending_in_an_error_removes_its_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The coordinator's temporary folder (gate, counts) is removed however run_study ends, a storage
    error included (it was left behind)."""
    import tempfile

    from sweep.core.errors import SweepError

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    path = write_yaml(tmp_path / "w.yaml", tiny_study("gone", study={"n_trials": 2}))
    monkeypatch.chdir(tmp_path)
    _record_workers(monkeypatch)

    def down(*_: object, **__: object) -> None:
        raise SweepError("Optuna storage unreachable for 3 s")

    monkeypatch.setattr("sweep.execution.runner.run_study", down)
    with pytest.raises(SweepError):
        workers.run_workers(load_study(path), path, path.read_text(), 2, [], [], progress=False, report=False)
    assert list((tmp_path / "tmp").iterdir()) == []


def test_folders_of_dead_coordinators_are_removed_and_live_ones_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A coordinator killed with SIGKILL cannot remove its folder: the next coordinator removes it (its
    owner is gone), a worker that outlives it removes it instead of writing its count; a live one's stays."""
    import os
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead, live = tmp_path / f"{workers.FOLDER_PREFIX}dead", tmp_path / f"{workers.FOLDER_PREFIX}live"
    for folder, pid in ((dead, _dead_pid()), (live, os.getpid())):
        folder.mkdir()
        (folder / "owner").write_text(str(pid))
    workers.remove_orphaned_folders()
    assert not dead.exists() and live.exists()

    monkeypatch.setenv("SWEEP_WORKER_COUNT_FILE", str(live / "1"))
    workers.report_count(3, 1)
    assert (live / "1").read_text() == "3 1"  # the coordinator is alive: it reads the count
    (live / "owner").write_text(str(_dead_pid()))
    workers.report_count(3, 1)
    assert not live.exists()  # its coordinator is gone: nobody reads it
    workers.report_count(3, 1)  # and a sibling doing the same later finds nothing to do
