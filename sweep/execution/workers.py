"""``--workers N``: several processes on one study's storage (Optuna's own distributed mode).

The coordinator (this process) starts ``N - 1`` workers (``python -m sweep.run ... --worker i``) first,
so their start-up overlaps its own, spreads them over GPUs, creates the study and its parent run,
runs trials itself, forwards Ctrl-C and SIGTERM, stops and continues them with itself (Ctrl-Z, ``fg``),
shows progress from the storage and writes the report when all are done. Each process claims trials
until the study has ``n_trials`` finished (:class:`sweep.storage.claims.Claims`), topping up whatever a dead
sibling lost.

Workers die with their coordinator: each watches its parent process (:func:`watch_parent`) and stops
as if interrupted when the coordinator is gone (killed with SIGKILL, its terminal closed).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from sweep.core.errors import SweepError
from sweep.core.interrupts import Interrupts

if TYPE_CHECKING:
    from sweep.execution.runner import Outcome
    from sweep.studyfile.config import StudyFile
    from sweep.trials.console import Progress


def watch_parent(interval: float = 0.5) -> None:
    """In a worker: send ourselves SIGTERM (an orderly stop, see :mod:`sweep.core.interrupts`) once the
    process that started us is gone. (Linux's parent-death signal does the same but exists nowhere
    else; a watching thread works on every POSIX system.)"""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="sweep-parent-watch", daemon=True).start()


def worker_devices(workers: str, devices: str | None) -> tuple[int, list[str]]:
    """How many worker processes (``--workers``), and the GPUs (CUDA_VISIBLE_DEVICES values) to spread
    them over (``--devices``, else the entries already set, else every GPU torch sees).

    Raises:
        ValueError: ``workers`` is neither a positive integer nor ``auto``.
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if devices:
        found = [d.strip() for d in devices.split(",") if d.strip()]
    elif visible is not None:
        # Already narrowed (e.g. CUDA_VISIBLE_DEVICES=2,3): hand on those entries, not 0..n-1, which
        # in a child's CUDA_VISIBLE_DEVICES would name other physical GPUs.
        found = [d.strip() for d in visible.split(",") if d.strip()]
    else:
        import torch

        found = [str(i) for i in range(torch.cuda.device_count())]
    if workers == "auto":
        return max(1, len(found)), found
    try:
        n = int(workers)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"--workers must be a positive integer or auto, not {workers!r}")
    return n, found


def run_workers(
    sf: StudyFile,
    source: Path,
    source_text: str,
    workers: int,
    devices: list[str],
    passthrough: list[str],
    progress: bool = True,
    report: bool = True,
    interrupts: Interrupts | None = None,
    allow_changes: bool = False,
    verbose: bool = False,
) -> Outcome:
    """Run a study with ``workers`` processes on its storage: this one and ``workers - 1`` more.

    1. The others start first, each in its own session (one Ctrl-C reaches it once, through here),
       with ``devices`` handed out round robin as CUDA_VISIBLE_DEVICES (this process takes the first).
       They import what they need while this process checks the study and opens it, then wait at a
       gate (:func:`wait_at_gate`): opened when the study is open, closed (they exit quietly) when
       the checks failed, so an error is said once.
    2. This process runs trials too (no process sits idle), forwarding Ctrl-C and SIGTERM to the
       others, then waits for them and finishes the study (report, parent run).
    """
    from sweep.core.errors import warn
    from sweep.execution.runner import Others, open_session, run_study
    from sweep.storage.storage import count_finished

    interrupts = interrupts or Interrupts()
    if devices and "torch" in sys.modules and not sys.modules["torch"].cuda.is_initialized():
        os.environ["CUDA_VISIBLE_DEVICES"] = devices[0]  # this process is worker 0 (before CUDA starts)
    remove_orphaned_folders()
    counts = Path(tempfile.mkdtemp(prefix=FOLDER_PREFIX))
    (counts / "owner").write_text(str(os.getpid()))  # whose it is (remove_orphaned_folders)
    gate = counts / "gate"
    procs: list[tuple[int, subprocess.Popen]] = []
    for i in range(1, workers):
        env = dict(os.environ, SWEEP_WORKER_COUNT_FILE=str(counts / f"{i}"), SWEEP_WORKER_GATE=str(gate))
        if devices:
            env["CUDA_VISIBLE_DEVICES"] = devices[i % len(devices)]
        command = [sys.executable, "-m", "sweep.run", str(source), "--worker", str(i), *passthrough]
        procs.append((i, subprocess.Popen(command, env=env, start_new_session=True)))
    restore_tstp = _stop_together(procs)  # Ctrl-Z: the workers, in sessions of their own, stop too
    try:
        session = open_session(sf, source, source_text, 0, allow_changes)
    except BaseException as e:
        _open_gate(gate, "stop")
        if isinstance(e, KeyboardInterrupt):  # a worker may still be importing the user's module
            _signal_all(procs)
        for _, p in procs:
            p.wait()
        shutil.rmtree(counts, ignore_errors=True)
        restore_tstp()
        raise
    _open_gate(gate, "go")
    forwarder = threading.Thread(target=_forward, args=(interrupts, procs), name="sweep-forward", daemon=True)
    forwarder.start()

    def others(bar: Progress) -> Others:
        try:
            shown = time.monotonic()
            while any(p.poll() is None for _, p in procs):
                time.sleep(0.05)  # the report waits for the last worker's exit: notice it at once
                if time.monotonic() - shown >= 0.5:
                    shown = time.monotonic()
                    with contextlib.suppress(SweepError):  # the storage is down: the workers say so
                        bar.refresh(session.study)
        except KeyboardInterrupt:  # a second Ctrl-C: the workers stop at once
            _signal_all(procs)
            for _, p in procs:
                p.wait()
        with contextlib.suppress(SweepError):
            bar.refresh(session.study)
        dead = [i for i, p in procs if p.returncode not in (0, 130, -signal.SIGINT, -signal.SIGTERM)]
        for i, p in procs:
            if i in dead:
                warn(f"worker {i} exited with code {p.returncode}")
        tallies = [[int(n) for n in f.read_text().split()] for f in counts.iterdir() if f.name not in ("gate", "owner")]
        finished = count_finished(session.study)
        incomplete = ""
        if dead and not interrupts.requested and finished < sf.study.n_trials:
            incomplete = (
                f"the study has {finished} of {sf.study.n_trials} finished trials after worker(s) "
                f"{', '.join(map(str, dead))} failed: run the same command again to add the rest"
            )
        return Others(sum(t[0] for t in tallies if t), sum(t[1] for t in tallies if t), incomplete)

    try:
        return run_study(
            sf,
            source,
            source_text,
            progress=progress,
            verbose=verbose,
            report=report,
            interrupts=interrupts,
            allow_changes=allow_changes,
            session=session,
            others=others,
        )
    finally:  # also when the study ends in an error (a storage outage past its budget)
        shutil.rmtree(counts, ignore_errors=True)
        restore_tstp()


