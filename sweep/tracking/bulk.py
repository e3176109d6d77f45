"""A vectorized group's records in one transaction of the tracking store, not one MLflow call per member.

MLflow's API writes one run per call: a ``log_batch`` on a SQLite store is ~10 ms (more under load), most
of it the store's ORM round trips, so a group of K members that each send their epochs' metrics paid K
calls where its training paid one program (issue #28). On a SQL tracking store (``sqlite://``,
``postgresql://``...: MLflow's ``SqlAlchemyStore``) :func:`write_many` writes the metrics, params and tags
of many runs in one transaction, through MLflow's own table definitions, with what ``log_batch`` does per
run:

1. every record checked as ``log_batch`` checks it (MLflow's own validation: names, values, lengths, a
   param or tag value truncated to MLflow's limit);
2. the runs must exist and be active; a param already set must have the same value (else the run's own
   ``log_batch`` says why);
3. metrics are rows of the ``metrics`` table (a NaN stored as 0 with ``is_nan``, ±inf as the largest
   double), and each run's ``latest_metrics`` row of a key moves to the metric with the greatest
   (step, timestamp, value), as MLflow's ``_update_latest_metrics_if_necessary`` moves it (read FOR UPDATE,
   as MLflow reads it: a row another process writes meanwhile is never moved back);
4. a tag that exists is overwritten, a param that exists with the same value is kept;
5. a run ended (``ends``) gets its status and its end time, as ``set_terminated`` sets them, after its
   records (a run's last tags and its status land together: :func:`~sweep.tracking.tracking.close_run`).

Anything this path cannot write as one transaction (another store, a run not active, a record MLflow
refuses, a row already there) is written run by run with the client's ``log_batch``, exactly as before:
MLflow raises its own error, for that run alone. Calls go through :class:`~sweep.tracking.trackingretry.
RetryingClient`'s retries like any other (a store that cannot be reached is retried, then given up on).

:class:`GroupLog` is a group's shared queue of per-epoch metrics (:meth:`TrialRun.log_epoch
<sweep.tracking.tracking.TrialRun.log_epoch>` of each member): sent for all members together when it is
older than ``flush_every_s`` and whenever a member's records must land (its end, before Optuna's tell).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from mlflow.entities import Metric, Param, RunStatus, RunTag

Records = tuple[Sequence[Metric], Sequence[Param], Sequence[RunTag]]
_RUN_NAME = "mlflow.runName"  # MLflow renames the run when this tag is set: left to its log_batch
_LARGEST = 1.7976931348623157e308


class _NotInOne(Exception):
    """What :func:`write_many` leaves to the runs' own ``log_batch`` calls."""


def sql_engine(client: Any) -> Any:
    """The SQLAlchemy engine of ``client``'s tracking store when it is MLflow's SQL store, else ``None``."""
    try:
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        store = client._tracking_client.store  # MLflow's client exposes no getter for its store
    except Exception:
        return None
    return store.engine if isinstance(store, SqlAlchemyStore) else None


def write_many(
    client: Any, batches: Mapping[str, Records], ends: Mapping[str, str] | None = None
) -> dict[str, Exception]:
    """Write each run's ``(metrics, params, tags)`` (run id → records), then end the runs of ``ends`` (run id →
    status, as ``set_terminated``): in one transaction where the store allows it, else run by run with
    ``client.log_batch`` and ``client.set_terminated``, in the order given.

    Returns:
        The runs whose records could not be written, with what their ``log_batch`` raised.

    Raises:
        Exception: what the retrying client gives up with (:class:`~sweep.tracking.trackingretry.TrackingDown`)
            or an interrupt; nothing is written by a transaction that raised.
    """
    ends = dict(ends or {})
    batches = {run_id: records for run_id, records in batches.items() if any(records) or run_id in ends}
    if not batches:
        return {}
    engine = sql_engine(client) if len(batches) > 1 else None
    if engine is not None:
        call = getattr(client, "_call", None)  # RetryingClient: retried while the store is unreachable
        try:
            if call is not None:
                call(_transaction, engine, batches, ends)
            else:
                _transaction(engine, batches, ends)
            return {}
        except Exception as e:
            if not _left_to_mlflow(e):
                raise
    errors: dict[str, Exception] = {}
    for run_id, (metrics, params, tags) in batches.items():  # 1. each run alone, as MLflow writes it
        try:
            client.log_batch(run_id, metrics=list(metrics), params=list(params), tags=list(tags))  # chunked by MLflow
            if run_id in ends:
                client.set_terminated(run_id, status=ends[run_id])
        except Exception as e:
            if not _left_to_mlflow(e) and not _mlflow_error(e):
                raise
            errors[run_id] = e
    return errors


