"""Secrets are masked by value and never stored: every value a study file took from the environment, and
every credential once known (a URL's password, a ``password=`` in a DSN, the value of an option named
like a password, passphrase, secret, api_key or token), appears in no output, no MLflow record, no
Optuna record and no export; the local stores a study creates are readable by their owner only."""

from __future__ import annotations

import os
import re
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path
from subprocess import CompletedProcess

import optuna
import pytest
import yaml
from mlflow import MlflowClient

from objectives.problems import Problem, build_problem
from sweep.core.errors import ConfigError
from sweep.studyfile.config import load_study
from tests.conftest import run_main, tiny_study, write_yaml

# What the user problem below was built with, call after call (a search's trials, an evaluation's seeds).
RECEIVED: list[dict[str, object]] = []


def with_options(seed: int, **options: object) -> Problem:
    """``linear_pair`` (with a test split), taking any options and recording what it was given."""
    RECEIVED.append(dict(options))
    return build_problem("linear_pair", {"dim": 4, "n_a": 64, "n_b": 128, "n_val": 64}, seed)  # type: ignore[return-value]


def _pieces(secret: str) -> list[str]:
    """The secret and its parts a pattern could leave behind (cut at a space, a quote or an '@'), those
    long enough to be told apart from any other text."""
    return [secret, *(p for p in re.split(r"[\s'\"@]", secret) if len(p) >= 8)]


def _everything(
    root: Path, outputs: list[CompletedProcess[str]], skip: tuple[str, ...] = ("s.yaml",)
) -> Iterator[tuple[str, bytes]]:
    """(where, bytes) of every output and every file under ``root`` (the study file itself excepted)."""
    for o in outputs:
        yield f"{o.args[0]} stdout", o.stdout.encode()
        yield f"{o.args[0]} stderr", o.stderr.encode()
    for file in sorted(root.rglob("*")):
        if file.is_file() and file.name not in skip:
            yield str(file.relative_to(root)), file.read_bytes()


def _leaks(secrets: list[str], root: Path, outputs: list[CompletedProcess[str]]) -> list[tuple[str, str]]:
    found = []
    for where, data in _everything(root, outputs):
        for secret in secrets:
            for piece in _pieces(secret):
                if piece.encode() in data:
                    found.append((where, piece))
    return found


@pytest.mark.filterwarnings("ignore:Query string argument:Warning")  # SQLAlchemy: SQLite ignores ?password=
def test_a_password_with_a_space_a_quote_and_an_at_sign_from_the_environment_is_nowhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``?password=${VAR}`` whose value holds a space, a quote and an '@' (the URL pattern stops at the first
    two): not in the summary, the parent run's ``sweep.storage`` tag, the export's ``provenance.storage``,
    nor any byte of the Optuna or MLflow stores, artifacts and report."""
    password = f'p@ss w"rd{uuid.uuid4().hex[:12]}'
    monkeypatch.setenv("SWEEP_TEST_PW", password)
    storage = "sqlite:///optuna.db?password=${SWEEP_TEST_PW}"
    write_yaml(tmp_path / "s.yaml", tiny_study("quoted", study={"storage": storage, "n_trials": 2}))
    outputs = [run_main("sweep.run", "s.yaml", "--no-progress", cwd=tmp_path)]  # with the report
    outputs.append(run_main("sweep.export", "s.yaml", "-o", "best.yaml", cwd=tmp_path))
    assert [o.returncode for o in outputs] == [0, 0], [o.stderr for o in outputs]

    assert _leaks([password], tmp_path, outputs) == []
    assert "in sqlite:///optuna.db?password=***" in outputs[0].stdout
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    parent = client.search_runs([client.get_experiment_by_name("quoted").experiment_id], "tags.`sweep.role` = 'parent'")
    assert parent[0].data.tags["sweep.storage"] == "sqlite:///optuna.db?password=***"
    exported = yaml.safe_load((tmp_path / "best.yaml").read_text())
    assert exported["provenance"]["storage"] == "sqlite:///optuna.db?password=***"
    assert exported["study"]["storage"] == storage  # the reference, as the file wrote it


def test_a_password_with_an_at_sign_is_masked_in_the_drivers_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unencoded '@' splits the password: the driver reports the rest as the host name
    (``could not translate host name "<rest>@127.0.0.1"``); that rest is masked too."""
    rest = f"Pw{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("SWEEP_TEST_PW", f"s3cr@{rest}")
    storage = "postgresql+psycopg2://postgres:${SWEEP_TEST_PW}@127.0.0.1:5432/test"
    write_yaml(tmp_path / "s.yaml", tiny_study("at-sign", study={"storage": storage}))
    result = run_main("sweep.run", "s.yaml", "--no-progress", cwd=tmp_path)
    assert result.returncode == 1 and "cannot open Optuna storage" in result.stderr, result.stderr
    assert rest not in result.stderr + result.stdout
    assert "***@127.0.0.1" in result.stderr  # the driver's words stay, the secret's part masked


