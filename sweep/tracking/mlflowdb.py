"""A new MLflow SQLite database copied from a migrated, empty one instead of migrated from scratch.

MLflow creates a new SQLite tracking database by running its whole alembic migration history, one
migration after another: 0.7–1.6 s on this project's 2-core machine, about a tenth of the quickstart
study's wall time, paid by every new study folder (and every test that makes one). The result of
those migrations is the same for every new database of one MLflow version, so the first such
database this machine makes is kept, emptied, as a template in the cache folder (``$SWEEP_CACHE_DIR``,
else ``~/.cache/sweep``: :func:`objectives.helpers.cache_root`), one file per MLflow version, and later new
databases are copies of it. What the copy holds is exactly what MLflow's migrations made (its schema,
its ``alembic_version``, its default workspace) minus the ``Default`` experiment, which MLflow itself
creates on the copy's first open, with the artifact location of that place and time.

Only a database file that does not exist yet is made this way (an existing one, even empty, is left
to MLflow), and the copy appears atomically (a hard link of a finished temporary copy), so two
processes opening the same new store at once get one database. Anything that goes wrong here (a
cache folder that cannot be written, a template that does not check out) falls back to MLflow's own
migration: this module can make a database appear faster, never differently.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import tempfile
from pathlib import Path

from objectives.helpers import cache_root
from sweep.core.sqlite import private_dir, private_file
from sweep.core.urls import sqlite_path


def template_path() -> Path:
    """The template for the installed MLflow version (its schema changes between versions)."""
    from mlflow.version import VERSION

    return cache_root() / f"mlflow-{VERSION}.db"


def _valid(path: Path) -> bool:
    """A template is a SQLite file with a migration version and no experiment (cheap checks, ~1 ms)."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            version = db.execute("SELECT version_num FROM alembic_version").fetchall()
            experiments = db.execute("SELECT COUNT(*) FROM experiments").fetchone()[0]
        return len(version) == 1 and experiments == 0
    except sqlite3.Error:
        return False


def build_template(path: Path) -> Path:
    """Migrate a new database with MLflow's own store, empty it, and move it to ``path`` atomically."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".template-") as tmp:
        db = Path(tmp) / "mlflow.db"
        store = SqlAlchemyStore(f"sqlite:///{db}", str(Path(tmp) / "artifacts"))  # MLflow's migrations
        store.engine.dispose()
        with contextlib.closing(sqlite3.connect(db)) as con:
            con.execute("PRAGMA journal_mode=DELETE")  # one self-contained file (sweep.core.sqlite sets WAL)
            con.execute("DELETE FROM experiment_tags")
            con.execute("DELETE FROM experiments")  # MLflow re-creates Default where the copy is opened
            con.commit()
            con.execute("VACUUM")
        os.replace(db, path)
    return path


def seed_mlflow_db(uri: str) -> bool:
    """Make the SQLite database of tracking ``uri`` a copy of the template when it does not exist yet.

    Returns:
        Whether the database was made from the template (``False``: not SQLite, already there, or the
        template could not be made or used: MLflow then creates the database as it always does).
    """
    target = sqlite_path(uri)
    if target is None or target.exists():
        return False
    try:
        template = template_path()
        if not _valid(template):
            build_template(template)
            if not _valid(template):
                return False
        private_dir(target.parent)
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}-") as tmp:
            copy = Path(tmp) / target.name
            shutil.copyfile(template, copy)
            os.chmod(copy, 0o600)
            try:
                os.link(copy, target)  # atomic, and never over a database another process made meanwhile
            except FileExistsError:
                return False
        return True
    except Exception:  # any failure here leaves the database to MLflow, as without a template
        return False


def prepare_stores(uri: str, artifacts: Path | None) -> None:
    """Before MLflow opens tracking ``uri``: a new SQLite database made from the template
    (:func:`seed_mlflow_db`), and, made or not, the owner's only (an empty file, which MLflow migrates as
    it would a new one; its -wal and -shm files follow its mode), as is a new local ``artifacts`` folder."""
    seed_mlflow_db(uri)
    target = sqlite_path(uri)
    with contextlib.suppress(OSError):  # MLflow then says what is wrong with the place
        if target is not None:
            private_dir(target.parent)
            private_file(target)
        if artifacts is not None:
            private_dir(artifacts)