def _mlflow_error(e: Exception) -> bool:
    from mlflow.exceptions import MlflowException

    return isinstance(e, MlflowException)


def _left_to_mlflow(e: Exception) -> bool:
    """Whether the one transaction failed for a reason a run's own ``log_batch`` decides: a record MLflow
    refuses, a row already there, any database error that is not an outage (those are retried, then given up)."""
    import sqlalchemy.exc

    from sweep.tracking.trackingretry import transient

    if isinstance(e, (_NotInOne, sqlalchemy.exc.SQLAlchemyError)) or _mlflow_error(e):
        return transient(e) is None
    return False


def _transaction(engine: Any, batches: Mapping[str, Records], ends: Mapping[str, str]) -> None:
    """The records of every run of ``batches`` in one transaction (the module's docstring, 1.-5.)."""
    import sqlalchemy as sa
    from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric, SqlParam, SqlRun, SqlTag
    from mlflow.utils.validation import _validate_batch_log_data

    checked: dict[str, Records] = {}
    for run_id, (metrics, params, tags) in batches.items():  # 1. MLflow's checks (raises its own error)
        if any(t.key == _RUN_NAME for t in tags) or len({p.key for p in params}) < len(params):
            raise _NotInOne(run_id)
        if any(m.model_id is not None for m in metrics) or _active_model():  # a logged model's metrics too
            raise _NotInOne(run_id)
        checked[run_id] = _validate_batch_log_data(metrics, params, tags)
    runs, metric_t, latest_t = SqlRun.__table__, SqlMetric.__table__, SqlLatestMetric.__table__
    param_t, tag_t = SqlParam.__table__, SqlTag.__table__
    ids = list(checked)
    with engine.begin() as db:
        found = db.execute(sa.select(runs.c.run_uuid, runs.c.lifecycle_stage).where(runs.c.run_uuid.in_(ids)))
        if {r: s for r, s in found} != dict.fromkeys(ids, "active"):  # 2.
            raise _NotInOne("a run missing or not active")
        rows = _metric_rows(checked)
        if rows:
            db.execute(metric_t.insert(), rows)  # 3.
            _latest(db, latest_t, rows)
        params = [{"run_uuid": r, "key": p.key, "value": p.value} for r, (_, ps, _) in checked.items() for p in ps]
        if params:
            have = db.execute(
                sa.select(param_t.c.run_uuid, param_t.c.key, param_t.c.value).where(param_t.c.run_uuid.in_(ids))
            )
            old = {(r, k): v for r, k, v in have}
            if any(old.get((p["run_uuid"], p["key"]), p["value"]) != p["value"] for p in params):
                raise _NotInOne("a param changed")
            new = [p for p in params if (p["run_uuid"], p["key"]) not in old]
            if new:
                db.execute(param_t.insert(), new)
        tags = {(r, t.key): t.value for r, (_, _, ts) in checked.items() for t in ts}  # 4. the last value wins
        if tags:
            have = db.execute(sa.select(tag_t.c.run_uuid, tag_t.c.key).where(tag_t.c.run_uuid.in_(ids)))
            old_tags = set(have)
            stale = [{"r": r, "k": k, "v": v} for (r, k), v in tags.items() if (r, k) in old_tags]
            if stale:
                where = (tag_t.c.run_uuid == sa.bindparam("r")) & (tag_t.c.key == sa.bindparam("k"))
                db.execute(tag_t.update().where(where).values(value=sa.bindparam("v")), stale)
            new_tags = [{"run_uuid": r, "key": k, "value": v} for (r, k), v in tags.items() if (r, k) not in old_tags]
            if new_tags:
                db.execute(tag_t.insert(), new_tags)
        if ends:  # 5. as set_terminated: the status, and the end time now
            now = int(time.time() * 1000)
            where = runs.c.run_uuid == sa.bindparam("r")
            ended = [{"r": r, "s": RunStatus.to_string(RunStatus.from_string(s)), "t": now} for r, s in ends.items()]
            db.execute(runs.update().where(where).values(status=sa.bindparam("s"), end_time=sa.bindparam("t")), ended)


def _active_model() -> bool:
    """Whether MLflow's fluent API has an active model (its ``log_batch`` would tie the metrics to it)."""
    from mlflow.tracking.fluent import get_active_model_id

    return get_active_model_id() is not None


