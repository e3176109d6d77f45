"""In-process pruning decisions and batched intermediate values: the same decisions and the same stored
records as Optuna's own ``trial.report`` / ``trial.should_prune``, with fewer round trips."""

from __future__ import annotations

import math
import random
from pathlib import Path

import optuna
import pytest

from sweep.storage.pruning import Reports, decides_in_process
from sweep.storage.resilient import ResilientStorage
from sweep.storage.storage import trial_id

P = optuna.pruners
pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
PRUNERS = {
    "none": lambda: P.NopPruner(),
    "median": lambda: P.MedianPruner(),
    "median startup 3 warmup 2": lambda: P.MedianPruner(n_startup_trials=3, n_warmup_steps=2),
    "median interval 2": lambda: P.MedianPruner(n_startup_trials=2, interval_steps=2),
    "median min trials 4": lambda: P.MedianPruner(n_startup_trials=0, n_min_trials=4),
    "percentile 25": lambda: P.PercentilePruner(25.0, n_startup_trials=2),
    "patient over median": lambda: P.PatientPruner(P.MedianPruner(n_startup_trials=2), patience=2),
    "patient alone": lambda: P.PatientPruner(None, patience=1, min_delta=0.01),
}


def _curve(rng: random.Random, steps: int) -> list[float]:
    start, rate = rng.uniform(0.5, 2.0), rng.uniform(0.02, 0.3)
    return [start * math.exp(-rate * s) + rng.gauss(0, 0.05) for s in range(steps)]


def _run(storage: ResilientStorage, pruner: P.BasePruner, direction: str, in_process: bool, seed: int) -> None:
    """Twelve trials of noisy decaying curves, pruned by ``pruner`` the native way or through Reports."""
    study = optuna.create_study(
        study_name="p", storage=storage, pruner=pruner, direction=direction, sampler=optuna.samplers.RandomSampler(0)
    )
    rng = random.Random(seed)

    def objective(trial: optuna.Trial) -> float:
        trial.suggest_float("x", 0, 1)
        curve = _curve(rng, 8)
        reports = Reports(trial, storage, trial_id(storage, study, trial.number), flush_every_s=1e9)
        for step, value in enumerate(curve):
            if in_process:
                prune = reports.report(value, step)
            else:
                trial.report(value, step)
                prune = trial.should_prune()
            if prune:
                raise optuna.TrialPruned()
        reports.flush()
        return curve[-1]

    study.optimize(objective, n_trials=12)


def _records(storage: ResilientStorage) -> list[tuple]:
    study = optuna.load_study(study_name="p", storage=storage)
    return [(t.number, t.state.name, t.values, t.intermediate_values, t.params) for t in study.trials]


@pytest.mark.parametrize("name", PRUNERS)
@pytest.mark.parametrize("direction", ["minimize", "maximize"])
def test_in_process_pruning_stores_what_optuna_would(tmp_path: Path, name: str, direction: str) -> None:
    """Same decisions, same trial states, values and intermediate values, for every read-only pruner."""
    native = ResilientStorage(f"sqlite:///{tmp_path / 'native.db'}")
    ours = ResilientStorage(f"sqlite:///{tmp_path / 'ours.db'}")
    assert decides_in_process(PRUNERS[name]())
    _run(native, PRUNERS[name](), direction, in_process=False, seed=7)
    _run(ours, PRUNERS[name](), direction, in_process=True, seed=7)
    expected = _records(native)
    assert _records(ours) == expected
    if name.startswith("median") and direction == "minimize":
        assert any(state == "PRUNED" for _, state, *_ in expected)  # the comparison covers pruned trials


@pytest.mark.parametrize(
    "pruner",
    [P.HyperbandPruner(), P.SuccessiveHalvingPruner(), P.PatientPruner(P.SuccessiveHalvingPruner(), patience=1)],
    ids=["hyperband", "successive_halving", "patient over halving"],
)
def test_pruners_that_write_the_storage_keep_optunas_own_path(tmp_path: Path, pruner: P.BasePruner) -> None:
    assert not decides_in_process(pruner)
    storage = ResilientStorage(f"sqlite:///{tmp_path / 'o.db'}")
    study = optuna.create_study(storage=storage, pruner=pruner)
    trial = study.ask()
    reports = Reports(trial, storage, trial_id(storage, study, trial.number), flush_every_s=1e9)
    assert reports.native
    reports.report(1.0, 0)
    assert storage.get_trial(trial_id(storage, study, trial.number)).intermediate_values == {0: 1.0}  # at once


def test_values_wait_in_the_queue_until_flushed_or_pruned(tmp_path: Path) -> None:
    storage = ResilientStorage(f"sqlite:///{tmp_path / 'q.db'}")
    study = optuna.create_study(storage=storage, pruner=P.MedianPruner(n_startup_trials=1, n_warmup_steps=0))
    first = study.ask()
    for step, value in enumerate([1.0, 0.1, 0.1]):
        first.report(value, step)
    study.tell(first, 0.1)
    trial = study.ask()
    tid = trial_id(storage, study, trial.number)
    reports = Reports(trial, storage, tid, flush_every_s=1e9)
    assert not reports.report(0.5, 0) and storage.get_trial(tid).intermediate_values == {}  # queued
    assert not reports.report(9.0, 0)  # a step is reported once, as Trial.report
    assert reports.report(0.5, 1)  # its best (0.5) worse than the median at step 1: pruned, queue written first
    assert storage.get_trial(tid).intermediate_values == {0: 0.5, 1: 0.5}


