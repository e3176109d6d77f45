"""Claims: when a process starts another trial, so that any number of processes end with exactly n_trials."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import optuna
import pytest

from sweep.core.interrupts import Interrupts
from sweep.storage.claims import Census, Claims, census, study_lock
from sweep.storage.storage import open_storage
from tests.conftest import PG_URL, postgres_error
from tests.sweep.storage.test_claimlock import LOCK_URLS

X = {"x": optuna.distributions.FloatDistribution(0, 1)}


@pytest.mark.parametrize(
    ("finished", "running", "waiting", "expected"),
    [
        (5, 0, 0, "stop"),  # done
        (6, 1, 0, "stop"),  # over (a lock-less database): still done
        (3, 2, 0, "wait"),  # two live trials may finish it; one may fail, then top up
        (3, 2, 1, "wait"),  # a re-queued trial waits for a place, it does not overshoot
        (3, 1, 0, "run"),  # a place is free
        (0, 0, 1, "run"),  # an enqueued baseline (ask takes it first)
    ],
)
def test_decision(finished: int, running: int, waiting: int, expected: str) -> None:
    assert Census(finished, running, waiting).decide(5) == expected


def _study(tmp_path: Path) -> tuple[optuna.Study, optuna.storages.RDBStorage, str]:
    url = f"sqlite:///{tmp_path / 'o.db'}"
    rdb = open_storage(url)
    return optuna.create_study(storage=rdb, study_name="c"), rdb, url


def test_a_process_stops_when_others_filled_the_study(tmp_path: Path) -> None:
    """Another machine filled the study: this process claims nothing."""
    study, rdb, url = _study(tmp_path)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=5)
    claims = Claims(study, rdb.engine, url, 5, 1, Interrupts())
    assert not claims.claim()


def test_failed_trials_are_replaced_until_as_many_failed_as_n_trials(tmp_path: Path) -> None:
    """A failing trial does not count: the process tops up; when n_trials of its own failed it gives up."""
    study, rdb, url = _study(tmp_path)
    claims = Claims(study, rdb.engine, url, 3, 1, Interrupts())

    def objective(trial: optuna.Trial) -> float:
        claims.release()
        x = trial.suggest_float("x", 0, 1)
        if trial.number in (0, 2):
            raise ValueError("two trials fail")
        return x

    assert claims.claim()
    study.optimize(objective, catch=(ValueError,), callbacks=[claims])
    states = [t.state.name for t in study.trials]
    assert states == ["FAIL", "COMPLETE", "FAIL", "COMPLETE", "COMPLETE"] and not claims.gave_up and claims.ran == 5

    always, rdb2, url2 = _study(tmp_path / "b")
    claims = Claims(always, rdb2.engine, url2, 2, 1, Interrupts())

    def fails(trial: optuna.Trial) -> float:
        claims.release()
        raise ValueError("no")

    assert claims.claim()
    always.optimize(fails, catch=(ValueError,), callbacks=[claims])
    assert len(always.trials) == 2 and claims.gave_up


def test_a_process_waits_for_live_trials_and_tops_up_when_one_fails(tmp_path: Path) -> None:
    """Finished + running reach n_trials: wait; the running one fails: this process runs the missing one."""
    study, rdb, url = _study(tmp_path)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    other = study.ask(X)  # another process's live trial
    waiting = threading.Event()
    claims = Claims(study, rdb.engine, url, 3, 0.2, Interrupts(), say=lambda _line: waiting.set())
    result: list[bool] = []
    waiter = threading.Thread(target=lambda: result.append(claims.claim()))
    waiter.start()
    assert waiting.wait(60), "the claim never decided to wait"
    assert waiter.is_alive() and not result  # waiting, not over-claiming
    study.tell(other, state=optuna.trial.TrialState.FAIL)
    waiter.join(10)
    assert result == [True]
    claims.release()


def _claims_race(url: str, name: str, processes: int, target: int) -> list[int]:
    """``processes`` threads, each with its own storage connection, claim at once until the study is done."""
    optuna.create_study(storage=url, study_name=name)
    taken: list[int] = []

    def worker() -> None:
        rdb = open_storage(url)
        study = optuna.load_study(study_name=name, storage=rdb)
        claims = Claims(study, rdb.engine, url, target, 0.1, Interrupts())
        while claims.claim():
            trial = study.ask(X)
            claims.release()
            taken.append(trial.number)
            time.sleep(0.01)
            study.tell(trial, 0.5)

    threads = [threading.Thread(target=worker) for _ in range(processes)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return taken


def test_racing_claims_on_sqlite_end_exactly_at_n_trials(tmp_path: Path) -> None:
    taken = _claims_race(f"sqlite:///{tmp_path / 'r.db'}", "race", 4, 12)
    assert sorted(taken) == list(range(12))


@pytest.mark.skipif(bool(postgres_error()), reason=postgres_error() or "")
def test_racing_claims_on_postgres_end_exactly_at_n_trials() -> None:
    name = f"race-{uuid.uuid4().hex[:8]}"
    try:
        taken = _claims_race(PG_URL, name, 4, 12)
        assert sorted(taken) == list(range(12))
        assert census(optuna.load_study(study_name=name, storage=PG_URL)) == Census(12, 0, 0)
    finally:
        optuna.delete_study(study_name=name, storage=PG_URL)


@pytest.mark.skipif(bool(postgres_error()), reason=postgres_error() or "")
def test_a_claim_whose_lock_died_in_a_blip_yields_to_the_earlier_trial() -> None:
    """A's lock connection is dropped while it holds the claim (a blip): B claims the same last place.
    Each counts again once its trial exists, by the same rule: A's trial is the earlier (lower number),
    so it is wanted; B's is not, though B's lock held to the end: exactly one of the two trains."""
    from tests.support.pgtools import _admin, database, pg

    with database() as db:
        url = pg(db)
        rdb_a, rdb_b = open_storage(url), open_storage(url)
        study_a = optuna.create_study(storage=rdb_a, study_name="blip")
        study_b = optuna.load_study(storage=rdb_b, study_name="blip")
        a = Claims(study_a, rdb_a.engine, url, 1, 0.1, Interrupts())
        b = Claims(study_b, rdb_b.engine, url, 1, 0.1, Interrupts())
        assert a.claim()
        admin = _admin()
        admin.cursor().execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{db}' AND pid <> pg_backend_pid()"  # a blip: every connection dropped
        )
        admin.close()
        assert b.claim()  # the lock is free again: B sees no trial yet and claims
        trial_a = study_a.ask()  # A's trial first (the lower number): it trains, whichever lock held
        trial_b = study_b.ask()
        assert b.release(trial_b.number) is False
        assert a.release(trial_a.number) is True
        assert b.surplus == {trial_b.number} and not a.surplus
        rdb_a.engine.dispose()
        rdb_b.engine.dispose()


class _LookingSampler(optuna.samplers.RandomSampler):
    """A sampler that, as Optuna builds each trial, tries the claim lock from another connection."""

    def __init__(self, engine: object, url: str) -> None:
        super().__init__(seed=0)
        self.engine, self.url = engine, url
        self.free: list[bool] = []

    def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        with study_lock(self.engine, self.url, study.study_name, wait=0) as held:
            self.free.append(held.taken)


@pytest.mark.parametrize("url", LOCK_URLS[:2])
def test_the_lock_is_let_go_as_soon_as_the_trial_exists(url: str, tmp_path: Path) -> None:
    """The critical section ends when the trial's row exists (the storage tells the claims), before Optuna
    builds the trial (the sampler's work): another connection can take the lock by then."""
    url = f"sqlite:///{tmp_path / 'o.db'}" if url == "sqlite" else url
    rdb = open_storage(url)
    name = f"soon-{uuid.uuid4().hex[:8]}"
    sampler = _LookingSampler(rdb.engine, url)
    study = optuna.create_study(storage=rdb, study_name=name, sampler=sampler)
    try:
        claims = Claims(study, rdb.engine, url, 2, 0.1, Interrupts(), storage=rdb)
        study.enqueue_trial({"x": 0.5})  # a queued trial taken by ask: the same
        for _ in range(2):
            assert claims.claim()
            assert rdb.stale_checked  # just looked: Study.optimize's look before ask is skipped
            trial = study.ask(X)
            assert not rdb.stale_checked
            assert claims.release(trial.number)
            study.tell(trial, 0.5)
        assert sampler.free == [True, True]
        assert not claims.claim()
    finally:
        optuna.delete_study(study_name=name, storage=rdb)
        rdb.engine.dispose()


def test_claims_made_beside_each_other_leave_the_lowest_to_train(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Three processes give up waiting for a stopped holder and claim at once for the study's last place:
    once their trials exist, each counts the finished trials and the lower-numbered RUNNING ones: only the
    lowest trains, whatever order they count in; the surplus ones are not counted as run or failed."""
    study, rdb, url = _study(tmp_path)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    processes = [Claims(study, rdb.engine, url, 2, 0.1, Interrupts(), grace=0) for _ in range(3)]
    with study_lock(rdb.engine, url, "c"):  # the stopped holder
        assert all(claims.claim() for claims in processes)  # each decided on the same count
    said = [line for line in capsys.readouterr().err.splitlines() if "claim lock" in line]
    assert len(said) == 3 and all("claiming without it" in line for line in said), said
    trials = [study.ask(X) for _ in processes]
    wanted = [claims.release(t.number) for claims, t in reversed(list(zip(processes, trials, strict=True)))]
    assert wanted == [False, False, True]  # trials 3 and 2 are surplus; trial 1 trains
    for claims, trial in zip(processes[1:], trials[1:], strict=True):
        frozen = study.tell(trial, state=optuna.trial.TrialState.FAIL)
        assert claims.count(frozen) and (claims.ran, claims.failed) == (0, 0)
    study.tell(trials[0], 0.5)
    assert not any(claims.claim() for claims in processes)  # the study is full


def test_a_dead_trials_run_is_closed_after_the_lock_is_let_go(tmp_path: Path) -> None:
    """The stale-trial callback re-queues the dead trial at once but closes its MLflow run (a tracking
    server's round trips) only once this process holds no claim lock."""
    from sweep.trials.recovery import DeadTrials

    study, rdb, url = _study(tmp_path)
    dead = study.ask(X)
    rdb.set_trial_user_attr(dead._trial_id, "mlflow_run_id", "run-1")
    rdb.set_trial_state_values(dead._trial_id, optuna.trial.TrialState.FAIL)
    calls: list[str] = []

    class Client:
        def log_batch(self, run_id: str, **_: object) -> None:
            calls.append(run_id)

        def set_terminated(self, run_id: str, status: str) -> None:
            calls.append(status)

    callback = DeadTrials(None, 2, 5)
    callback.bind(Client())  # type: ignore[arg-type]
    with study_lock(rdb.engine, url, "c"):
        callback(study, study.trials[0])
        assert [t.state.name for t in study.trials] == ["FAIL", "WAITING"] and not calls
    assert calls == ["run-1", "FAILED"]


@pytest.mark.parametrize("url", LOCK_URLS[:2])
def test_a_dead_trial_is_failed_and_requeued_while_the_claim_lock_is_held(url: str, tmp_path: Path) -> None:
    """A claim fails the dead processes' trials and re-queues them under the lock: another process counting
    between the two (the dead trial failed, its retry not yet queued) would take the free place with a fresh
    trial and leave the retry WAITING once the study is full, the dead point never run."""
    from sqlalchemy import text

    from sweep.trials.recovery import requeue

    url = f"sqlite:///{tmp_path / 'o.db'}" if url == "sqlite" else url
    name = f"dead-{uuid.uuid4().hex[:8]}"
    free: list[bool] = []

    def callback(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        with study_lock(rdb.engine, url, name, wait=0) as held:  # as another process would try it
            free.append(held.taken)
        requeue(study, trial, None)

    rdb = open_storage(url, heartbeat=(1, 2, callback))
    study = optuna.create_study(storage=rdb, study_name=name)
    try:
        dead = study.ask(X)  # its process died before it beat: stale once it started over 2 s ago
        with rdb.engine.begin() as conn:
            conn.execute(
                text("UPDATE trials SET datetime_start = :t WHERE trial_id = :i"),
                {"t": datetime.now() - timedelta(hours=1), "i": dead._trial_id},
            )
        claims = Claims(study, rdb.engine, url, 2, 0.1, Interrupts(), storage=rdb)
        assert claims.claim()
        assert free == [False]  # failed and re-queued inside the critical section
        retry = study.ask(X)
        assert claims.release(retry.number)
        assert retry.params == dead.params
        assert [t.state.name for t in study.trials] == ["FAIL", "RUNNING"]
    finally:
        optuna.delete_study(study_name=name, storage=rdb)
        rdb.engine.dispose()