def test_an_error_echoing_an_interpolated_value_masks_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``study.metric: val_${VAR}`` is refused naming the metric, the value from the environment masked."""
    secret = f"Sx{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("SWEEP_TEST_SECRET", secret)
    write_yaml(tmp_path / "s.yaml", tiny_study("echo", study={"metric": "val_${SWEEP_TEST_SECRET}"}))
    result = run_main("sweep.run", "s.yaml", "--no-progress", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "study.metric" in result.stderr and "val_***" in result.stderr
    assert secret not in result.stderr + result.stdout
    with pytest.raises(ConfigError) as caught:
        load_study(tmp_path / "s.yaml")
    assert secret not in str(caught.value)


def test_problem_options_with_credentials_are_stored_nowhere_and_still_reach_the_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A user problem's options: a DSN URL and a libpq string with passwords from the environment, a
    ``passphrase`` from the environment, a ``secret``, an ``api_key`` and a ``token`` written literally.
    None is in any output, Optuna or MLflow record, artifact, report or export; the Optuna records hold
    references (the trial's config, the study's settings), so a resume with the same file is accepted and
    an evaluation retrains with the real values; the export writes references, never a value."""
    hexes = [uuid.uuid4().hex[:12] for _ in range(6)]
    env = {"SWEEP_TEST_DSN_PW": f"dsn-{hexes[0]}", "SWEEP_TEST_CONN_PW": f"conn{hexes[1]}"}
    env["SWEEP_TEST_PASSPHRASE"] = f"correct horse {hexes[2]}"
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    literal = {"secret": f"lit-secret-{hexes[3]}", "api_key": f"lit-key-{hexes[4]}", "token": f"lit-tok-{hexes[5]}"}
    options = {
        "dsn": "postgresql://svc:${SWEEP_TEST_DSN_PW}@db.internal/x",
        "conn": "host=db password=${SWEEP_TEST_CONN_PW} sslmode=require",
        "passphrase": "${SWEEP_TEST_PASSPHRASE}",
        **literal,
        "label": "plain-words",
    }
    doc = tiny_study("opts", study={"n_trials": 2}, evaluate={"seeds": 1})
    doc["objective"]["problem"] = {"name": "tests.test_secrets:with_options", "options": options}
    write_yaml(tmp_path / "s.yaml", doc)
    secrets = [*env.values(), *literal.values()]
    real = {
        **options,
        **literal,
        "dsn": f"postgresql://svc:{env['SWEEP_TEST_DSN_PW']}@db.internal/x",
        "conn": f"host=db password={env['SWEEP_TEST_CONN_PW']} sslmode=require",
        "passphrase": env["SWEEP_TEST_PASSPHRASE"],
    }

    RECEIVED.clear()
    outputs = [run_main("sweep.run", "s.yaml", "--no-progress", cwd=tmp_path)]  # search, evaluation, report
    outputs.append(run_main("sweep.run", "s.yaml", "--no-progress", "--n-trials", "3", cwd=tmp_path))  # resumed
    outputs.append(run_main("sweep.export", "s.yaml", "-o", "best.yaml", cwd=tmp_path))
    assert [o.returncode for o in outputs] == [0, 0, 0], [o.stderr for o in outputs]
    assert "not be comparable" not in outputs[1].stderr and "Evaluating on the test split" in outputs[0].stdout
    assert RECEIVED and all(r == real for r in RECEIVED)  # the search's trials and the evaluation's seed

    assert _leaks(secrets, tmp_path, outputs) == []
    study = optuna.load_study(study_name="opts", storage=f"sqlite:///{tmp_path / '.sweep' / 'optuna.db'}")
    stored = study.trials[0].user_attrs["config"]["problem"]["options"]
    assert stored["passphrase"] == "${SWEEP_TEST_PASSPHRASE}" and stored["dsn"] == options["dsn"]
    assert stored["label"] == "plain-words" and stored["secret"] != literal["secret"]
    assert study.user_attrs["sweep.settings"]["objective.problem.options.conn"] == options["conn"]
    assert len(study.trials) == 3

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    params = client.get_run(study.trials[0].user_attrs["mlflow_run_id"]).data.params
    assert params["problem.options.label"] == "plain-words"  # what is no credential stays readable
    assert params["problem.options.passphrase"] == "***" and params["problem.options.dsn"].startswith("postgresql://")

    exported = yaml.safe_load((tmp_path / "best.yaml").read_text())["objective"]["problem"]["options"]
    assert {k: exported[k] for k in ("dsn", "conn", "passphrase", "label")} == {
        k: options[k] for k in ("dsn", "conn", "passphrase", "label")
    }
    assert {k: exported[k] for k in literal} == dict.fromkeys(literal, "${SWEEP_PASSWORD}")


