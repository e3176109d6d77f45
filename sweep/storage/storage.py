"""Optuna's side of a study: storage URLs, opening and loading studies, the records trials carry.

Everything here speaks to the Optuna storage only (no MLflow, no training), so the reading commands
(``sweep.report``, ``sweep.export``) import it without the runner.
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import optuna

from sweep.core.errors import SweepError, one_line
from sweep.core.records import Attr as Attr  # re-exported: the keys moved to sweep.core.records
from sweep.core.sqlite import private_dir, private_file
from sweep.core.urls import redact, seal, sqlite_init_lock, sqlite_path, unseal
from sweep.storage.resilient import ResilientStorage, StorageDown

DEFAULT_STORAGE = "sqlite:///.sweep/optuna.db"
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
T = TypeVar("T")


WEIGHTS = "weights.pt"  # the kept weights' artifact name: {model name: state_dict}


def storage_url(storage: str | None) -> str:
    """``study.storage``, or the embedded default (SQLite under ``.sweep/``)."""
    return storage or DEFAULT_STORAGE


class SealedStorage(ResilientStorage):
    """The study's storage, which stores no secret: user attributes (a trial's ``config``, the study's
    ``sweep.settings``...) are written with each secret known by value replaced by its reference
    (:func:`sweep.core.urls.seal`: ``${PGPASSWORD}``, ``${secret:objective.problem.options.token}``) and read
    back with the values this process knows (:func:`sweep.core.urls.unseal`): a resume compares, an evaluation
    retrains and an export writes what the file says, while the database holds only references."""

    on_running: Callable[[int], None] | None = None  # told each trial id this process makes RUNNING (Claims.created)
    stale_checked = False  # sweep.storage.claims just failed the stale trials: Study.optimize's own look is not needed

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        if self.stale_checked:  # one look the claim lock's critical section saves (sweep.storage.claims)
            self.stale_checked = False
            return []
        return super()._get_stale_trial_ids(study_id)  # type: ignore[no-any-return]

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        super().set_trial_user_attr(trial_id, key, seal(value))

    def set_trial_state_values(self, trial_id: int, state: optuna.trial.TrialState, values: Any = None) -> bool:
        stored: bool = super().set_trial_state_values(trial_id, state, values)
        if stored and state == optuna.trial.TrialState.RUNNING and self.on_running is not None:
            self.on_running(trial_id)  # a queued trial taken by Study.ask: the claim lock can go
        return stored

    def set_study_user_attr(self, study_id: int, key: str, value: Any) -> None:
        super().set_study_user_attr(study_id, key, seal(value))

    def get_study_user_attrs(self, study_id: int) -> dict[str, Any]:
        return unseal(super().get_study_user_attrs(study_id))  # type: ignore[no-any-return]

    def get_all_studies(self) -> list[optuna.study.FrozenStudy]:
        studies = super().get_all_studies()
        for study in studies:
            study.user_attrs = unseal(study.user_attrs)
        return studies

    def _create_new_trial(
        self, study_id: int, template_trial: optuna.trial.FrozenTrial | None = None
    ) -> optuna.trial.FrozenTrial:
        if template_trial is not None:  # a re-queued trial's copy (sweep.trials.recovery) or an enqueued one
            template_trial = copy.copy(template_trial)
            template_trial.user_attrs = seal(template_trial.user_attrs)
        trial = super()._create_new_trial(study_id, template_trial)
        trial.user_attrs = unseal(trial.user_attrs)
        if trial.state == optuna.trial.TrialState.RUNNING and self.on_running is not None:
            self.on_running(trial._trial_id)  # Study.ask's new trial exists: the claim lock can go
        return trial

    def _build_frozen_trial_from_trial_model(self, trial: Any) -> optuna.trial.FrozenTrial:
        frozen = super()._build_frozen_trial_from_trial_model(trial)
        frozen.user_attrs = unseal(frozen.user_attrs)
        return frozen


def open_storage(
    url: str,
    heartbeat: tuple[int, int, Callable] | None = None,
    retry_s: float = 120.0,
    wait_at_open: bool = False,
) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage (:class:`sweep.storage.resilient.ResilientStorage`: a blip or an outage shorter than
    ``retry_s`` seconds is waited out); SQLite gets a busy timeout so several local workers can share it.
    ``wait_at_open``: an unreachable storage is waited for at the first connection too (a worker whose
    coordinator has just opened the study), not refused at once.

    ``heartbeat`` = (interval, grace period, stale-trial callback): a worker that stops beating for the
    grace period has its trial failed by the next worker that looks, and the callback re-queues it.

    Raises:
        StorageDown: ``wait_at_open`` and the storage stayed unreachable for ``retry_s`` seconds.
        SweepError: the storage cannot be opened (unreachable server, missing driver, bad URL).
    """
    path = sqlite_path(url)
    if path is not None:  # a new database (and its -wal, -shm files) and folder: the owner's only
        private_dir(path.parent)
        private_file(path)
    engine_kwargs: dict[str, Any] = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    beat: dict[str, Any] = {}
    if heartbeat is not None:
        beat = {"heartbeat_interval": heartbeat[0], "grace_period": heartbeat[1]}
        beat["heartbeat_stale_trial_callback"] = heartbeat[2]
    try:
        with sqlite_init_lock(url):
            return retry_schema_race(
                lambda: SealedStorage(url, retry_s, wait_at_open, engine_kwargs=engine_kwargs, **beat)
            )
    except StorageDown:
        raise  # its own one line (how long, which setting, what to do)
    except Exception as e:  # sqlalchemy errors, missing drivers, bad URLs
        raise SweepError(f"cannot open Optuna storage {redact(url)}: {one_line(e, with_type=False)}") from None