FOLDER_PREFIX = "sweep-workers-"


def remove_orphaned_folders() -> None:
    """Remove the temporary folders of coordinators that died without removing theirs (``kill -9``): a
    folder whose owner process is gone. A live owner's folder, or one whose owner cannot be told, stays."""
    for folder in Path(tempfile.gettempdir()).glob(f"{FOLDER_PREFIX}*"):
        try:
            owner = int((folder / "owner").read_text())
        except (OSError, ValueError):
            continue
        if not _alive(owner):
            shutil.rmtree(folder, ignore_errors=True)


def report_count(ran: int, failed: int) -> None:
    """In a worker: tell the coordinator how many trials this process ran (and how many failed). A worker
    whose coordinator is gone removes the folder instead: nobody will read it."""
    count_file = os.environ.get("SWEEP_WORKER_COUNT_FILE")
    if not count_file:
        return
    folder = Path(count_file).parent
    try:
        owner = int((folder / "owner").read_text())
    except (OSError, ValueError):
        return  # removed already
    if not _alive(owner):
        shutil.rmtree(folder, ignore_errors=True)
        return
    with contextlib.suppress(OSError):  # the coordinator ended meanwhile and removed it
        Path(count_file).write_text(f"{ran} {failed}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: not ours to judge
    return True


def wait_at_gate(interrupts: Interrupts) -> bool:
    """In a worker: wait until the coordinator has opened the study (``True``) or failed its checks
    (``False``: it says why; the worker exits quietly). No gate (a worker started by hand): go."""
    gate = os.environ.get("SWEEP_WORKER_GATE")
    if not gate:
        return True
    path = Path(gate)
    while not interrupts.requested:
        if path.exists():
            return path.read_text() == "go"
        time.sleep(0.05)
    return False


def _open_gate(gate: Path, word: str) -> None:
    tmp = gate.with_suffix(".tmp")
    tmp.write_text(word)
    tmp.replace(gate)  # atomic: a worker never reads half a word


def _forward(interrupts: Interrupts, procs: list[tuple[int, subprocess.Popen]]) -> None:
    """Pass the coordinator's Ctrl-C or SIGTERM on to the workers, once, as soon as it comes."""
    while any(p.poll() is None for _, p in procs):
        if interrupts.requested:
            _signal_all(procs)
            return
        time.sleep(0.1)


def _signal_all(procs: list[tuple[int, subprocess.Popen]]) -> None:
    for _, p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)  # never ignored (SIGINT is, in a background job's children)


def _stop_together(procs: list[tuple[int, subprocess.Popen]]) -> Callable[[], None]:
    """Handle SIGTSTP (Ctrl-Z) in the coordinator: stop each worker's process group (SIGSTOP: a group
    without a terminal ignores SIGTSTP), then this process; once continued (``fg``, ``bg``, SIGCONT),
    continue the workers. Returns what puts the handler it replaced back."""
    if not hasattr(signal, "SIGTSTP") or threading.current_thread() is not threading.main_thread():
        return lambda: None

    def stop(signum: int, frame: object) -> None:
        live = [p.pid for _, p in procs if p.returncode is None]  # no waitpid in a handler: the attribute only
        for pid in live:
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGSTOP)
        signal.signal(signal.SIGTSTP, signal.SIG_DFL)
        try:
            os.kill(os.getpid(), signal.SIGTSTP if _job_control() else signal.SIGSTOP)  # stops here
        finally:
            signal.signal(signal.SIGTSTP, stop)
            for pid in live:
                with contextlib.suppress(OSError):
                    os.killpg(pid, signal.SIGCONT)

    previous = signal.signal(signal.SIGTSTP, stop)
    return lambda: signal.signal(signal.SIGTSTP, signal.SIG_DFL if previous is None else previous)


def _job_control() -> bool:
    """Whether SIGTSTP stops this process: its process group is not orphaned (the kernel discards SIGTSTP
    sent to an orphaned group), as under a shell's job control (the parent, a shell, in another group of
    the same session). Otherwise it stops with SIGSTOP."""
    try:
        parent = os.getppid()
        return os.getsid(parent) == os.getsid(0) and os.getpgid(parent) != os.getpgrp()
    except OSError:
        return False
