"""Driving real processes to named instants of a trial (:mod:`sweep.core.faultpoints`), so a fault test acts
on the program's own progress, never after a guessed delay: whatever the machine's speed, the process
is exactly where the test wants it when the kill, the signal or the outage comes."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

Procs = Iterable[subprocess.Popen[str]]


class Pauses:
    """The pause points ``points`` for the processes a test starts (pass :meth:`env` to them, or
    :meth:`apply` it to the test's environment).

    Args:
        folder: where the processes write their ``.paused`` markers (made here).
        points: the points, as :mod:`sweep.core.faultpoints` names them (``"linked"``, ``"epoch:2"``).
        each: every process pauses once at each point (markers ``<point>.<pid>.paused``); otherwise only
            the first to reach an armed point does. A point may say who pauses (``closed@workers``).
        armed: the points start armed (otherwise :meth:`arm` them one at a time; single mode only).
    """

    def __init__(self, folder: Path, *points: str, each: bool = False, armed: bool = True) -> None:
        self.folder, self.points, self.each = folder, points, each
        folder.mkdir(parents=True, exist_ok=True)
        if not armed:
            assert not each, "each-process points cannot be disarmed"
            for point in points:
                self.disarm(point)

    def env(self) -> dict[str, str]:
        """The variables that make a process pause at these points."""
        env = {"SWEEP_PAUSE_AT": ",".join(self.points), "SWEEP_PAUSE_DIR": str(self.folder)}
        if self.each:
            env["SWEEP_PAUSE_EACH"] = "1"
        return env

    def apply(self, monkeypatch: pytest.MonkeyPatch) -> Pauses:
        """Set :meth:`env` for every process the test starts from now on (undone after the test)."""
        for key, value in self.env().items():
            monkeypatch.setenv(key, value)
        return self

    def disarm(self, point: str) -> None:
        """Nobody pauses at ``point`` (its marker exists, so every process passes it)."""
        (self.folder / f"{point}.paused").write_text("")

    def arm(self, point: str) -> None:
        """The next process to reach ``point`` pauses there."""
        (self.folder / f"{point}.paused").unlink(missing_ok=True)

    def wait(self, point: str, procs: Procs, timeout: float = 240) -> int:
        """Until a process pauses at ``point``; its pid. Fails if every process in ``procs`` has exited."""
        return self.wait_each(point, 1, procs, timeout)[0] if self.each else self._wait(point, procs, timeout)

    def wait_each(self, point: str, n: int, procs: Procs, timeout: float = 240) -> list[int]:
        """Until ``n`` processes pause at ``point`` (``each`` mode); their pids."""
        assert self.each
        procs = list(procs)
        deadline = time.monotonic() + timeout
        while True:
            pids = [_pid(m) for m in self.folder.glob(f"{point}.*.paused")]
            if len(pids) >= n and all(pids):
                return pids
            _alive_until(procs, deadline, f"{n} processes paused at {point}")

    def release(self, point: str, pid: int | None = None, procs: Procs = (), timeout: float = 240) -> None:
        """Let the process paused at ``point`` (``each`` mode: process ``pid``) go on; returns once it has."""
        go = self.folder / (f"{point}.{pid}.go" if self.each else f"{point}.go")
        go.touch()
        procs = list(procs)
        deadline = time.monotonic() + timeout
        while go.exists():  # the process deletes it as it leaves the point
            if procs and all(p.poll() is not None for p in procs):
                return
            assert time.monotonic() < deadline, f"nothing left {point}"
            time.sleep(0.05)

    def _wait(self, point: str, procs: Procs, timeout: float) -> int:
        procs = list(procs)
        marker = self.folder / f"{point}.paused"
        deadline = time.monotonic() + timeout
        while True:
            if marker.exists() and (pid := _pid(marker)):
                return pid
            _alive_until(procs, deadline, f"a process paused at {point}")


def until(condition: Callable[[], object], what: str, timeout: float = 60) -> object:
    """Until ``condition()`` is true — the program's own progress (a file, a row, a flag), looked at every
    50 ms, never a guessed delay — and its value. Fails saying ``what`` was awaited past ``timeout``; the
    condition may itself fail (assert) when waiting no longer makes sense."""
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        _alive_until([], deadline, what)  # one poll interval, the same as the waits for processes
    return found


def _pid(marker: Path) -> int:
    """The pid a marker holds (0 while the process is still writing it, or for a disarmed point)."""
    try:
        text = marker.read_text()
    except FileNotFoundError:
        return 0
    return int(text) if text else 0


def _alive_until(procs: list[subprocess.Popen[str]], deadline: float, what: str) -> None:
    """One poll interval of a wait: fails if every process exited (saying how) or the deadline passed."""
    if procs and all(p.poll() is not None for p in procs):
        details = [p.communicate()[1][-3000:] if p.stderr and not p.stderr.closed else "" for p in procs]
        raise AssertionError(f"every process exited before {what}: {[p.returncode for p in procs]} {details}")
    assert time.monotonic() < deadline, f"no {what} in time"
    time.sleep(0.05)


def alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie counts as gone)."""
    try:
        return " Z " not in Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
