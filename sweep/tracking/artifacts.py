"""Where a study's files go, and what happens when they cannot be written.

Two kinds of writes feed MLflow: rows in its tracking store (params, metrics, tags, run status) and
files in its artifact store (``config.yaml``, ``weights.pt``, ``error.txt``, the report). They fail
differently, and the study treats them differently:

1. Before anything is created, :func:`check_artifact_space` checks a local artifact location: a
   directory (or one that can be made), writable (a real probe file: root passes ``os.access`` on a
   read-only mount), with room for at least one trial's files. A server's store is its own business.
2. During the study a trial whose files cannot be written keeps its metrics and its state; the run's
   ``sweep.artifact_error`` tag and the trial's ``artifact_error`` attribute say why. After
   :data:`STOP_AFTER` trials in a row that could write no file at all, :class:`ArtifactWatch` stops the
   study with one line (training on would only make trials without weights).
3. A tracking store that cannot be written (its disk full or read-only) stops the study at once: a
   trial is recorded nowhere else (:func:`unwritable`).
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import urllib.parse
from pathlib import Path

from sweep.core.errors import SweepError, one_line
from sweep.core.urls import sqlite_path
from sweep.storage.resilient import chain
from sweep.studyfile.sections import TrackingSection

STOP_AFTER = 3  # trials in a row without any file written: the study stops
MARGIN = 1 << 20  # room asked for beyond one trial's weights (config.yaml, error.txt, the report)
_FULL = (errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EACCES, errno.EPERM)
_FULL_TEXT = (
    "database or disk is full",
    "no space left on device",
    "read-only file system",
    "readonly database",
    "disk quota exceeded",
)


def artifact_root(tracking: TrackingSection) -> Path | None:
    """The local directory a study's artifacts go to, or ``None`` when a server (or a non-file URI) decides.

    ``tracking.artifact_location`` when it is a ``file:`` URI or a path; else ``mlartifacts/`` beside a
    SQLite tracking store (:func:`sweep.tracking.tracking.default_artifact_location`).
    """
    location = tracking.artifact_location
    if location is None:
        if tracking.uri.startswith(("http://", "https://", "databricks")):
            return None
        db = sqlite_path(tracking.uri)
        return (db.parent if db is not None else Path()) / "mlartifacts"
    parts = urllib.parse.urlsplit(location)
    if parts.scheme == "file":
        return Path(urllib.parse.unquote(parts.path))
    if parts.scheme and len(parts.scheme) > 1:  # s3://, gs://, hdfs://...: not ours to probe
        return None
    return Path(location)


def check_artifact_space(root: Path, need: int) -> None:
    """Fail before anything is created when ``root`` cannot hold one trial's files.

    Args:
        root: The artifact directory (it may not exist yet: its nearest existing parent is checked).
        need: Bytes one trial writes at most (its weights), :data:`MARGIN` is added.

    Raises:
        SweepError: one line: ``root`` (or a parent) is a file, is not writable, or has less room.
    """
    where = root
    while not where.exists():
        if where.parent == where:
            break
        where = where.parent
    if not where.is_dir():
        raise SweepError(f"artifact location {root}: {where} is not a directory")
    try:
        with tempfile.TemporaryFile(dir=where) as probe:  # a real write: read-only mounts refuse root too
            probe.write(b"0")
            probe.flush()
    except OSError as e:
        raise SweepError(f"artifact location {root} cannot be written: {e.strerror or one_line(e)}") from None
    free = shutil.disk_usage(where).free
    if free < need + MARGIN:
        raise SweepError(
            f"artifact location {root} has {_size(free)} free; one trial's files need about {_size(need + MARGIN)}"
        )


def unwritable(error: BaseException) -> str:
    """Why ``error`` (or one it came from) says the disk is full, read-only or over quota (``""``: it does not).

    The phrase found (``database or disk is full``, an OSError's ``No space left on device``...), not the
    exception's first line: a database error's first line is often SQLAlchemy's note on autoflush.
    """
    for seen in chain(error):  # each exception once: a chain may loop
        if isinstance(seen, OSError) and seen.errno in _FULL:
            return seen.strerror or _FULL_TEXT[1]
        text = str(seen).lower()
        for phrase in _FULL_TEXT:
            if phrase in text:
                return phrase
    return ""


class ArtifactWatch:
    """Counts trials in a row that could write no file; says stop (:meth:`stop`) at :data:`STOP_AFTER`
    of them, or once the tracking store refused a write, and keeps the reason for the run's last line."""

    def __init__(self, stop_after: int = STOP_AFTER) -> None:
        self.stop_after = stop_after
        self.in_a_row = 0
        self.last_error = ""
        self.store_error = ""  # the tracking store itself could not be written
        self.stopped = False

    def trial_files(self, written: int, errors: list[str]) -> None:
        """What one trial managed: ``written`` files, and why the others failed."""
        if errors and not written:
            self.in_a_row += 1
            self.last_error = errors[-1]
        elif written:
            self.in_a_row = 0

    def store_failed(self, why: str) -> None:
        """The tracking store refused a write for lack of space or permission: stop after this trial."""
        self.store_error = why

    def stop(self) -> bool:
        """Whether to start no more trials (asked after each trial, :class:`sweep.storage.claims.Claims`)."""
        self.stopped = self.stopped or self.in_a_row >= self.stop_after or bool(self.store_error)
        return self.stopped

    def why(self) -> str:
        """The line the run ends with once :meth:`__call__` stopped the study."""
        if self.store_error:
            return (
                f"the MLflow tracking store cannot be written ({self.store_error}): stopped; free its disk and "
                "run the same command again (the next start closes the runs left open)"
            )
        return (
            f"the last {self.in_a_row} trials could write no artifact ({self.last_error}); their metrics and "
            "states are kept: free the artifact location and run the same command again"
        )


def _size(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def write_atomically(path: Path, text: str) -> None:
    """Write via a temporary file and a rename: never a half-written file at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
