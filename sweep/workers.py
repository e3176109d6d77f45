"""``--workers N``: several processes on one study's storage (Optuna's own distributed mode).

The coordinator (this process) creates the study and its parent run, starts the workers (``python -m
sweep.run ... --worker i``), spreads them over GPUs, forwards Ctrl-C and SIGTERM, shows progress from
the storage and writes the report when they are done. Each worker claims trials until the study has
``n_trials`` finished (:class:`sweep.claims.Claims`), topping up whatever a dead sibling lost.

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
from pathlib import Path

from sweep.config import StudyFile
from sweep.console import Progress, warn
from sweep.errors import SweepError
from sweep.interrupts import Interrupts
from sweep.runner import Outcome, finish, open_session
from sweep.storage import count_finished


def watch_parent(interval: float = 0.5) -> None:
    """In a worker: send ourselves SIGTERM (an orderly stop, see :mod:`sweep.interrupts`) once the
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
) -> Outcome:
    """Run a study with ``workers`` processes on its storage.

    Each worker runs in its own session so one Ctrl-C reaches it once, through here; ``devices`` are
    handed out round robin as each worker's CUDA_VISIBLE_DEVICES.
    """
    interrupts = interrupts or Interrupts()
    session = open_session(sf, source, source_text, 0, allow_changes)
    study = session.study
    procs: list[tuple[int, subprocess.Popen]] = []
    counts = Path(tempfile.mkdtemp(prefix="sweep-workers-"))
    for i in range(workers):
        env = dict(os.environ, SWEEP_WORKER_COUNT_FILE=str(counts / f"{i}"))
        if devices:
            env["CUDA_VISIBLE_DEVICES"] = devices[i % len(devices)]
        command = [sys.executable, "-m", "sweep.run", str(source), "--worker", str(i), *passthrough]
        procs.append((i, subprocess.Popen(command, env=env, start_new_session=True)))
    bar = Progress(study, sf.study.n_trials, progress)
    forwarded = False
    try:
        while any(p.poll() is None for _, p in procs):
            if interrupts.requested and not forwarded:
                forwarded = True
                _signal_all(procs)
            time.sleep(1.0)
            with contextlib.suppress(SweepError):  # the storage is down: the workers say so
                bar.refresh(study)
    except KeyboardInterrupt:  # a second Ctrl-C: the workers stop at once
        _signal_all(procs)
        for _, p in procs:
            p.wait()
    bar.refresh(study)
    bar.close()
    failed = [i for i, p in procs if p.returncode not in (0, 130, -signal.SIGINT, -signal.SIGTERM)]
    for i, p in procs:
        if i in failed:
            warn(f"worker {i} exited with code {p.returncode}")
    tallies = [[int(n) for n in f.read_text().split()] for f in counts.iterdir()]
    ran, failed_trials = sum(t[0] for t in tallies if t), sum(t[1] for t in tallies if t)
    shutil.rmtree(counts, ignore_errors=True)
    interrupted = interrupts.requested
    incomplete = ""
    finished = count_finished(study)
    if failed and not interrupted and finished < sf.study.n_trials:
        incomplete = (
            f"the study has {finished} of {sf.study.n_trials} finished trials after worker(s) "
            f"{', '.join(map(str, failed))} failed: run the same command again to add the rest"
        )
    finish(session, sf, report, interrupted, failed=bool(incomplete))
    return Outcome(study, session.tracker, session.storage, ran, interrupted, incomplete, failed_trials)


def _signal_all(procs: list[tuple[int, subprocess.Popen]]) -> None:
    for _, p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)  # never ignored (SIGINT is, in a background job's children)