def test_a_credential_in_the_artifact_location_is_refused(tmp_path: Path) -> None:
    """MLflow copies ``artifact_location`` into every run's ``artifact_uri``: a token in its query (or a
    password in it) is refused before anything is created, naming the variable the store reads instead."""
    for location, variable in (
        ("s3://bucket/mlflow?token=tk-abcdef123", "AWS_SESSION_TOKEN"),
        ("https://user:pw-abcdef123@store.internal/artifacts", "MLFLOW_TRACKING_PASSWORD"),
    ):
        write_yaml(tmp_path / "s.yaml", tiny_study("loc", tracking={"artifact_location": location}))
        result = run_main("sweep.run", "s.yaml", "--no-progress", cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        assert "tracking.artifact_location" in result.stderr and variable in result.stderr
        assert "abcdef123" not in result.stderr and len(result.stderr.splitlines()) == 1
        assert not (tmp_path / ".sweep").exists() and not (tmp_path / "mlflow.db").exists()


def test_the_local_stores_are_readable_by_their_owner_only(tmp_path: Path) -> None:
    """Made under the usual umask (022): the Optuna folder, the Optuna and MLflow databases with their WAL
    files, and the artifact folder are the owner's only (0600 files, 0700 folders; the empty lock files
    beside the MLflow database hold nothing; the claim locks in the Optuna folder name their holder: 0600)."""
    write_yaml(tmp_path / "s.yaml", tiny_study("modes", study={"n_trials": 1}))
    previous = os.umask(0o022)
    try:
        result = run_main("sweep.run", "s.yaml", "--no-progress", cwd=tmp_path)
    finally:
        os.umask(previous)
    assert result.returncode == 0, result.stderr
    modes = {
        str(p.relative_to(tmp_path)): stat.S_IMODE(p.stat().st_mode)
        for p in [tmp_path / ".sweep", tmp_path / "mlartifacts", *tmp_path.glob("*.db*"), *tmp_path.glob(".sweep/*")]
        if not (p.name.endswith(".lock") and p.parent == tmp_path)
    }
    assert {".sweep", "mlartifacts", "mlflow.db", ".sweep/optuna.db"} <= set(modes)
    assert modes == {p: (0o700 if (tmp_path / p).is_dir() else 0o600) for p in modes}


def test_what_optuna_and_mlflow_log_during_trials_is_masked(tmp_path: Path) -> None:
    """A library's log line holding a known secret or a URL's password (an Optuna storage warning, an
    MLflow artifact error) is written masked by the handlers they log through."""
    import io
    import logging

    from sweep.core.urls import forget_secrets, remember_secret
    from sweep.trials.console import optuna_output

    forget_secrets()
    remember_secret("s3cr3t-logged", "${SWEEP_TEST_PW}")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    loggers = [logging.getLogger("optuna"), logging.getLogger("mlflow")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        with optuna_output(verbose=False):
            logging.getLogger("optuna.storages._rdb").warning("retrying %s", "postgresql://u:pw-in-url@h/db")
            logging.getLogger("mlflow.store.artifact").warning("cannot write with s3cr3t-logged")
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
        forget_secrets()
    assert stream.getvalue() == "retrying postgresql://u:***@h/db\ncannot write with ***\n"
