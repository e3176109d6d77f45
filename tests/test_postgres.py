"""The same study on PostgreSQL and MariaDB storage (the scale-out path), against the real local servers."""

from __future__ import annotations

import uuid
from pathlib import Path

import optuna
import pytest

from tests.conftest import PG_URL, postgres_error, run_cli, run_main, tiny_study, write_yaml
from tests.support.pgtools import pg_study

URL = PG_URL


needs_postgres = pytest.mark.skipif(bool(postgres_error()), reason=postgres_error() or "")


@pytest.mark.slow
@needs_postgres
def test_study_on_postgres(tmp_path: Path) -> None:
    """sweep.run with a postgresql:// storage creates, runs and resumes the study there."""
    name = f"pg-{uuid.uuid4().hex[:10]}"
    path = write_yaml(tmp_path / "pg.yaml", tiny_study(name, study={"storage": URL, "n_trials": 2}))
    try:
        first = run_cli("sweep.run", str(path), "--no-report", cwd=tmp_path)
        assert first.returncode == 0, first.stderr
        again = run_main("sweep.run", str(path), "--n-trials", "3", "--no-report", cwd=tmp_path)
        assert again.returncode == 0, again.stderr
        study = pg_study(name, URL)
        assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
        assert all("mlflow_run_id" in t.user_attrs for t in study.trials)
    finally:
        optuna.delete_study(study_name=name, storage=URL)


@pytest.mark.slow
@needs_postgres
def test_unreachable_storage_is_one_line(tmp_path: Path) -> None:
    """A storage that does not answer gives one error line, exit 1, and no MLflow store."""
    url = "postgresql+psycopg2://postgres@127.0.0.1:1/test"
    path = write_yaml(tmp_path / "down.yaml", tiny_study("down", study={"storage": url}))
    result = run_cli("sweep.run", str(path), cwd=tmp_path)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot open Optuna storage postgresql+psycopg2://")
    assert not (tmp_path / "mlflow.db").exists()


def _mariadb_error() -> str | None:
    try:
        import pymysql

        pymysql.connect(host="127.0.0.1", port=3306, user="root", database="test", connect_timeout=3).close()
    except ImportError:
        return "pymysql is not installed (pip install -e '.[dev]')"
    except Exception as e:  # OperationalError: no server answers
        return f"no MariaDB/MySQL answers at 127.0.0.1:3306/test ({type(e).__name__})"
    return None


@pytest.mark.slow
@pytest.mark.skipif(bool(_mariadb_error()), reason=_mariadb_error() or "")
def test_study_on_mariadb(tmp_path: Path) -> None:
    """The same study on a mysql:// storage (the local MariaDB) with two workers."""
    url = "mysql+pymysql://root@127.0.0.1:3306/test"
    name = f"my-{uuid.uuid4().hex[:10]}"
    path = write_yaml(
        tmp_path / "my.yaml",
        tiny_study(name, study={"storage": url, "n_trials": 3, "pruner": "none", "grace_period": 120}),
    )
    try:
        result = run_cli("sweep.run", str(path), "--workers", "2", "--no-report", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        study = optuna.load_study(study_name=name, storage=url)
        assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    finally:
        optuna.delete_study(study_name=name, storage=url)


README_URL = "postgresql://postgres@127.0.0.1:5432/test"  # the documented form: no +driver, SQLAlchemy picks psycopg 3


@needs_postgres  # the server answers (checked with psycopg2); psycopg 3 itself must be installed
def test_readme_postgresql_url_runs_a_study(tmp_path: Path) -> None:
    """The URL form docs/howto/scale-out.md shows,
    ``postgresql://user@host:port/db`` without a driver name, works with the
    installed dependencies (SQLAlchemy 2.1 maps it to psycopg 3, which pyproject.toml installs): fails,
    not skips, without that driver."""
    import sqlalchemy

    assert sqlalchemy.make_url(README_URL).get_dialect().driver == "psycopg"
    name = f"pg3-{uuid.uuid4().hex[:10]}"
    path = write_yaml(tmp_path / "pg.yaml", tiny_study(name, study={"storage": README_URL, "n_trials": 2}))
    try:
        result = run_main("sweep.run", str(path), "--no-report", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        study = pg_study(name, README_URL)
        assert [t.state.name for t in study.trials] == ["COMPLETE"] * 2
    finally:
        optuna.delete_study(study_name=name, storage=README_URL)
