"""Named points in a trial's life where a test can stop the process, to kill it at that exact instant.

``SWEEP_PAUSE_AT=<name>`` makes the first process that reaches ``pause("<name>")`` create
``<name>.paused`` (holding its pid) in ``SWEEP_PAUSE_DIR`` (default: the working directory) and sleep
until it is killed, or until the test creates ``<name>.go`` there (to change the world at that
instant, e.g. fill a disk, and let the process go on); other processes (the worker's siblings, a
re-run) pass on; with ``SWEEP_PAUSE_IN=workers`` only the processes ``--workers`` started pause. Nothing
else reads these variables; unset (always, outside the fault tests) a
pause point costs one dictionary lookup.

The points, in the order a trial passes them:
  ``asked``           the trial exists in Optuna (RUNNING), nothing else yet;
  ``beat``            its first heartbeat is written, no MLflow run yet;
  ``run_created``     its MLflow run exists, not yet linked to the trial;
  ``linked``          the run id is stored on the trial, training not yet started;
  ``told``            Optuna has stored the trial's final state, its MLflow run is still RUNNING;
  ``closed``          its MLflow run is closed too, the next trial not yet asked.

And one before any trial (not in :data:`POINTS`, which tests walk trial by trial):
  ``opening``         the process has passed its checks (a worker: its gate), its storage not yet opened.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

POINTS = ("asked", "beat", "run_created", "linked", "told", "closed")


def pause(name: str) -> None:
    """Stop here (until killed, or until ``<name>.go`` exists) when ``SWEEP_PAUSE_AT`` names this point."""
    if os.environ.get("SWEEP_PAUSE_AT") != name:
        return
    if os.environ.get("SWEEP_PAUSE_IN") == "workers" and not os.environ.get("SWEEP_WORKER_GATE"):
        return  # only the processes --workers started pause (not the coordinator, which trains too)
    folder = Path(os.environ.get("SWEEP_PAUSE_DIR", "."))
    try:
        fd = os.open(folder / f"{name}.paused", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return  # another process paused here first
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    while not (folder / f"{name}.go").exists():
        time.sleep(0.1)
