"""An Optuna RDB storage that rides out database blips and outages instead of failing the trial.

Every storage call of a running study goes through :class:`ResilientStorage`: a call that fails
because the database is unreachable (connection refused or terminated, server restarting, SQLite
busy) is retried with exponential backoff for up to ``retry_s`` seconds (``study.storage_retry``,
default 120). The process says once that it is retrying and once that the storage is back. When the
outage outlasts the budget the call raises :class:`StorageDown` (one line; the CLI exits 1) and later
calls fail at once until one succeeds, so nothing waits out the budget twice. A re-run of the same
command recovers the rest (:mod:`sweep.trials.recovery`).

Connections are checked before use (``pool_pre_ping``), so a connection the server dropped while
idle is replaced instead of failing the next call. The first connection of a command is not retried:
a storage that cannot be reached at start is a one-line error at once (nothing has been written). A
worker of ``--workers`` retries it too (``wait_at_open``): its coordinator has just opened the study,
so a refusal then is an outage, not a wrong URL.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

import optuna

from sweep.core.errors import SweepError, one_line, to_stderr
from sweep.core.interrupts import Interrupts
from sweep.core.records import Attr
from sweep.core.urls import redact

AFTER_SIGNAL_S = 5.0  # after Ctrl-C or SIGTERM, how long a call is retried (the writes closing the work)


class StorageDown(SweepError):
    """The study's storage stayed unreachable for longer than the retry budget."""


# Errors a live database does not give: retrying them would only wait out the budget.
_PERMANENT = ("authentication failed", "no such table", "no such column", "syntax error", "does not exist")


def chain(e: BaseException) -> list[BaseException]:
    """``e`` and what caused it (``__cause__``, else ``__context__``), outermost first."""
    out: list[BaseException] = []
    cause: BaseException | None = e
    while cause is not None and all(cause is not c for c in out):
        out.append(cause)
        cause = cause.__cause__ or cause.__context__
    return out


def unreachable(e: BaseException) -> BaseException | None:
    """The database error in ``e``'s chain that says the database could not be reached or was busy
    (``None``: a real error, not worth retrying)."""
    from sqlalchemy import exc

    for cause in chain(e):
        if isinstance(cause, (exc.OperationalError, exc.InterfaceError, exc.DisconnectionError)):
            return None if any(p in str(cause).lower() for p in _PERMANENT) else cause
        if isinstance(cause, exc.DBAPIError) and cause.connection_invalidated:
            return cause
    return None


def storage_down(e: BaseException) -> StorageDown | None:
    """The :class:`StorageDown` in ``e``'s chain (Optuna may raise another error while handling it)."""
    return next((c for c in chain(e) if isinstance(c, StorageDown)), None)


