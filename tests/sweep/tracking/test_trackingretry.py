"""MLflow tracking that rides out a store's outages (sweep/tracking/trackingretry.py): what counts as
unreachable, the retries within ``study.tracking_retry``, giving up in one line, and the signals."""

from __future__ import annotations

import http.server
import json
import os
import re
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from sqlalchemy.exc import OperationalError

from sweep.core.errors import SweepError
from sweep.core.interrupts import Interrupts
from sweep.tracking.trackingretry import (
    RetryingClient,
    TrackingDown,
    gave_up,
    quick_http,
    request_timeout,
    transient,
)


class _Tracking(http.server.BaseHTTPRequestHandler):
    """A stand-in tracking server: answers each request with the next of ``replies`` (an HTTP status; the
    last one repeats) and counts the requests; ``hang`` holds every request unanswered until the test ends,
    ``after`` is called with the count of each request (to act at an exact point of the client's progress)."""

    replies: list[int] = [200]  # noqa: RUF012
    seen: list[str] = []  # noqa: RUF012
    hang = threading.Event()
    after: list[Callable[[int], object]] = []  # noqa: RUF012

    def _reply(self) -> None:
        self.seen.append(self.path)
        for act in self.after:
            act(len(self.seen))
        status = self.replies[min(len(self.seen), len(self.replies)) - 1]
        body = b"{}" if status == 200 else json.dumps({"error_code": _CODES[status], "message": "no"}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _reply

    def log_message(self, *args: object) -> None:
        pass


_CODES = {
    400: "INVALID_PARAMETER_VALUE",
    404: "RESOURCE_DOES_NOT_EXIST",
    500: "INTERNAL_ERROR",
    503: "TEMPORARILY_UNAVAILABLE",
}


@pytest.fixture
def tracking(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[_Tracking]]:
    """A :class:`_Tracking` server on a free loopback port (``handler.url``); MLflow sends each request once
    here as under ``sweep.run`` (the variables are the test's, undone after it)."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    handler = type("Handler", (_Tracking,), {"replies": [200], "seen": [], "hang": threading.Event(), "after": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    server.handle_error = lambda *args: None  # type: ignore[method-assign]  # a hung request's broken pipe
    threading.Thread(target=server.serve_forever, daemon=True).start()
    handler.url = f"http://127.0.0.1:{server.server_address[1]}"  # type: ignore[attr-defined]
    try:
        yield handler
    finally:
        handler.hang.set()
        server.shutdown()
        server.server_close()


def _failure(call: Callable[[], object]) -> BaseException:
    try:
        call()
    except Exception as e:
        return e
    raise AssertionError("no error")


def test_what_a_live_store_answers_is_not_retried_and_an_outage_is(tracking: type[_Tracking]) -> None:
    """Retried: no connection, no answer, HTTP 5xx (and 408/429). Not retried: a refusal (4xx), a bad value,
    a full disk: a live store gives these, and would give them again."""
    client = MlflowClient(tracking.url)  # type: ignore[attr-defined]
    for status, said in ((503, "HTTP 503"), (500, "HTTP 500"), (404, None), (400, None)):
        tracking.replies = [status]
        assert transient(_failure(lambda: client.set_tag("r", "k", "v"))) == said, status
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, never listening: refused
    refused = MlflowClient(f"http://127.0.0.1:{closed.getsockname()[1]}")
    assert transient(_failure(lambda: refused.set_tag("r", "k", "v"))) == "connection refused"
    closed.close()
    tracking.replies, tracking.after = [200], [lambda n: tracking.hang.wait()]
    assert transient(_failure(lambda: client.set_tag("r", "k", "v"))) == "no answer within 2 s"
    assert transient(MlflowException.invalid_parameter_value("bad value")) is None
    assert transient(MlflowException("(sqlite3.OperationalError) database or disk is full")) is None
    assert transient(ValueError("not an MLflow error")) is None


def test_an_outage_within_the_budget_is_ridden_out_with_two_notes(
    tracking: type[_Tracking], capsys: pytest.CaptureFixture[str]
) -> None:
    """Two 503s, then an answer: the call returns, after one note that tracking is unreachable and one that
    it is back; a refusal after it is raised at once (one request)."""
    client = RetryingClient(tracking.url, retry_s=60)  # type: ignore[attr-defined]
    tracking.replies = [503, 503, 200]
    client.set_tag("r", "k", "v")
    notes = capsys.readouterr().err.splitlines()
    assert len(tracking.seen) == 3 and len(notes) == 2, notes
    assert notes[0] == (
        f"note: MLflow tracking {tracking.url} unreachable (HTTP 503): retrying for up to 60 s (study.tracking_retry)"  # type: ignore[attr-defined]
    )
    assert notes[1].startswith("note: MLflow tracking back after ")
    tracking.seen.clear()
    tracking.replies = [400]
    with pytest.raises(MlflowException, match="no"):
        client.set_tag("r", "k", "v")
    assert len(tracking.seen) == 1 and client.given_up is None
    assert not capsys.readouterr().err


def test_past_the_budget_the_call_gives_up_in_one_line_and_later_calls_at_once(
    tracking: type[_Tracking], capsys: pytest.CaptureFixture[str]
) -> None:
    """A store down for longer than the budget: :class:`TrackingDown` naming ``study.tracking_retry``, one note
    before it; every later call raises it without a request (the process is stopping)."""
    client = RetryingClient(tracking.url, retry_s=1)  # type: ignore[attr-defined]
    tracking.replies = [503]
    with pytest.raises(TrackingDown) as down:
        client.set_tag("r", "k", "v")
    said = rf"MLflow tracking {tracking.url} unreachable for \d+ s \(study.tracking_retry: 1\): HTTP 503; run the"  # type: ignore[attr-defined]
    assert re.match(said, str(down.value)), down.value
    assert down.value.reason == str(down.value).split("; run the same")[0]
    assert len(tracking.seen) >= 2 and len(capsys.readouterr().err.splitlines()) == 1
    seen = len(tracking.seen)
    with pytest.raises(TrackingDown):
        client.log_batch("r", tags=[])
    assert len(tracking.seen) == seen and gave_up(client) is not None


def test_a_signal_during_the_retries_raises_at_once(tracking: type[_Tracking]) -> None:
    """SIGTERM while a call is being retried (sent by the server at its second request: the client is retrying)
    raises KeyboardInterrupt at once, well within the budget; after it, a store that was unreachable gets no
    request (the shutdown's closes fail at once, with MLflow's error its handlers expect)."""
    interrupts = Interrupts()
    client = RetryingClient(tracking.url, retry_s=600)  # type: ignore[attr-defined]
    tracking.replies = [503]
    tracking.after = [lambda n: n == 2 and os.kill(os.getpid(), signal.SIGTERM)]
    with interrupts.installed():
        with pytest.raises(KeyboardInterrupt):
            client.set_tag("r", "k", "v")
        assert interrupts.requested and len(tracking.seen) == 2
        with pytest.raises(MlflowException, match="not retried after the interrupt"):
            client.set_terminated("r")
    assert len(tracking.seen) == 2


def test_a_store_that_fails_after_the_signal_is_not_retried(tracking: type[_Tracking]) -> None:
    """Ctrl-C came first: the shutdown's call to a store that turns out unreachable raises MLflow's own error at
    once (one request, no note, no wait)."""
    interrupts = Interrupts()
    client = RetryingClient(tracking.url, retry_s=600)  # type: ignore[attr-defined]
    tracking.replies = [503]
    with interrupts.installed():
        interrupts.requested = True
        with pytest.raises(MlflowException, match="503"):
            client.set_tag("r", "k", "v")
    assert len(tracking.seen) == 1


def test_mlflow_sends_each_request_once_with_a_short_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """The retries are ours: MLflow's own (7, with a growing back-off, 120 s per answer) made a server that
    never answers hold one call for some 13 minutes. A value the user set is kept."""
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "77")
    RetryingClient("http://127.0.0.1:9", retry_s=120)
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "0" and os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "77"
    assert [request_timeout(s) for s in (1, 20, 120, 86_400)] == [5, 5, 30, 30]


# ---- what counts as unreachable, built by hand ----------------------------------------------------------


def _caused_by(outer: BaseException, cause: BaseException) -> BaseException:
    outer.__cause__ = cause
    return outer


@pytest.mark.parametrize(
    ("error", "said"),
    [
        (
            requests.exceptions.ConnectionError("NewConnectionError(': [Errno 111] Connection refused')"),
            "connection refused",
        ),
        (requests.exceptions.ConnectionError("[Errno -2] Name or service not known"), "name or service not known"),
        (
            requests.exceptions.ConnectionError(
                "('Connection aborted.', RemoteDisconnected('Remote end closed connection without response'))"
            ),
            "connection aborted",
        ),
        (requests.exceptions.ConnectionError("something else entirely"), "cannot connect"),
        (
            _caused_by(MlflowException("API request failed"), ConnectionRefusedError(111, "Connection refused")),
            "connection refused",
        ),
        (
            requests.exceptions.RetryError(
                "Max retries exceeded (Caused by ResponseError('too many 502 error responses'))"
            ),
            "HTTP 502",
        ),
        (requests.exceptions.RetryError("Max retries exceeded"), "too many error responses"),
        (MlflowException("(sqlite3.OperationalError) database or disk is full"), None),  # a full disk: not retried
        (requests.exceptions.ConnectionError("[Errno 28] No space left on device"), None),
        (KeyError("run"), None),
    ],
    ids=[
        "refused",
        "no such host",
        "aborted",
        "unknown words",
        "wrapped",
        "retried status",
        "no status",
        "full disk",
        "full disk in a connection error",
        "no connection error",
    ],
)
def test_transient_names_what_made_the_store_unreachable(error: BaseException, said: str | None) -> None:
    """The few words each kind of lost connection is reported with; what a live store answers is ``None``."""
    assert transient(error) == said


def _http_error(status: int | None) -> requests.exceptions.HTTPError:
    response = None
    if status is not None:
        response = requests.Response()
        response.status_code = status
    return requests.exceptions.HTTPError("upload failed", response=response)


@pytest.mark.parametrize(
    ("status", "said"),
    [(502, "HTTP 502"), (429, "HTTP 429"), (408, "HTTP 408"), (404, None), (501, None), (None, None)],
)
def test_an_artifact_uploads_http_error_is_retried_for_the_transient_statuses_only(
    status: int | None, said: str | None
) -> None:
    """408, 429 and 500/502/503/504 are retried (MLflow's own transient codes); 501, a 4xx refusal, or an error
    without a response is not."""
    assert transient(_http_error(status)) == said


def test_a_timeout_says_how_long_the_client_waited(monkeypatch: pytest.MonkeyPatch) -> None:
    """A read timeout, even wrapped as a connection error as urllib3 does, says the timeout MLflow used."""
    import urllib3

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "7")
    assert transient(requests.exceptions.ReadTimeout("read timed out")) == "no answer within 7 s"
    wrapped = _caused_by(
        requests.exceptions.ConnectionError("HTTPConnectionPool: Max retries exceeded"),
        urllib3.exceptions.ReadTimeoutError(None, "/api", "Read timed out."),  # type: ignore[arg-type]
    )
    assert transient(wrapped) == "no answer within 7 s"
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_TIMEOUT")
    assert transient(TimeoutError("timed out")) == "no answer within 120 s"  # MLflow's own default


def test_a_database_stores_lost_connection_is_transient_and_its_refusals_are_not() -> None:
    """A ``sqlite://`` or ``postgresql://`` tracking store: a lost connection is retried (in the driver's
    words), a missing table or a failed login is what the store answers."""
    lost = OperationalError("SELECT 1", {}, Exception("server closed the connection unexpectedly"))
    assert (
        transient(_caused_by(MlflowException("log_batch failed"), lost)) == "server closed the connection unexpectedly"
    )
    assert transient(OperationalError("SELECT 1", {}, Exception("no such table: runs"))) is None
    assert transient(OperationalError("SELECT 1", {}, Exception('password authentication failed for "u"'))) is None


@pytest.mark.parametrize(("budget", "seconds"), [(0, 5), (20, 5), (21, 6), (100, 25), (119, 30), (120, 30), (1e9, 30)])
def test_request_timeout_is_a_quarter_of_the_budget_between_5_and_30(budget: float, seconds: int) -> None:
    assert request_timeout(budget) == seconds


def test_quick_http_keeps_what_the_user_set(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unset, MLflow is told to send each request once and wait a quarter of the budget; a user's own values
    (here a retry count) stay."""
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_TIMEOUT", raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
    quick_http(40)
    assert (os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"], os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"]) == ("3", "10")