_RACING = ("already exists", "database is locked", "UNIQUE constraint failed", "duplicate key")


def retry_schema_race(make: Callable[[], T], attempts: int = 5) -> T:
    """Call ``make``, retrying while another process is creating the same database schema.

    Workers started together on a new SQLite file (Optuna's or MLflow's) race to create its tables;
    the losers see "table ... already exists" or a unique-constraint error, and succeed a moment later.
    """
    for attempt in range(attempts):
        try:
            return make()
        except Exception as e:
            if attempt == attempts - 1 or not any(r in str(e) for r in _RACING):
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def load_existing_study(name: str, storage: str | None) -> optuna.Study:
    """The study ``name`` from its storage, for reading (report, export): creates nothing.

    Raises:
        SweepError: there is no such storage or study.
    """
    url = storage_url(storage)
    path = sqlite_path(url)
    if path is not None and not path.exists():
        raise SweepError(f"no study storage at {path}: run python -m sweep.run on the study file first")
    rdb = open_storage(url)
    try:
        return optuna.load_study(study_name=name, storage=rdb)
    except KeyError:
        raise SweepError(f"study {name!r} is not in {redact(url)}: run python -m sweep.run first") from None


def open_study(
    name: str,
    directions: tuple[str, ...],
    storage: optuna.storages.BaseStorage,
    sampler: optuna.samplers.BaseSampler,
    pruner: optuna.pruners.BasePruner,
) -> optuna.Study:
    """Create the study or load it to resume (``sampler``: see :class:`sweep.search.builders.SeededAtFirstTrial`,
    which keeps processes on one study from replaying each other's points).

    Raises:
        SweepError: the stored study optimises other directions than the file asks for.
    """
    summaries = {s.study_name: s for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}
    existing = summaries.get(name)
    if existing is not None and tuple(d.name.lower() for d in existing.directions) != directions:
        raise SweepError(
            f"study {name!r} in storage optimises {[d.name.lower() for d in existing.directions]}, "
            f"the file asks for {list(directions)}: use another study name"
        )
    return optuna.create_study(
        storage=storage,
        study_name=name,
        directions=list(directions),
        sampler=sampler,
        pruner=pruner,
        load_if_exists=True,
    )


def count_finished(study: optuna.Study) -> int:
    """Trials that count toward ``n_trials``: complete or pruned."""
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def best_value(study: optuna.Study) -> float | None:
    """The best value so far of a single-objective study (``None`` before the first complete trial)."""
    if len(study.directions) > 1:
        return None
    try:
        return study.best_value
    except ValueError:
        return None


def trial_id(storage: optuna.storages.BaseStorage, study: optuna.Study, number: int) -> int:
    """A trial's storage id through the storage's public API (a ``Trial`` does not expose it)."""
    study_id = storage.get_study_id_from_name(study.study_name)
    return storage.get_trial_id_from_study_id_trial_number(study_id, number)


def fail_stale_trials(study: optuna.Study) -> None:
    """Optuna's ``fail_stale_trials`` (dead processes' trials failed, handed to the stale-trial callback),
    without its "experimental" warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