def test_a_stale_queue_is_written_and_the_view_refreshed(tmp_path: Path) -> None:
    storage = ResilientStorage(f"sqlite:///{tmp_path / 's.db'}")
    study = optuna.create_study(storage=storage, pruner=P.MedianPruner(n_startup_trials=1, n_warmup_steps=0))
    trial = study.ask()
    tid = trial_id(storage, study, trial.number)
    reports = Reports(trial, storage, tid, flush_every_s=0.0)  # every value is already "old"
    assert not reports.report(1.0, 0)  # no complete trial yet: nothing to compare with
    assert storage.get_trial(tid).intermediate_values == {0: 1.0}
    other = study.ask()  # finishes while ours runs, better at every step
    for step in range(3):
        other.report(0.1, step)
    study.tell(other, 0.1)
    assert reports.report(1.0, 1)  # the refreshed view sees it: pruned


def test_members_of_a_group_share_one_view_read_at_most_every_flush_interval(tmp_path: Path) -> None:
    from sweep.storage.pruning import CompletedView

    storage = ResilientStorage(f"sqlite:///{tmp_path / 'v.db'}")
    study = optuna.create_study(storage=storage, pruner=P.MedianPruner(n_startup_trials=1, n_warmup_steps=0))
    reads = []
    view = CompletedView(study)
    refresh = view.refresh
    view.refresh = lambda: (reads.append(1), refresh())[1]  # type: ignore[method-assign]
    trials = [study.ask() for _ in range(4)]
    members = [Reports(t, storage, trial_id(storage, study, t.number), flush_every_s=0.0, view=view) for t in trials]
    for r in members:  # every queue is stale (flush_every_s 0): each writes, the view is re-read as it is "old"
        assert not r.report(1.0, 0)
    assert len(reads) == 4 and all(storage.get_trial(r.trial_id).intermediate_values == {0: 1.0} for r in members)
    slow = [
        Reports(t, storage, r.trial_id, flush_every_s=3600.0, view=view) for t, r in zip(trials, members, strict=True)
    ]
    view.refresh_if_older(3600.0)
    assert len(reads) == 4  # a fresh view is not re-read
    assert all(s._view is view for s in slow)


def _stored_rows(storage: ResilientStorage, tid: int) -> list[tuple[int, float | None, str]]:
    """The trial's rows in Optuna's ``trial_intermediate_values`` table, as stored (not as read back)."""
    from optuna.storages._rdb import models

    row = models.TrialIntermediateValueModel
    with storage.scoped_session() as session:
        found = session.query(row).filter(row.trial_id == tid).order_by(row.step)
        return [(r.step, r.intermediate_value, r.intermediate_value_type.name) for r in found]


@pytest.mark.parametrize("url", ["sqlite", "postgres"])
def test_a_batch_stores_the_rows_optunas_per_step_calls_store(url: str, tmp_path: Path) -> None:
    """Finite, NaN and ±inf values, a step written again (updated, not duplicated), steps out of order:
    the batched write leaves the same rows as one ``set_trial_intermediate_value`` per step, and refuses
    a finished trial as Optuna does."""
    if url == "postgres":
        from tests.conftest import PG_URL, postgres_error

        if postgres_error():
            pytest.skip(postgres_error() or "")
        url, name = PG_URL, f"batch-{random.Random().getrandbits(32):08x}"
    else:
        url, name = f"sqlite:///{tmp_path / 'b.db'}", "batch"
    storage = ResilientStorage(url)
    study = optuna.create_study(study_name=name, storage=storage)
    try:
        native, batched = study.ask(), study.ask()
        ids = trial_id(storage, study, native.number), trial_id(storage, study, batched.number)
        batches = [{0: 1.5, 1: float("nan"), 2: float("inf")}, {5: -float("inf"), 1: 0.25, 3: 2.0}, {2: 7.0}]
        for values in batches:
            for step, value in values.items():
                storage.set_trial_intermediate_value(ids[0], step, value)
            storage.set_trial_intermediate_values(ids[1], values)
        assert _stored_rows(storage, ids[1]) == _stored_rows(storage, ids[0])
        assert [s for s, _, _ in _stored_rows(storage, ids[1])] == [0, 1, 2, 3, 5]
        assert _stored_rows(storage, ids[1])[2] == (2, 7.0, "FINITE")
        study.tell(batched, 1.0)
        with pytest.raises(RuntimeError):  # Optuna's UpdateFinishedTrialError
            storage.set_trial_intermediate_values(ids[1], {9: 1.0})
        assert len(_stored_rows(storage, ids[1])) == 5
    finally:
        if url.startswith("postgresql"):
            optuna.delete_study(study_name=name, storage=url)
