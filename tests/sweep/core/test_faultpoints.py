"""The pause points fault tests stop a process at (sweep/core/faultpoints.py), in process: which point and
which process pauses, the files that say so, and what lets it go on. A thread stands in for the process."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from sweep.core.faultpoints import POINTS, pause
from tests.support.pausing import until


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The pause folder, with every variable the points read unset (a test sets its own)."""
    for name in ("SWEEP_PAUSE_AT", "SWEEP_PAUSE_EACH", "SWEEP_WORKER_GATE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SWEEP_PAUSE_DIR", str(tmp_path))
    return tmp_path


def _passes(folder: Path, *args: object) -> None:
    """``pause(*args)`` must go on at once: every ``.go`` file it could wait for exists beforehand, so a pause
    that should not have happened ends too, and shows (its ``.paused`` file made, its ``.go`` taken)."""
    wanted = os.environ.get("SWEEP_PAUSE_AT", "")
    gos = {f"{p}{s}.go" for p in wanted.split(",") if p for s in ("", f".{os.getpid()}")}
    for name in gos:
        (folder / name).touch()
    before = {p.name for p in folder.iterdir()}
    pause(*args)
    assert {p.name for p in folder.iterdir()} == before, f"pause{args} paused"
    for name in gos:
        (folder / name).unlink()


def _paused(stem: str, folder: Path, *args: object) -> None:
    """Run ``pause(*args)`` in a thread until it has paused at ``<stem>.paused``; let it go and wait for it."""
    thread = threading.Thread(target=pause, args=args, daemon=True)
    thread.start()
    marker = folder / f"{stem}.paused"

    def paused() -> bool:  # its own progress: the file, then its pid in it
        assert thread.is_alive(), f"pause{args} went on without pausing at {stem}"
        assert not [p.name for p in folder.glob("*.paused") if p != marker], f"pause{args} paused elsewhere"
        return marker.exists() and bool(marker.read_text())

    until(paused, f"pause at {stem}")
    assert thread.is_alive()  # waiting for the test
    assert marker.read_text() == str(os.getpid())
    (folder / f"{stem}.go").touch()
    thread.join(60)
    assert not thread.is_alive() and not (folder / f"{stem}.go").exists()  # it took the .go file as it left


def test_the_points_of_a_trial_in_order() -> None:
    assert POINTS == ("asked", "beat", "run_created", "linked", "epoch:1", "told", "closed")


@pytest.mark.parametrize(
    ("wanted", "args"),
    [
        ("", ("asked",)),  # unset: nothing
        ("beat,linked", ("asked",)),  # another point
        ("epoch:2", ("epoch", 1)),  # another epoch
        ("epoch:1", ("epoch",)),  # no step given: only the bare name
        ("asked@workers", ("asked",)),  # only --workers' processes; this one is not
        (" asked", ("asked",)),  # names are taken as written
        ("ask", ("asked",)),  # not a prefix
    ],
)
def test_a_point_that_is_not_listed_for_this_process_passes_at_once(
    folder: Path, monkeypatch: pytest.MonkeyPatch, wanted: str, args: tuple
) -> None:
    monkeypatch.setenv("SWEEP_PAUSE_AT", wanted)
    _passes(folder, *args)


@pytest.mark.parametrize(
    ("wanted", "args", "stem"),
    [
        ("asked", ("asked",), "asked"),
        ("beat,told", ("told",), "told"),
        ("epoch", ("epoch", 3), "epoch"),  # any epoch
        ("epoch:3", ("epoch", 3), "epoch:3"),
        ("linked@main", ("linked",), "linked@main"),
    ],
)
def test_a_listed_point_pauses_until_its_go_file(
    folder: Path, monkeypatch: pytest.MonkeyPatch, wanted: str, args: tuple, stem: str
) -> None:
    """The first process there writes ``<point>.paused`` (its pid) and waits for ``<point>.go``, which it removes."""
    monkeypatch.setenv("SWEEP_PAUSE_AT", wanted)
    _paused(stem, folder, *args)
    assert sorted(p.name for p in folder.iterdir()) == [f"{stem}.paused"]


def test_workers_pause_only_at_points_named_for_them(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWEEP_WORKER_GATE", "/tmp/gate")  # as in --workers' own processes
    monkeypatch.setenv("SWEEP_PAUSE_AT", "linked@main,told@workers")
    _passes(folder, "linked")
    _paused("told@workers", folder, "told")


def test_a_point_passed_once_is_disarmed_for_the_others(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``<point>.paused`` exists (another process paused there, or the test made it): the point is passed; a
    test arms it again by deleting the file."""
    monkeypatch.setenv("SWEEP_PAUSE_AT", "asked")
    (folder / "asked.paused").write_text("")
    _passes(folder, "asked")
    (folder / "asked.paused").unlink()
    _paused("asked", folder, "asked")


def test_each_process_pauses_once_with_pause_each(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``SWEEP_PAUSE_EACH=1``: the files carry the pid, so every process pauses once at each point."""
    monkeypatch.setenv("SWEEP_PAUSE_AT", "beat")
    monkeypatch.setenv("SWEEP_PAUSE_EACH", "1")
    _paused(f"beat.{os.getpid()}", folder, "beat")
    _passes(folder, "beat")  # this process has paused there once


def test_pause_each_is_on_with_1_only(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWEEP_PAUSE_AT", "beat")
    monkeypatch.setenv("SWEEP_PAUSE_EACH", "0")
    _paused("beat", folder, "beat")


def test_the_working_directory_is_the_default_folder(
    folder: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("SWEEP_PAUSE_DIR")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("SWEEP_PAUSE_AT", "closed")
    _paused("closed", work, "closed")
