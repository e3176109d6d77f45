"""Optuna's side of a study (sweep/storage/storage.py): opening storages (SQLite files, the local PostgreSQL),
their one-line errors, the schema race of workers starting together, loading and resuming studies, the
counts and values read back, and the storage that stores secrets as references."""

from __future__ import annotations

import re
import stat
import uuid
import warnings
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from sweep.core.errors import SweepError
from sweep.core.urls import forget_secrets, remember_secret
from sweep.storage.storage import (
    DEFAULT_STORAGE,
    SealedStorage,
    best_value,
    count_finished,
    fail_stale_trials,
    load_existing_study,
    open_storage,
    open_study,
    retry_schema_race,
    storage_url,
    trial_id,
)
from tests.conftest import PG_URL, postgres_error

X = {"x": FloatDistribution(0, 1)}
needs_postgres = pytest.mark.skipif(bool(postgres_error()), reason=postgres_error() or "")


def _url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'optuna.db'}"


def test_the_optuna_storage_stores_references_and_gives_values_back(tmp_path: Path) -> None:
    """Every user attribute sweep writes (a trial's, the study's, a re-queued trial's copy) is stored with
    the known secrets as references, and read back through sweep's storage with the values."""
    forget_secrets()
    remember_secret("s3cr3t-in-attr", "${SWEEP_TEST_PW}")
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="sealed", storage=open_storage(url))
    study.set_user_attr("settings", {"dsn": "postgresql://u:s3cr3t-in-attr@h/x"})
    trial = study.ask()
    trial.set_user_attr("config", {"token": "s3cr3t-in-attr", "n": 3})
    study.tell(trial, 1.0)
    study.add_trial(  # how sweep.trials.recovery re-queues a dead trial: a copy of its attributes
        optuna.trial.create_trial(
            params={"x": 0.5},
            distributions={"x": FloatDistribution(0, 1)},
            state=optuna.trial.TrialState.WAITING,
            user_attrs=study.trials[0].user_attrs,
        )
    )
    assert study.user_attrs["settings"] == {"dsn": "postgresql://u:s3cr3t-in-attr@h/x"}
    assert [t.user_attrs for t in study.trials] == [{"config": {"token": "s3cr3t-in-attr", "n": 3}}] * 2

    raw = optuna.load_study(study_name="sealed", storage=url)  # Optuna's own storage: what is stored
    assert raw.user_attrs["settings"] == {"dsn": "postgresql://u:${SWEEP_TEST_PW}@h/x"}
    assert [t.user_attrs for t in raw.trials] == [{"config": {"token": "${SWEEP_TEST_PW}", "n": 3}}] * 2
    assert b"s3cr3t-in-attr" not in b"".join(p.read_bytes() for p in tmp_path.glob("optuna.db*"))
    forget_secrets()


def test_storage_url_defaults_to_sqlite_under_dot_sweep() -> None:
    assert storage_url(None) == storage_url("") == DEFAULT_STORAGE == "sqlite:///.sweep/optuna.db"
    assert storage_url(PG_URL) == PG_URL


def test_a_new_sqlite_storage_and_its_folders_are_the_owners_only(tmp_path: Path) -> None:
    """Folders made for it are 0700, the database 0600; opening it again finds the same studies."""
    url = f"sqlite:///{tmp_path / 'a' / 'b' / 'o.db'}"
    storage = open_storage(url)
    assert isinstance(storage, SealedStorage)
    optuna.create_study(storage=storage, study_name="s")
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == stat.S_IMODE((tmp_path / "a" / "b").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "a" / "b" / "o.db").stat().st_mode) == 0o600
    assert [s.study_name for s in open_storage(url).get_all_studies()] == ["s"]