def test_a_client_of_a_local_store_leaves_mlflows_http_settings_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only an http(s) tracking URI changes how MLflow sends requests (a file or database store sends none)."""
    for name in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # a local store that needs no database made
    client = RetryingClient(tmp_path.as_uri(), retry_s=10)
    assert not client.http and "MLFLOW_HTTP_REQUEST_TIMEOUT" not in os.environ
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ
    assert RetryingClient("https://h.example", retry_s=10).http


def test_tracking_down_is_a_one_line_sweep_error_with_its_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)  # what a client of an http store sets is undone after the test
    down = TrackingDown("MLflow tracking http://h unreachable for 120 s")
    assert isinstance(down, SweepError) and down.reason == "MLflow tracking http://h unreachable for 120 s"
    assert str(down) == f"{down.reason}; run the same command again when it is back to resume"
    assert gave_up(object()) is None and gave_up(RetryingClient("http://127.0.0.1:9")) is None


def test_a_zero_budget_gives_up_at_the_first_failure(
    tracking: type[_Tracking], capsys: pytest.CaptureFixture[str]
) -> None:
    """``study.tracking_retry: 0``: one request, no wait, :class:`TrackingDown` at once; the note that the store
    is unreachable is still said once."""
    client = RetryingClient(tracking.url, retry_s=0)  # type: ignore[attr-defined]
    tracking.replies = [503]
    with pytest.raises(TrackingDown, match=r"unreachable for 0 s \(study.tracking_retry: 0\): HTTP 503"):
        client.set_tag("r", "k", "v")
    assert len(tracking.seen) == 1 and len(capsys.readouterr().err.splitlines()) == 1


def test_a_password_in_the_tracking_uri_is_masked_in_the_note_and_the_error(
    tracking: type[_Tracking], capsys: pytest.CaptureFixture[str]
) -> None:
    url = tracking.url.replace("http://", "http://alice:hunter2@")  # type: ignore[attr-defined]
    client = RetryingClient(url, retry_s=0)
    tracking.replies = [503]
    with pytest.raises(TrackingDown) as down:
        client.set_tag("r", "k", "v")
    said = capsys.readouterr().err
    assert "hunter2" not in str(down.value) and "hunter2" not in said
    assert "alice:***@" in str(down.value) and "alice:***@" in said
