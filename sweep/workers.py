"""``--workers N``: several processes on one study's storage (Optuna's own distributed mode).

The coordinator (this process) creates the study and its parent run, starts the workers (``python -m
sweep.run ... --worker i --quota q``), splits the trials still to run between them, spreads them over
GPUs, forwards Ctrl-C, shows progress from the storage and writes the report when they are done.
Each worker stops through :class:`sweep.runner.QuotaStop`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sweep.config import StudyFile
from sweep.console import Progress, warn
from sweep.interrupts import Interrupts
from sweep.runner import Outcome, failed_since, finish, open_session
from sweep.storage import count_finished


def split(total: int, parts: int) -> list[int]:
    """``total`` trials in ``parts`` quotas that differ by at most one."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


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
    before = len(study.get_trials(deepcopy=False))
    remaining = max(0, sf.study.n_trials - count_finished(study))
    procs: list[tuple[int, subprocess.Popen]] = []
    for i, quota in enumerate(split(remaining, workers)):
        if quota == 0:
            continue
        env = dict(os.environ)
        if devices:
            env["CUDA_VISIBLE_DEVICES"] = devices[i % len(devices)]
        command = [sys.executable, "-m", "sweep.run", str(source), "--worker", str(i), "--quota", str(quota)]
        command += ["--first-trial", str(before)]
        procs.append((i, subprocess.Popen([*command, *passthrough], env=env, start_new_session=True)))
    bar = Progress(study, sf.study.n_trials, progress)
    forwarded = False
    try:
        while any(p.poll() is None for _, p in procs):
            if interrupts.requested and not forwarded:
                forwarded = True
                _signal_all(procs)
            time.sleep(1.0)
            bar.refresh(study)
    except KeyboardInterrupt:  # a second Ctrl-C: the workers stop at once
        _signal_all(procs)
        for _, p in procs:
            p.wait()
    bar.refresh(study)
    bar.close()
    failed = [i for i, p in procs if p.returncode not in (0, 130, -signal.SIGINT)]
    for i, p in procs:
        if i in failed:
            warn(f"worker {i} exited with code {p.returncode}")
    interrupted = interrupts.requested
    incomplete = ""
    finished = count_finished(study)
    if failed and not interrupted and finished < sf.study.n_trials:
        # The living workers top up a dead one's trials; here none was left to do it.
        incomplete = (
            f"the study has {finished} of {sf.study.n_trials} finished trials after worker(s) "
            f"{', '.join(map(str, failed))} failed: run the same command again to add the rest"
        )
    finish(session, sf, report, interrupted, failed=bool(incomplete))
    ran = len(study.get_trials(deepcopy=False)) - before
    return Outcome(study, session.tracker, session.storage, ran, interrupted, incomplete, failed_since(study, before))


def _signal_all(procs: list[tuple[int, subprocess.Popen]]) -> None:
    for _, p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