def _metric_rows(checked: Mapping[str, Records]) -> list[dict[str, Any]]:
    """The ``metrics`` rows of every run, an exact repeat within a run's batch once (as MLflow dedupes it)."""
    rows: list[dict[str, Any]] = []
    for run_id, (metrics, _, _) in checked.items():
        seen: set[Metric] = set()
        for m in metrics:
            if m in seen:
                continue
            seen.add(m)
            value, is_nan = float(m.value), math.isnan(m.value)
            if is_nan:
                value = 0.0
            elif math.isinf(value):
                value = _LARGEST if value > 0 else -_LARGEST
            rows.append(
                {
                    "run_uuid": run_id,
                    "key": m.key,
                    "value": value,
                    "timestamp": m.timestamp,
                    "step": m.step,
                    "is_nan": is_nan,
                }
            )
    return rows


def _latest(db: Any, table: Any, rows: list[dict[str, Any]]) -> None:
    """Move each (run, key)'s ``latest_metrics`` row to its greatest (step, timestamp, value), ties kept."""
    import sqlalchemy as sa

    def order(row: Mapping[str, Any]) -> tuple[int, int, float]:
        return (row["step"], row["timestamp"], row["value"])

    best: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        key = (row["run_uuid"], row["key"])
        if key not in best or order(row) > order(best[key]):
            best[key] = row
    ids, keys = sorted({r for r, _ in best}), sorted({k for _, k in best})
    # Read FOR UPDATE, in one order (as MLflow's log_batch): another process's write of the same row (two
    # workers' best_value on the parent) waits for this one, or this one for it, never moves it back.
    have = db.execute(
        sa.select(table.c.run_uuid, table.c.key, table.c.step, table.c.timestamp, table.c.value)
        .where(table.c.run_uuid.in_(ids), table.c.key.in_(keys))
        .order_by(table.c.run_uuid, table.c.key)
        .with_for_update()
    )
    old = {(r, k): (s, t, v) for r, k, s, t, v in have}
    new = [row for key, row in best.items() if key not in old]
    moved = [
        {
            "r": row["run_uuid"],
            "k": row["key"],
            "v": row["value"],
            "s": row["step"],
            "t": row["timestamp"],
            "n": row["is_nan"],
        }
        for key, row in best.items()
        if key in old and order(row) > old[key]
    ]
    if new:
        db.execute(table.insert(), new)
    if moved:
        where = (table.c.run_uuid == sa.bindparam("r")) & (table.c.key == sa.bindparam("k"))
        values = {"value": sa.bindparam("v"), "step": sa.bindparam("s"), "timestamp": sa.bindparam("t")}
        db.execute(table.update().where(where).values(**values, is_nan=sa.bindparam("n")), moved)


class GroupLog:
    """A vectorized group's per-epoch metrics, queued per member and sent for all of them at once.

    Args:
        client: The study's MLflow client.
        flush_every_s: The longest a metric waits in the queue.
    """

    def __init__(self, client: Any, flush_every_s: float = 2.0) -> None:
        self.client, self.flush_every_s = client, flush_every_s
        self._queue: dict[str, list[Metric]] = {}
        self._mine: dict[str, Callable[[], bool]] = {}
        self._errors: dict[str, Exception] = {}
        self._last = time.monotonic()

    def join(self, run_id: str, mine: Callable[[], bool] = lambda: True) -> None:
        """Queue ``run_id``'s metrics here; ``mine`` says whether the run is still this process's to write
        (asked before its queue is sent by another member: :mod:`sweep.storage.ownership`)."""
        self._queue.setdefault(run_id, [])
        self._mine[run_id] = mine

    def add(self, run_id: str, metrics: Sequence[Metric]) -> None:
        """Queue a member's metrics; send every member's queue when the oldest is ``flush_every_s`` old."""
        self._raise(run_id)
        self._queue.setdefault(run_id, []).extend(metrics)
        if time.monotonic() - self._last >= self.flush_every_s:
            self.flush(run_id)

    def flush(self, run_id: str) -> None:
        """Send every member's queue (one transaction); raise what ``run_id``'s own records failed with
        (another member's failure is raised at that member's next call)."""
        queued = {r: q for r, q in self._queue.items() if q}
        for r in list(queued):
            if r != run_id and not self._mine.get(r, lambda: True)():
                self.drop(r)  # ended by another process: nothing more is written to its run
                del queued[r]
        if queued:
            errors = write_many(self.client, {r: (q, (), ()) for r, q in queued.items()})
            for r in queued:
                self._queue[r] = []
            self._errors.update(errors)
        self._last = time.monotonic()
        self._raise(run_id)

    def drop(self, run_id: str) -> None:
        """Forget ``run_id``'s queue: its run gets nothing more from this process."""
        self._queue.pop(run_id, None)
        self._mine.pop(run_id, None)

    def _raise(self, run_id: str) -> None:
        error = self._errors.pop(run_id, None)
        if error is not None:
            raise error