@pytest.mark.parametrize(
    ("url", "said"),
    [
        (
            "postgresql+psycopg2://u:hunter2@127.0.0.1:1/db",
            "cannot open Optuna storage postgresql+psycopg2://u:***@127.0.0.1:1/db: ",
        ),
        (
            "postgresql+nosuchdriver://u:hunter2@h/db",
            "cannot open Optuna storage postgresql+nosuchdriver://u:***@h/db: ",
        ),
        ("not a url", "cannot open Optuna storage not a url: "),
    ],
    ids=["no server answers", "no such driver", "not a URL"],
)
def test_a_storage_that_cannot_be_opened_is_one_line_without_its_password(url: str, said: str) -> None:
    with pytest.raises(SweepError) as refused:
        open_storage(url)
    text = str(refused.value)
    assert text.startswith(said) and "hunter2" not in text and "\n" not in text, text
    assert len(text) > len(said) and refused.value.__cause__ is None


def test_the_schema_race_is_retried_and_other_errors_are_not(monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers creating one database's tables at once: the losers' errors are retried (waiting 0.5 s more each
    time); any other error at once; the last attempt's error is raised."""
    waits: list[float] = []
    monkeypatch.setattr("sweep.storage.storage.time.sleep", waits.append)
    errors = [RuntimeError("table studies already exists"), RuntimeError("UNIQUE constraint failed: x")]

    def make() -> str:
        if errors:
            raise errors.pop(0)
        return "made"

    assert retry_schema_race(make) == "made" and waits == [0.5, 1.0]
    calls: list[int] = []

    def fails(error: Exception) -> None:
        calls.append(1)
        raise error

    with pytest.raises(ValueError, match="bad URL"):
        retry_schema_race(lambda: fails(ValueError("bad URL")))
    assert len(calls) == 1
    calls.clear()
    with pytest.raises(RuntimeError, match="database is locked"):
        retry_schema_race(lambda: fails(RuntimeError("database is locked")), attempts=3)
    assert len(calls) == 3 and waits == [0.5, 1.0, 0.5, 1.0]


def test_load_existing_study_creates_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No database file: one line and no file made; a database without the study: one line naming it."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SweepError, match=r"^no study storage at .sweep/optuna.db: run python -m sweep.run"):
        load_existing_study("s", None)
    assert list(tmp_path.iterdir()) == []
    url = _url(tmp_path)
    optuna.create_study(storage=open_storage(url), study_name="s")
    with pytest.raises(SweepError, match=rf"^study 'other' is not in {re.escape(url)}: run python -m sweep.run first$"):
        load_existing_study("other", url)
    assert load_existing_study("s", url).study_name == "s"


@needs_postgres
def test_load_and_open_a_study_on_postgres() -> None:
    """The same on the local PostgreSQL: a missing study is one line; open_study creates, then resumes."""
    name = f"st-{uuid.uuid4().hex[:8]}"
    with pytest.raises(SweepError, match=rf"^study '{name}' is not in {re.escape(PG_URL)}: "):
        load_existing_study(name, PG_URL)
    storage = open_storage(PG_URL)
    try:
        made = open_study(name, ("minimize",), storage, optuna.samplers.RandomSampler(), optuna.pruners.NopPruner())
        made.tell(made.ask(X), 0.25)
        assert load_existing_study(name, PG_URL).best_value == 0.25
    finally:
        optuna.delete_study(study_name=name, storage=storage)
        storage.engine.dispose()


def test_open_study_resumes_the_same_directions_and_refuses_others(tmp_path: Path) -> None:
    storage = open_storage(_url(tmp_path))
    sampler, pruner = optuna.samplers.RandomSampler(), optuna.pruners.NopPruner()
    first = open_study("s", ("minimize", "maximize"), storage, sampler, pruner)
    first.tell(first.ask(X), [1.0, 2.0])
    again = open_study("s", ("minimize", "maximize"), storage, sampler, pruner)
    assert len(again.trials) == 1
    with pytest.raises(SweepError) as refused:
        open_study("s", ("maximize", "minimize"), storage, sampler, pruner)
    assert str(refused.value) == (
        "study 's' in storage optimises ['minimize', 'maximize'], the file asks for ['maximize', 'minimize']: "
        "use another study name"
    )
    with pytest.raises(SweepError, match="optimises"):
        open_study("s", ("minimize",), storage, sampler, pruner)


def test_count_finished_and_best_value() -> None:
    """Complete and pruned trials count toward ``n_trials``; failed, running and waiting ones do not. The best
    value is ``None`` until a trial completes, and for several objectives."""
    study = optuna.create_study()
    assert count_finished(study) == 0 and best_value(study) is None
    for state in (TrialState.FAIL, TrialState.PRUNED):
        study.tell(study.ask(X), state=state)
    study.ask(X)  # running
    study.enqueue_trial({"x": 0.5})  # waiting
    assert count_finished(study) == 1 and best_value(study) is None
    study.tell(study.ask(X), 0.75)
    study.tell(study.ask(X), 0.5)
    assert count_finished(study) == 3 and best_value(study) == 0.5
    both = optuna.create_study(directions=["minimize", "minimize"])
    both.tell(both.ask(X), [1.0, 2.0])
    assert count_finished(both) == 1 and best_value(both) is None


def test_trial_id_is_the_storage_id_not_the_number(tmp_path: Path) -> None:
    """Two studies in one storage: trial 0 of the second has another storage id than its number."""
    storage = open_storage(_url(tmp_path))
    first, second = (optuna.create_study(storage=storage, study_name=n) for n in ("a", "b"))
    for _ in range(2):
        first.ask(X)
    asked = second.ask(X)
    assert trial_id(storage, second, 0) == asked._trial_id == 3
    assert trial_id(storage, first, 1) == 2
    with pytest.raises(KeyError):
        trial_id(storage, second, 1)


def _stale_study(tmp_path: Path, failed: list[int]) -> tuple[optuna.Study, SealedStorage]:
    """A study with one RUNNING trial whose last heartbeat is long past its grace period."""
    from sqlalchemy import text

    with warnings.catch_warnings():  # heartbeats are "experimental", and meant for Study.optimize
        warnings.simplefilter("ignore")
        storage = open_storage(_url(tmp_path), heartbeat=(60, 120, lambda study, trial: failed.append(trial.number)))
        study = optuna.create_study(storage=storage, study_name="s")
        trial = study.ask(X)
    storage.record_heartbeat(trial._trial_id)
    with storage.engine.begin() as conn:
        conn.execute(text("UPDATE trial_heartbeats SET heartbeat = '2000-01-01 00:00:00'"))
    return study, storage  # type: ignore[return-value]


def test_fail_stale_trials_fails_a_dead_processs_trial_without_a_warning(tmp_path: Path) -> None:
    failed: list[int] = []
    study, _ = _stale_study(tmp_path, failed)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Optuna's "experimental" warning would raise
        fail_stale_trials(study)
    assert [t.state for t in study.trials] == [TrialState.FAIL] and failed == [0]


def test_a_look_the_claims_just_made_is_not_made_again(tmp_path: Path) -> None:
    """``stale_checked`` (set by the claims, which just failed the stale trials) skips the next look only."""
    failed: list[int] = []
    study, storage = _stale_study(tmp_path, failed)
    storage.stale_checked = True
    fail_stale_trials(study)
    assert [t.state for t in study.trials] == [TrialState.RUNNING] and not storage.stale_checked
    fail_stale_trials(study)
    assert [t.state for t in study.trials] == [TrialState.FAIL] and failed == [0]


def test_on_running_is_told_each_trial_this_process_makes_running(tmp_path: Path) -> None:
    """A new trial from ``ask`` and a queued one it takes are told (the claim lock can go); ending one is not."""
    storage = open_storage(_url(tmp_path))
    told: list[int] = []
    storage.on_running = told.append
    study = optuna.create_study(storage=storage, study_name="s")
    new = study.ask(X)
    study.enqueue_trial({"x": 0.5})
    queued = study.ask(X)
    study.tell(new, 1.0)
    study.tell(queued, 2.0)
    assert told == [new._trial_id, queued._trial_id]
