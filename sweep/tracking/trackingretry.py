"""MLflow tracking that rides out a server's blips and outages, and gives up after a bounded time.

MLflow's own client sends a failed HTTP request again up to 7 times with a growing back-off and waits up
to 120 s for each answer: a tracking server that never came back held a trial for some 13 minutes with
no output, its heartbeats still beating (so no other process could take the trial over), and SIGTERM
was not obeyed meanwhile. Here MLflow sends each request once, with a short timeout
(:func:`quick_http`), and every call of the study's :class:`RetryingClient` that fails because the
tracking store cannot be reached — connection refused or reset, no answer, HTTP 408, 429 or 5xx; a
database store's lost connection — is retried with exponential backoff (0.25 s doubling to 5 s) for up
to ``retry_s`` seconds (``study.tracking_retry``, default 120). The process says once that it is
retrying and once that tracking is back. Past the budget the call raises :class:`TrackingDown` (one
line; the CLI exits 1), and every later call of the process raises it at once: the trial fails with the
reason and its point is queued again (it is not its configuration's fault), the process starts no
more trials and exits, so its heartbeats stop; the next start closes the runs it left RUNNING
(:func:`sweep.trials.recovery.agree`). What a live store answers — a refusal (4xx), a bad value, a full disk —
is not retried.

Ctrl-C and SIGTERM raise at once during an HTTP request and during a wait between retries
(:meth:`sweep.core.interrupts.Interrupts.raising`: neither holds a database lock of this process). After the
signal, a call to a store found unreachable is not retried (its MLflow error, which the shutdown's
handlers expect), and none is even sent once the store has failed a call, so the shutdown takes seconds.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
import os
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from sweep.core.errors import SweepError, one_line, to_stderr
from sweep.core.interrupts import Interrupts
from sweep.core.urls import redact
from sweep.storage.resilient import chain, unreachable
from sweep.tracking.artifacts import unwritable

_HTTP = ("http://", "https://")
_RETRIED_STATUS = {408, 429, 500, 502, 503, 504}  # what MLflow's own retries retry (its transient codes)


class TrackingDown(SweepError):
    """The MLflow tracking store stayed unreachable for longer than ``study.tracking_retry``.

    Attributes:
        reason: what the trial that could not be recorded fails with (the message without the advice).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(f"{reason}; run the same command again when it is back to resume")
        self.reason = reason


def check_tracking(uri: str, timeout: float = 5.0) -> None:
    """Fail fast (one line) when an MLflow tracking server does not answer, before anything is written.

    MLflow's client would otherwise retry for minutes; a local database URI needs no check.

    Raises:
        SweepError: the server does not answer.
    """
    if not uri.startswith(("http://", "https://")):
        return
    parts = urllib.parse.urlsplit(uri)
    bare = parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else "")).geturl()  # no user:pass
    try:
        with urllib.request.urlopen(f"{bare.rstrip('/')}/health", timeout=timeout):
            pass
    except urllib.error.HTTPError:
        return  # it answered (an auth or routing error shows up on the first real call)
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise SweepError(f"cannot reach MLflow tracking {redact(uri)}: {redact(str(reason))}") from None


def request_timeout(retry_s: float) -> int:
    """Seconds MLflow waits for a server's answer: a quarter of the budget, 5 to 30 (MLflow's default, 120,
    let one request of a stopped server outlast any budget)."""
    return int(min(30, max(5, math.ceil(retry_s / 4))))


