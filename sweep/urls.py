"""URL helpers: never print or record a password."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path

# A password may contain '/' or ':' (SQLAlchemy accepts them); it ends at the last '@' before the host.
_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^:/@\s]*):(?P<password>[^@\s]*)@")


def redact(url: str) -> str:
    """``postgresql://u:secret@h/db`` → ``postgresql://u:***@h/db``; URLs without a password unchanged."""
    return _CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:***@", url)


def sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:///`` URL (relative to the working directory), or ``None``."""
    if not url.startswith("sqlite:///"):
        return None
    path = url[len("sqlite:///") :].split("?", 1)[0]
    return None if path in ("", ":memory:") else Path(path)


def absolute_sqlite(url: str) -> str:
    """A ``sqlite:///relative.db`` URL made absolute (against the working directory now); others unchanged.

    MLflow caches its store per URI string within a process, so a relative path would keep pointing at
    the first directory it was opened from.
    """
    path = sqlite_path(url)
    if path is None or path.is_absolute():
        return url
    query = url.split("?", 1)[1] if "?" in url else ""
    return f"sqlite:///{path.resolve()}" + (f"?{query}" if query else "")


@contextlib.contextmanager
def sqlite_init_lock(url: str) -> Iterator[None]:
    """Hold an exclusive lock beside a SQLite file while its schema may be created or migrated.

    Optuna and MLflow both create (and MLflow migrates) their tables on first open; two processes
    doing it at once on one file break each other. Server URLs need no lock (nothing happens).
    """
    path = sqlite_path(url)
    if path is None:
        yield
        return
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
