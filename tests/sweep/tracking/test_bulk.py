"""Many runs' records in one transaction (:mod:`sweep.tracking.bulk`): the same rows MLflow's own ``log_batch``
writes run by run, the runs' own ``log_batch`` where one transaction cannot be, and a group's shared queue."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from sweep.tracking import bulk
from sweep.tracking.bulk import GroupLog, sql_engine, write_many
from sweep.tracking.mlflowdb import seed_mlflow_db


@pytest.fixture
def client(tmp_path: Path) -> MlflowClient:
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    seed_mlflow_db(uri)  # a copy of a migrated database: no migrations per test
    return MlflowClient(uri)


def _runs(client: MlflowClient, n: int, name: str = "x") -> list[str]:
    experiment = client.create_experiment(name)
    return [client.create_run(experiment, run_name=f"r{i}").info.run_id for i in range(n)]


def _records(i: int) -> tuple[list[Metric], list[Param], list[RunTag]]:
    """Metrics out of order, repeated, NaN and infinite; params; tags, one of them set twice (the last wins)."""
    metrics = [
        Metric("loss", 1.0 + i, 1000, 2),
        Metric("loss", 0.5 + i, 1000, 3),
        Metric("loss", 0.7 + i, 999, 3),  # an earlier timestamp at the same step: not the latest
        Metric("loss", 0.5 + i, 1000, 3),  # an exact repeat: stored once
        Metric("acc", math.nan, 1000, 0),
        Metric("acc", math.inf, 1000, 1),
        Metric("big", -math.inf, 5, 0),
        Metric("tie", 2.0, 7, 1),
        Metric("tie", 1.0, 7, 1),  # a smaller value at the same step and time: the first stays latest
    ]
    params = [Param("lr", str(0.1 * (i + 1))), Param("name", "x" * 7000)]  # truncated to MLflow's limit
    tags = [RunTag("sweep.group", "0, 1"), RunTag("note", "first"), RunTag("note", "last")]
    return metrics, params, tags


def _state(client: MlflowClient, run_id: str) -> dict[str, Any]:
    """What a reader of the run sees: its params, tags, latest metrics and every metric's full history."""
    run = client.get_run(run_id)
    histories = {
        key: sorted((m.step, m.timestamp, m.value if not math.isnan(m.value) else "nan") for m in hist)
        for key in run.data.metrics
        for hist in [client.get_metric_history(run_id, key)]
    }
    latest = {k: v if not math.isnan(v) else "nan" for k, v in run.data.metrics.items()}
    tags = {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")}
    return {"params": run.data.params, "tags": tags, "latest": latest, "histories": histories}


def _rows(client: MlflowClient, run_id: str) -> dict[str, list[tuple]]:
    """The run's rows as stored (a NaN's stored value, an infinity's stand-in), run id left out."""
    engine = sql_engine(client)
    with engine.connect() as db:
        return {
            table: sorted(
                tuple(row)
                for row in db.exec_driver_sql(f"SELECT * FROM {table} WHERE run_uuid = ?", (run_id,)).mappings()
                for row in [{k: v for k, v in row.items() if k != "run_uuid"}.values()]
            )
            for table in ("metrics", "latest_metrics", "params", "tags")
        }


def test_one_transaction_writes_what_log_batch_writes_run_by_run(
    client: MlflowClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two runs written with write_many (one transaction each time: no log_batch) and two with MLflow's
    log_batch (the same records, sent twice so that latest_metrics moves or stays, a tag is overwritten)
    hold the same rows, and each run has its own records."""
    ours, theirs = _runs(client, 2, "ours"), _runs(client, 2, "theirs")
    later = [Metric("loss", 0.1, 2000, 4), Metric("loss", 9.0, 1, 1), Metric("acc", 0.3, 1000, 2)]
    later += [Metric("tie", 5.0, 1, 0)]  # older than the stored latest: it stays
    again = [RunTag("note", "again"), RunTag("new", "tag")]
    sent: list[str] = []
    real = client.log_batch
    monkeypatch.setattr(client, "log_batch", lambda run_id, **kw: (sent.append(run_id), real(run_id, **kw)))
    assert write_many(client, {r: _records(i) for i, r in enumerate(ours)}) == {}
    assert write_many(client, {r: (later, [Param("lr", str(0.1 * (i + 1)))], again) for i, r in enumerate(ours)}) == {}
    assert sent == []
    for i, r in enumerate(theirs):
        metrics, params, tags = _records(i)
        real(r, metrics=metrics, params=params, tags=tags)
        real(r, metrics=later, params=[Param("lr", str(0.1 * (i + 1)))], tags=again)
    for a, b in zip(ours, theirs, strict=True):
        assert _state(client, a) == _state(client, b)
        assert _rows(client, a) == _rows(client, b)
    first, second = (_state(client, r) for r in ours)
    assert first["params"]["lr"] != second["params"]["lr"]
    assert first["latest"]["loss"] == 0.1 and first["latest"]["tie"] == 2.0 and first["latest"]["acc"] == 0.3
    assert first["tags"]["note"] == "again" and len(first["params"]["name"]) == 6000


def test_a_run_that_cannot_be_written_fails_alone_with_mlflows_own_error(client: MlflowClient) -> None:
    """A deleted run, or a param changed: MLflow's log_batch writes each run alone and says why for that one."""
    ok, deleted, changed = _runs(client, 3)
    client.log_batch(changed, params=[Param("lr", "0.1")])
    client.delete_run(deleted)
    batch = ([Metric("loss", 1.0, 1, 0)], [Param("lr", "0.2")], [RunTag("t", "v")])
    errors = write_many(client, {ok: batch, deleted: batch, changed: batch})
    assert set(errors) == {deleted, changed}
    assert all(isinstance(e, MlflowException) for e in errors.values())
    assert "must be in the 'active' state" in str(errors[deleted])
    assert "Changing param values is not allowed" in str(errors[changed])
    assert client.get_run(ok).data.params == {"lr": "0.2"}
    assert client.get_metric_history(ok, "loss")[0].value == 1.0


def test_one_transaction_all_or_nothing(client: MlflowClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """The transaction is used for two runs or more on a SQL store, and a run that stops it writes none of
    the others' rows (they are then written run by run)."""
    runs = _runs(client, 3)
    assert sql_engine(client) is not None and sql_engine(object()) is None
    sent: list[str] = []
    real = client.log_batch
    monkeypatch.setattr(client, "log_batch", lambda run_id, **kw: (sent.append(run_id), real(run_id, **kw)))
    assert write_many(client, {r: ([Metric("m", 1.0, 1, 0)], [], []) for r in runs}) == {}
    assert sent == []  # one transaction, no log_batch
    client.delete_run(runs[2])
    assert set(write_many(client, {r: ([Metric("m", 2.0, 2, 1)], [], []) for r in runs})) == {runs[2]}
    assert sent == runs  # run by run after the transaction refused
    assert [m.value for m in client.get_metric_history(runs[0], "m")] == [1.0, 2.0]


def test_a_group_log_sends_every_members_queue_at_once(client: MlflowClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """Queued until the queue is flush_every_s old or a member's records must land; then every member's queue
    goes in one write_many, except a member no longer this process's (dropped, never written)."""
    a, b, lost = _runs(client, 3)
    calls: list[set[str]] = []
    real = bulk.write_many
    monkeypatch.setattr(bulk, "write_many", lambda c, batches: (calls.append(set(batches)), real(c, batches))[1])
    log = GroupLog(client, flush_every_s=3600.0)
    mine = {lost: True}
    for run_id in (a, b, lost):
        log.join(run_id, lambda r=run_id: mine.get(r, True))
    for epoch in range(3):
        for run_id in (a, b, lost):
            log.add(run_id, [Metric("loss", float(epoch), 1000 + epoch, epoch)])
    assert calls == []  # nothing sent before the queue is old or a member ends
    mine[lost] = False  # another process ended it meanwhile
    log.flush(a)
    assert calls == [{a, b}]
    assert [m.value for m in client.get_metric_history(b, "loss")] == [0.0, 1.0, 2.0]
    assert client.get_metric_history(lost, "loss") == []
    log.flush(b)  # nothing queued: no write
    assert calls == [{a, b}]
    log.flush_every_s = 0.0
    log.add(b, [Metric("loss", 3.0, 1003, 3)])  # an old queue: sent at once
    assert calls[-1] == {b} and len(client.get_metric_history(b, "loss")) == 4


def test_a_members_error_is_raised_at_that_members_next_call(client: MlflowClient) -> None:
    """A run refused while another member sent the queue: that member's own next call raises it."""
    a, b = _runs(client, 2)
    log = GroupLog(client, flush_every_s=3600.0)
    log.join(a), log.join(b)
    log.add(a, [Metric("loss", 1.0, 1, 0)])
    log.add(b, [Metric("loss", 1.0, 1, 0)])
    client.delete_run(b)
    log.flush(a)  # a's records land; b's refusal is kept for b
    with pytest.raises(MlflowException, match="active"):
        log.add(b, [Metric("loss", 2.0, 2, 1)])
    log.drop(b)
    log.flush(a)
    assert len(client.get_metric_history(a, "loss")) == 1


@pytest.mark.parametrize("one", [True, False], ids=["one transaction", "run by run"])
def test_runs_are_ended_with_their_last_records(
    client: MlflowClient, monkeypatch: pytest.MonkeyPatch, one: bool
) -> None:
    """``ends``: the run's status and end time as set_terminated sets them, with its last tags; another run's
    records in the same call (a parent's point) land too."""
    child, parent = _runs(client, 2)
    if not one:
        monkeypatch.setattr(bulk, "sql_engine", lambda _client: None)
    before = client.get_run(child).info.start_time
    batches = {child: ((), (), [RunTag("sweep.trial_state", "PRUNED")]), parent: ([Metric("best", 0.5, 1, 3)], (), ())}
    assert write_many(client, batches, ends={child: "KILLED"}) == {}
    run = client.get_run(child)
    assert run.info.status == "KILLED" and run.info.end_time >= before
    assert run.data.tags["sweep.trial_state"] == "PRUNED"
    assert client.get_run(parent).info.status == "RUNNING"
    assert [(m.step, m.value) for m in client.get_metric_history(parent, "best")] == [(3, 0.5)]


def test_an_outage_is_raised_and_a_refusal_left_to_each_runs_log_batch(
    client: MlflowClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The transaction given up on (the store unreachable past its budget) raises: nothing is sent run by run.
    A database error that is no outage is left to the runs' own log_batch, which writes them."""
    import sqlalchemy.exc

    from sweep.tracking.trackingretry import TrackingDown

    runs = _runs(client, 2)
    batches = {r: ([Metric("m", 1.0, 1, 0)], [], []) for r in runs}
    sent: list[str] = []
    real = client.log_batch
    monkeypatch.setattr(client, "log_batch", lambda run_id, **kw: (sent.append(run_id), real(run_id, **kw)))

    def down(*_args: object) -> None:
        raise TrackingDown("MLflow tracking unreachable for 120 s")

    def refused(*_args: object) -> None:
        raise sqlalchemy.exc.IntegrityError("INSERT", {}, Exception("UNIQUE constraint failed"))

    monkeypatch.setattr(bulk, "_transaction", down)
    with pytest.raises(TrackingDown):
        write_many(client, batches)
    assert sent == []
    monkeypatch.setattr(bulk, "_transaction", refused)
    assert write_many(client, batches) == {} and sent == runs
    assert all(len(client.get_metric_history(r, "m")) == 1 for r in runs)


@pytest.fixture
def pg_engine() -> Any:
    """MLflow's tables in a schema of its own on the local PostgreSQL (no migrations: MLflow's own models)."""
    import uuid

    import sqlalchemy as sa
    from mlflow.store.tracking.dbmodels import models as m

    from tests.conftest import postgres_error

    if why := postgres_error():
        pytest.skip(why)
    schema = f"bulk_{uuid.uuid4().hex[:10]}"
    url = f"postgresql+psycopg2://postgres@127.0.0.1:5432/test?options=-csearch_path%3D{schema}"
    engine = sa.create_engine(url)
    with engine.begin() as db:
        db.exec_driver_sql(f"CREATE SCHEMA {schema}")
    try:
        fresh = sa.MetaData()  # MLflow's migrations add their checks to its models again: columns and keys alone
        for model in (m.SqlExperiment, m.SqlRun, m.SqlMetric, m.SqlLatestMetric, m.SqlParam, m.SqlTag):
            table = model.__table__.to_metadata(fresh)
            table.constraints = {c for c in table.constraints if isinstance(c, sa.PrimaryKeyConstraint)}
        fresh.create_all(engine)
        yield engine
    finally:
        engine.dispose()
        with sa.create_engine(url.split("?")[0]).begin() as db:
            db.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")


def test_a_latest_metric_another_process_moves_meanwhile_is_not_moved_back(
    pg_engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two workers write the parent's best_value: while another transaction holds its latest_metrics row (at
    step 10, not yet committed), write_many's older point (step 5) must not overwrite it once that commits,
    as MLflow's own log_batch reads the row FOR UPDATE (PostgreSQL: a plain read sees the old step 1)."""
    import threading

    import sqlalchemy as sa
    from mlflow.store.tracking.dbmodels.models import SqlExperiment, SqlLatestMetric, SqlMetric, SqlRun

    from tests.support.pausing import until

    runs, latest = SqlRun.__table__, SqlLatestMetric.__table__
    with pg_engine.begin() as db:
        experiment = db.execute(SqlExperiment.__table__.insert().values(name="x", lifecycle_stage="active"))
        eid = experiment.inserted_primary_key[0]
        for r in ("parent", "child"):
            db.execute(runs.insert().values(run_uuid=r, experiment_id=eid, lifecycle_stage="active", status="RUNNING"))
        row = {"run_uuid": "parent", "key": "best_value", "value": 3.0, "timestamp": 1, "step": 1, "is_nan": False}
        db.execute(SqlMetric.__table__.insert().values(**row))
        db.execute(latest.insert().values(**row))
    monkeypatch.setattr(bulk, "sql_engine", lambda _client: pg_engine)
    other = pg_engine.connect()
    holding = other.begin()  # the other worker's log_batch, in the middle of its transaction
    other.execute(latest.update().where(latest.c.run_uuid == "parent").values(step=10, value=1.0, timestamp=3))
    pid = other.exec_driver_sql("SELECT pg_backend_pid()").scalar()
    errors: list[BaseException] = []

    def write() -> None:
        try:
            write_many(
                object(), {"child": ((), (), [RunTag("t", "v")]), "parent": ([Metric("best_value", 2.0, 2, 5)], (), ())}
            )
        except BaseException as e:
            errors.append(e)

    thread = threading.Thread(target=write)
    thread.start()
    try:
        with pg_engine.connect() as look:
            blocked = sa.text("SELECT count(*) FROM pg_locks WHERE NOT granted AND pid <> :me")
            until(lambda: look.execute(blocked, {"me": pid}).scalar(), "write_many waiting for the row's lock")
    finally:
        holding.commit()
        other.close()
        thread.join()
    assert not errors, errors
    with pg_engine.connect() as db:
        assert db.execute(sa.select(latest.c.step, latest.c.value)).one() == (10, 1.0)


@pytest.mark.parametrize("when", ["before its commit", "after its commit"])
def test_an_outage_in_the_transaction_is_retried_and_writes_each_record_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, when: str
) -> None:
    """The connection lost in the middle of the transaction (nothing of it written) or once it committed (its
    answer lost): the retrying client sends it again, and the runs hold each record once, ended, as one
    write_many leaves them (the second try's rows already there: the runs' own log_batch, which keeps them)."""
    import sqlalchemy.exc

    from sweep.tracking.trackingretry import RetryingClient

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    seed_mlflow_db(uri)
    client = RetryingClient(uri, retry_s=60)
    runs, reference = _runs(client, 2, "a"), _runs(client, 2, "b")
    real, tries = bulk._transaction, []

    def lost(*args: Any) -> None:
        tries.append(1)
        if len(tries) == 1 and when == "after its commit":
            real(*args)
        if len(tries) == 1:
            raise sqlalchemy.exc.OperationalError("COMMIT", {}, Exception("server closed the connection unexpectedly"))
        real(*args)

    monkeypatch.setattr(bulk, "_transaction", lost)
    assert write_many(client, {r: _records(i) for i, r in enumerate(runs)}, ends={runs[0]: "FINISHED"}) == {}
    assert len(tries) == 2  # retried once
    monkeypatch.setattr(bulk, "_transaction", real)
    assert write_many(client, {r: _records(i) for i, r in enumerate(reference)}, ends={reference[0]: "FINISHED"}) == {}
    for a, b in zip(runs, reference, strict=True):
        assert _rows(client, a)["metrics"] == _rows(client, b)["metrics"]
        assert _state(client, a) == _state(client, b)
        assert client.get_run(a).info.status == client.get_run(b).info.status
    assert client.get_run(runs[0]).info.status == "FINISHED"
