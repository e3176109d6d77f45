"""Named points in a trial's life where a test can stop the process, to kill it at that exact instant.

``SWEEP_PAUSE_AT`` lists points, comma-separated. The first process that reaches a listed point creates
``<point>.paused`` (holding its pid) in ``SWEEP_PAUSE_DIR`` (default: the working directory) and sleeps
until it is killed, or until the test creates ``<point>.go`` there (to change the world at that instant,
e.g. fill a disk, and let the process go on); the process deletes ``<point>.go`` as it goes on, so a
test knows it left (and may arm the point again by deleting ``<point>.paused``). Other processes (the
worker's siblings, a re-run) pass a point whose ``.paused`` file exists, so a test *disarms* a point by
creating that file itself. A point may name who pauses there: ``linked@workers`` only the processes
``--workers`` started, ``linked@main`` only the others (a coordinator, a plain run). With
``SWEEP_PAUSE_EACH=1`` every process pauses once at each listed point, with ``<point>.<pid>.paused`` and
``<point>.<pid>.go``. Nothing else reads these variables; unset (always, outside the fault tests) a
pause point costs one dictionary lookup.

The points, in the order a trial passes them:
  ``asked``           the trial exists in Optuna (RUNNING), nothing else yet;
  ``beat``            its first heartbeat is written, no MLflow run yet;
  ``run_created``     its MLflow run exists, not yet linked to the trial;
  ``linked``          the run id is stored on the trial, training not yet started;
  ``epoch:N``         inside training: epoch N's records are written (``epoch`` alone: any epoch);
  ``told``            Optuna has stored the trial's final state, its MLflow run is still RUNNING;
  ``closed``          its MLflow run is closed too, the next trial not yet asked.

And some outside any trial (not in :data:`POINTS`, which tests walk trial by trial):
  ``claimed``         it decided to start a trial, holding the study's claim lock (:mod:`sweep.storage.claims`);
  ``lock_wait``       another process holds the claim lock: this one waits for it (:mod:`sweep.storage.claimlock`);
  ``opening``         the process has passed its checks (a worker: its gate), its storage not yet opened;
  ``report``          the report (:func:`sweep.results.report.write_report`) starts: the study's trials are all told;
  ``finish``          the study is done: the process is about to claim its end (:mod:`sweep.execution.finishing`);
  ``finish_claimed``  it has claimed the end: no report written, the parent run not closed yet;
  ``evaluate``        an evaluation is about to be claimed; ``evaluate_claimed``: claimed, nothing retrained.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

POINTS = ("asked", "beat", "run_created", "linked", "epoch:1", "told", "closed")


def pause(name: str, step: int | None = None) -> None:
    """Stop here (until killed, or until the point's ``.go`` file exists) when ``SWEEP_PAUSE_AT`` lists
    ``name`` (or ``name:step``)."""
    wanted = os.environ.get("SWEEP_PAUSE_AT")
    if not wanted:
        return
    role = "workers" if os.environ.get("SWEEP_WORKER_GATE") else "main"  # set in --workers' own processes
    here = (name, f"{name}:{step}")
    point = next(
        (p for p in wanted.split(",") if p.partition("@")[0] in here and p.partition("@")[2] in ("", role)), None
    )
    if point is None:
        return
    folder = Path(os.environ.get("SWEEP_PAUSE_DIR", "."))
    stem = f"{point}.{os.getpid()}" if os.environ.get("SWEEP_PAUSE_EACH") == "1" else point
    try:
        fd = os.open(folder / f"{stem}.paused", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return  # another process paused here first, or the test disarmed the point
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    go = folder / f"{stem}.go"
    while not go.exists():
        time.sleep(0.05)
    go.unlink(missing_ok=True)