def quick_http(retry_s: float) -> None:
    """MLflow sends each request once (the retries are :class:`RetryingClient`'s) and waits
    :func:`request_timeout` seconds for an answer. Read by MLflow at each request; a value the user set in
    the environment is kept."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(request_timeout(retry_s)))


def _connection_words(text: str) -> str:
    """A connection error's own words (``Connection refused``) out of urllib3's wrapping."""
    found = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", text) or re.search(
        r"(Remote end closed connection without response|Connection aborted|Connection reset by peer)", text
    )
    return found.group(1).strip().lower() if found else "cannot connect"


def transient(e: BaseException) -> str | None:
    """Why ``e`` says the tracking store could not be reached, in a few words; ``None`` for what a live store
    answers (a refusal, a bad value, a full disk), which retrying would only repeat."""
    import requests
    import urllib3
    from mlflow.exceptions import RestException

    if unwritable(e):
        return None
    causes = chain(e)
    # Not urllib3's TimeoutError: its NewConnectionError (a refusal) is one.
    timeouts = (requests.exceptions.Timeout, urllib3.exceptions.ReadTimeoutError, TimeoutError)
    for i, cause in enumerate(causes):
        if isinstance(cause, RestException):  # the server's own answer
            code = cause.get_http_status_code()
            return f"HTTP {code}: {one_line(cause, with_type=False)}" if code in _RETRIED_STATUS else None
        if isinstance(cause, requests.exceptions.RetryError):  # a retried status, sent once (quick_http)
            status = re.search(r"too many (\d{3}) error responses", str(cause))
            return f"HTTP {status.group(1)}" if status else "too many error responses"
        if isinstance(cause, requests.exceptions.HTTPError):  # an artifact upload's answer
            code = cause.response.status_code if cause.response is not None else 0
            return f"HTTP {code}" if code in _RETRIED_STATUS else None
        if isinstance(
            cause, (*timeouts, requests.exceptions.ConnectionError, ConnectionError, urllib3.exceptions.HTTPError)
        ):
            if any(isinstance(c, timeouts) for c in causes[i:]):  # urllib3 wraps a read timeout as a connection error
                return f"no answer within {os.environ.get('MLFLOW_HTTP_REQUEST_TIMEOUT', '120')} s"
            return _connection_words(str(cause))
    lost = unreachable(e)  # a database tracking store (sqlite://, postgresql://): its lost connection
    return one_line(getattr(lost, "orig", None) or lost, with_type=False) if lost is not None else None


class RetryingClient(MlflowClient):
    """An :class:`mlflow.MlflowClient` whose public calls retry while the tracking store cannot be reached
    (the module's docstring says how, and for how long)."""

    _local = threading.local()

    def __init__(self, tracking_uri: str, retry_s: float = 120.0, shown: str | None = None) -> None:
        """A client of ``tracking_uri`` that retries for up to ``retry_s`` seconds.

        Args:
            tracking_uri: The store, as MLflow is given it.
            retry_s: The budget (``study.tracking_retry``).
            shown: The store as the user wrote it (said in the notes and the error, credentials masked).
        """
        self.retry_s = retry_s
        self.http = tracking_uri.startswith(_HTTP)  # its calls hold no database lock of this process
        self.shown = redact(shown or tracking_uri)
        self.given_up: TrackingDown | None = None
        self._down_since: float | None = None  # when the first failed call of the outage started
        self._lock = threading.Lock()
        if self.http:
            quick_http(retry_s)
        super().__init__(tracking_uri=tracking_uri)

    def _call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        local = RetryingClient._local
        if getattr(local, "depth", 0):
            return method(*args, **kwargs)  # an inner call of an outer one: the outer one retries
        local.depth = 1
        try:
            return self._retry(method, *args, **kwargs)
        finally:
            local.depth = 0

    def _retry(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``method``'s result, retried while the store is unreachable (see the module's docstring)."""
        delay = 0.25
        while True:
            interrupts = Interrupts.active()  # the process's (sweep.run installs them first)
            stopping = interrupts.requested
            if stopping and self._down_since is not None:  # the shutdown's handlers expect MLflow's errors
                raise MlflowException(f"MLflow tracking {self.shown} unreachable: not retried after the interrupt")
            if self.given_up is not None:
                raise TrackingDown(self.given_up.reason)
            started = time.monotonic()
            try:
                with _raising(interrupts, self.http):
                    result = method(*args, **kwargs)
            except Exception as e:
                why = transient(e)
                if why is None:
                    raise
                down_for = self._failed(started, why, stopping)
                if stopping:
                    raise
                with _raising(interrupts, True):  # Ctrl-C, SIGTERM: at once
                    time.sleep(min(delay, max(0.0, self.retry_s - down_for)))
                delay = min(delay * 2, 5.0)
                continue
            if self._down_since is not None:
                with self._lock:
                    if self._down_since is not None:
                        _say(f"MLflow tracking back after {time.monotonic() - self._down_since:.1f} s")
                    self._down_since = None
            return result

    def _failed(self, started: float, why: str, stopping: bool) -> float:
        """Count a failed call (started at ``started``) into the outage: say when it began; give up past the
        budget.

        Returns:
            For how long the store has been unreachable.

        Raises:
            TrackingDown: for longer than the budget.
        """
        with self._lock:
            if self._down_since is None:
                self._down_since = started
                if not stopping:
                    _say(
                        f"MLflow tracking {self.shown} unreachable ({why}): retrying for up to {self.retry_s:g} s "
                        "(study.tracking_retry)"
                    )
            down_for = time.monotonic() - self._down_since
            if not stopping and (down_for >= self.retry_s or self.given_up is not None):
                self.given_up = self.given_up or TrackingDown(
                    f"MLflow tracking {self.shown} unreachable for {down_for:.0f} s "
                    f"(study.tracking_retry: {self.retry_s:g}): {why}"
                )
                raise TrackingDown(self.given_up.reason) from None
            return down_for


def _raising(interrupts: Interrupts, wanted: bool) -> contextlib.AbstractContextManager[None]:
    """Where a signal raises at once (:meth:`~sweep.core.interrupts.Interrupts.raising`): ``wanted``, in the main
    thread (whose flag it sets), while no signal came yet (after one, the shutdown's calls must run)."""
    if wanted and not interrupts.requested and _main_thread():
        return interrupts.raising()
    return contextlib.nullcontext()


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def gave_up(client: object) -> TrackingDown | None:
    """Whether ``client`` (a :class:`RetryingClient`) gave up: the process records nothing more."""
    return getattr(client, "given_up", None)


def _say(line: str) -> None:
    to_stderr(f"note: {line}")


def _wrap(name: str, method: Callable[..., Any]) -> None:
    @functools.wraps(method)
    def wrapper(self: RetryingClient, *args: Any, **kwargs: Any) -> Any:
        return self._call(functools.partial(method, self), *args, **kwargs)

    setattr(RetryingClient, name, wrapper)


for _name, _method in vars(MlflowClient).items():
    if not _name.startswith("_") and inspect.isfunction(_method):
        _wrap(_name, _method)
