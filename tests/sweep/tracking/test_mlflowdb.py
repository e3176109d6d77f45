"""A new MLflow SQLite store copied from the template is the database MLflow's own migrations make."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest
from mlflow import MlflowClient

from sweep.tracking import mlflowdb
from sweep.tracking.mlflowdb import build_template, seed_mlflow_db, template_path


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SWEEP_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


_VARYING = ("_time", "_id", "artifact_location", "artifact_uri")  # differ between any two stores


def _dump(db: Path) -> tuple[list, dict[str, list]]:
    """The schema (every table, index, trigger) and each table's rows, without times and paths."""
    with contextlib.closing(sqlite3.connect(db)) as con:
        # MLflow's own migrations write a table's constraints in no fixed order (two fresh databases
        # differ): compare each statement's lines as a set.
        schema = sorted(
            (kind, name, sorted(line.strip().rstrip(",") for line in (sql or "").splitlines()))
            for kind, name, sql in con.execute(
                "SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"
            )
        )
        rows = {}
        for (table,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
            cursor = con.execute(f'SELECT * FROM "{table}"')
            names = [d[0] for d in cursor.description]
            keep = [i for i, n in enumerate(names) if not n.endswith(_VARYING) and n not in ("timestamp", "run_uuid")]
            rows[table] = sorted(tuple(row[i] for i in keep) for row in cursor.fetchall())
    return schema, rows


def _use(folder: Path) -> str:
    """Open a tracking store in ``folder`` as sweep does: an experiment, a run with a metric and a tag."""
    client = MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}")
    experiment = client.create_experiment("study", artifact_location=str(folder / "artifacts"))
    run = client.create_run(experiment, run_name="trial-0", tags={"sweep.role": "trial"})
    client.log_metric(run.info.run_id, "val_total_loss", 0.5, step=3)
    return experiment


def test_a_copy_of_the_template_is_what_mlflow_migrations_make(tmp_path: Path, cache: Path) -> None:
    copied, migrated = tmp_path / "copied", tmp_path / "migrated"
    migrated.mkdir()
    assert seed_mlflow_db(f"sqlite:///{copied / 'mlflow.db'}")  # builds the template, then copies it
    assert template_path().parent == cache and template_path().exists()
    assert _use(copied) == _use(migrated) == "1"  # the same experiment ids: Default is 0 in both
    schema_copied, rows_copied = _dump(copied / "mlflow.db")
    schema_migrated, rows_migrated = _dump(migrated / "mlflow.db")
    assert schema_copied == schema_migrated and len(schema_copied) > 20
    assert rows_copied == rows_migrated
    assert rows_copied["experiments"][0][0] == "Default"  # made by MLflow on the copy's first open
    default = MlflowClient(tracking_uri=f"sqlite:///{copied / 'mlflow.db'}").get_experiment("0")
    fresh = MlflowClient(tracking_uri=f"sqlite:///{migrated / 'mlflow.db'}").get_experiment("0")
    assert default.name == fresh.name == "Default" and default.artifact_location == fresh.artifact_location


def test_an_existing_database_is_left_to_mlflow(tmp_path: Path, cache: Path) -> None:
    db = tmp_path / "mlflow.db"
    db.touch()  # even an empty file: it may be another process's database being made
    assert not seed_mlflow_db(f"sqlite:///{db}")
    assert db.stat().st_size == 0
    assert not seed_mlflow_db("postgresql://u@localhost/db") and not seed_mlflow_db("sqlite:///:memory:")
    assert not cache.exists()  # nothing built for stores it does not make


def test_a_database_made_meanwhile_by_another_process_is_not_overwritten(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "store" / "mlflow.db"
    db.parent.mkdir()
    real_copy = mlflowdb.shutil.copyfile

    def copy_while_another_process_creates_it(src: Path, dst: Path) -> Path:
        db.write_bytes(b"the other process's database")
        return real_copy(src, dst)

    monkeypatch.setattr(mlflowdb.shutil, "copyfile", copy_while_another_process_creates_it)
    assert not seed_mlflow_db(f"sqlite:///{db}")
    assert db.read_bytes() == b"the other process's database"
    assert [p.name for p in db.parent.iterdir()] == ["mlflow.db"]  # no temporary copy left behind


def test_a_broken_template_is_made_again_and_an_unusable_cache_falls_back(tmp_path: Path, cache: Path) -> None:
    cache.mkdir()
    template_path().write_bytes(b"not a database")
    assert seed_mlflow_db(f"sqlite:///{tmp_path / 'a' / 'mlflow.db'}")
    _use(tmp_path / "a")
    assert MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'a' / 'mlflow.db'}").get_experiment_by_name("study")

    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache folder should be")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SWEEP_CACHE_DIR", str(blocked / "sweep"))
        assert not seed_mlflow_db(f"sqlite:///{tmp_path / 'b' / 'mlflow.db'}")
        assert not (tmp_path / "b" / "mlflow.db").exists()
        _use(tmp_path / "b")  # MLflow migrates it itself, as without a template


def test_the_template_holds_no_experiment_and_no_journal(tmp_path: Path) -> None:
    path = build_template(tmp_path / "t.db")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.db"]  # no -wal/-shm, no temporary folder
    with contextlib.closing(sqlite3.connect(path)) as con:
        assert con.execute("PRAGMA journal_mode").fetchone() == ("delete",)
        assert con.execute("SELECT COUNT(*) FROM experiments").fetchone() == (0,)
        assert len(con.execute("SELECT version_num FROM alembic_version").fetchall()) == 1