class _OneNotePerOutage(logging.Filter):
    """Optuna logs a lost connection with its SQL (and falls back to a slower query) wherever the call
    came from; this storage retries the call and says so in one note per outage, so that log is dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Caught an error from sqlalchemy")


_QUIET = _OneNotePerOutage()


class ResilientStorage(optuna.storages.RDBStorage):
    """:class:`optuna.storages.RDBStorage` whose public calls retry transient database failures."""

    retry_s: float = 120.0
    _local = threading.local()

    def __init__(self, url: str, retry_s: float = 120.0, wait_at_open: bool = False, **kwargs: Any) -> None:
        engine_kwargs = dict(kwargs.pop("engine_kwargs", None) or {})
        if not url.startswith("sqlite"):
            engine_kwargs.setdefault("pool_pre_ping", True)  # a dropped idle connection is replaced, not used
        self._armed = False  # the first connection is not retried (see the module's docstring)
        self._down_since: float | None = None
        self._given_up = False
        self._interrupted = False  # a signal ended the wait (Ctrl-C, SIGTERM)
        self._lock = threading.Lock()
        self._url = url
        logging.getLogger("optuna.storages._rdb.storage").addFilter(_QUIET)  # the logger Optuna says it on
        self.retry_s = retry_s
        if wait_at_open:  # Optuna's set-up is idempotent (tables created if absent): run it again
            self._retry("open", super().__init__, url, engine_kwargs=engine_kwargs, **kwargs)
        else:
            super().__init__(url, engine_kwargs=engine_kwargs, **kwargs)
        self._armed = True

    def _call(self, name: str, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        local = ResilientStorage._local
        if not self._armed or getattr(local, "depth", 0):
            return method(*args, **kwargs)  # an inner call of an outer one: the outer one retries
        local.depth = 1
        try:
            return self._retry(name, method, *args, **kwargs)
        finally:
            local.depth = 0

    def _retry(self, name: str, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        delay, failed_once, first = 0.25, False, None
        interrupts = Interrupts.active()
        while True:
            try:
                result = method(*args, **kwargs)
            except optuna.exceptions.UpdateFinishedTrialError:
                if failed_once and name == "set_trial_state_values":
                    return True  # the first attempt was stored; only its answer was lost
                raise
            except Exception as e:
                root = unreachable(e)
                if root is None:
                    raise
                why = _first_line(root)
                failed_once = True
                now = time.monotonic()
                first = first or now
                # After a signal (the writes that close the interrupted work): a blip, not an outage, is waited for.
                late = interrupts.requested and now - first >= AFTER_SIGNAL_S
                with self._lock:
                    if self._down_since is None:
                        self._down_since = now
                        _say(
                            f"Optuna storage {redact(self._url)} unreachable ({why}): "
                            f"retrying for up to {self.retry_s:g} s"
                        )
                    down_for = now - self._down_since
                    if self._given_up or down_for >= self.retry_s or late:
                        self._given_up, self._interrupted = True, self._interrupted or late
                        raise self._down(down_for, why) from None
                if _ended_by_signal(min(delay, max(0.0, self.retry_s - down_for)), interrupts):
                    with self._lock:
                        self._given_up = self._interrupted = True  # the writes closing the work fail at once
                    raise self._down(time.monotonic() - (self._down_since or now), why) from None
                delay = min(delay * 2, 5.0)
                continue
            if self._down_since is not None:
                with self._lock:
                    if self._down_since is not None:
                        _say(f"Optuna storage back after {time.monotonic() - self._down_since:.1f} s")
                    self._down_since, self._given_up, self._interrupted = None, False, False
            return result

    def _down(self, down_for: float, why: str) -> StorageDown:
        """The error saying the storage stayed unreachable (for its budget, or until a signal ended the wait)."""
        until = "until interrupted" if self._interrupted else f"(study.storage_retry: {self.retry_s:g})"
        return StorageDown(
            f"Optuna storage {redact(self._url)} unreachable for {down_for:.0f} s {until}: {why}; "
            "run the same command again when it is back to resume"
        )

    def retrying(self, name: str, work: Callable[[], Any]) -> Any:
        """Run ``work`` (database work of ours outside Optuna's calls, e.g. taking the claims lock) with
        the retries of a storage call."""
        return self._call(name, work)

    def set_trial_intermediate_values(self, trial_id: int, values: Mapping[int, float]) -> None:
        """Several steps' intermediate values in one transaction (:class:`sweep.storage.pruning.Reports`); a
        retry after a lost answer writes the same rows again (an existing step is updated)."""
        self._call("set_trial_intermediate_values", self._in_one_transaction, trial_id, values)

    def _in_one_transaction(self, trial_id: int, values: Mapping[int, float]) -> None:
        """What Optuna's ``set_trial_intermediate_value`` writes for each step (the same rows), with
        two reads for the whole batch instead of three round trips a step: the trial's state is
        checked once, the batch's existing steps are read in one query and updated, the rest inserted
        together at the commit."""
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session

        if not values:
            return
        row = models.TrialIntermediateValueModel
        with _create_scoped_session(self.scoped_session, True) as session:
            trial = models.TrialModel.find_or_raise_by_id(trial_id, session)
            self.check_trial_is_updatable(trial_id, trial.state)
            existing = {
                r.step: r
                for r in session.query(row).filter(
                    row.trial_id == trial_id, row.step >= min(values), row.step <= max(values)
                )
            }
            for step, value in values.items():
                stored, kind = row.intermediate_value_to_stored_repr(value)
                if step in existing:
                    existing[step].intermediate_value, existing[step].intermediate_value_type = stored, kind
                else:
                    session.add(
                        row(trial_id=trial_id, step=step, intermediate_value=stored, intermediate_value_type=kind)
                    )

    def record_heartbeat(self, trial_id: int) -> None:
        """Beat (retried like any call); never raises: Optuna beats from a thread whose exception would
        print a traceback, and the main thread meets the same outage on its next call anyway."""
        with contextlib.suppress(Exception):
            self._call("record_heartbeat", super().record_heartbeat, trial_id)

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        """Optuna's stale trials (heartbeat older than the grace period) and those that never beat and
        started longer than the grace period ago: their process died between ``ask`` and its first beat.

        (``optuna.storages.fail_stale_trials``, which Optuna calls before every trial, fails what this
        returns and hands each to the stale-trial callback; Optuna's own rule skips trials without a
        heartbeat row, which would stay RUNNING for ever.)
        """
        stale = self._call("_get_stale_trial_ids", super()._get_stale_trial_ids, study_id)
        seconds = self.grace_period or 2 * (self.heartbeat_interval or 0)
        running = self.get_all_trials(study_id, deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        old = [
            t._trial_id
            for t in running
            if t.datetime_start and datetime.now() - t.datetime_start > timedelta(seconds=seconds)
        ]
        beating = self._call("beating", self._beating, old) if old else set()
        never = [i for i in old if i not in beating and i not in stale]
        reasons = {i: f"its process died or lost the storage: no heartbeat for {seconds} s" for i in stale}
        reasons.update(
            {i: f"its process died before its first heartbeat (started over {seconds} s ago)" for i in never}
        )
        dead = []
        for i, why in reasons.items():  # the reason first: a finished trial takes no attribute
            try:
                self.set_trial_user_attr(i, Attr.FAIL, why)
            except optuna.exceptions.UpdateFinishedTrialError:
                continue  # another process failed it already
            dead.append(i)
        return dead

    def _beating(self, trial_ids: list[int]) -> set[int]:
        """Which of ``trial_ids`` have a heartbeat row (Optuna's ``trial_heartbeats`` table)."""
        from sqlalchemy import bindparam, text

        query = text("SELECT trial_id FROM trial_heartbeats WHERE trial_id IN :ids").bindparams(
            bindparam("ids", expanding=True)
        )
        with self.engine.connect() as conn:
            return {row[0] for row in conn.execute(query, {"ids": trial_ids})}


def _ended_by_signal(seconds: float, interrupts: Interrupts) -> bool:
    """Wait ``seconds`` between tries, or until the first Ctrl-C or SIGTERM comes (``True``). No lock is
    held meanwhile, but the wait polls rather than raising (:meth:`Interrupts.raising`): it may run in any
    thread (a heartbeat's), and the trial's time limits must not land in it."""
    if interrupts.requested:  # came before: closing the interrupted work, whose blip is waited out
        time.sleep(seconds)
        return False
    end = time.monotonic() + seconds
    while not interrupts.requested and (left := end - time.monotonic()) > 0:
        time.sleep(min(left, 0.05))
    return interrupts.requested


def _first_line(e: BaseException) -> str:
    """A database error's own words: psycopg's message, not SQLAlchemy's wrapper and its links."""
    inner = getattr(e, "orig", None) or e
    return redact(one_line(inner, with_type=False).removeprefix("FATAL:").strip())


def _say(line: str) -> None:
    to_stderr(f"note: {line}")


def _wrap(name: str) -> None:
    method = getattr(optuna.storages.RDBStorage, name)

    @functools.wraps(method)
    def wrapper(self: ResilientStorage, *args: Any, **kwargs: Any) -> Any:
        return self._call(name, functools.partial(method, self), *args, **kwargs)

    setattr(ResilientStorage, name, wrapper)


# The public API, and the private calls Optuna's own cache (``_CachedStorage``) makes on it.
_PRIVATE_CALLS = ("_create_new_trial", "_get_best_trial_id", "_get_trials", "_set_trial_param")
for _name in dir(optuna.storages.RDBStorage):
    if _name in ResilientStorage.__dict__ or not callable(getattr(optuna.storages.RDBStorage, _name)):
        continue
    if not _name.startswith("_") or _name in _PRIVATE_CALLS:
        _wrap(_name)
