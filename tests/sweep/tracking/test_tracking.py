"""The MLflow side of a study: reachability checks, the parent run's params under concurrent starts, and
the UI link's saved view (sort and columns)."""

from __future__ import annotations

import http.server
import json
import os
import re
import signal
import socket
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from sweep.core.interrupts import Interrupts
from sweep.studyfile.config import StudySection, TrackingSection
from sweep.tracking.tracking import Tracker, check_tracking
from sweep.tracking.trackingretry import RetryingClient, TrackingDown, gave_up, request_timeout, transient
from sweep.tracking.views import VIEW_TAG_PREFIX


def test_tracking_check_accepts_credentials_in_the_url() -> None:
    """An http tracking URI with user:password@ is checked against the host, not a host named 'user:...'."""
    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        check_tracking(f"http://user:s3cret@127.0.0.1:{server.server_address[1]}")  # answered (501): reachable
    finally:
        server.shutdown()


def test_study_params_written_by_a_concurrent_start_are_not_an_error(tmp_path: Path) -> None:
    """Two processes starting the same study both find the parent's params missing and both write them;
    the loser's write fails (params are immutable) and it re-reads instead of crashing (seen in review)."""
    from mlflow.exceptions import MlflowException

    study = optuna.create_study(study_name="twice")
    tracker = Tracker(TrackingSection(uri=f"sqlite:///{tmp_path / 'm.db'}"), study)
    real = tracker.client.log_batch
    raced: list[bool] = []

    def other_process_first(run_id: str, **kwargs: object) -> None:
        if not raced:
            raced.append(True)
            real(run_id, **kwargs)  # the other process's write lands first ...
            raise MlflowException("UNIQUE constraint failed: params.key")  # ... so ours fails
        real(run_id, **kwargs)

    tracker.client.log_batch = other_process_first  # type: ignore[method-assign]
    tracker.log_study_params({"seed": 0, "loop": "dual_loss"})
    assert raced and tracker.client.get_run(tracker.parent_id).data.params == {"seed": "0", "loop": "dual_loss"}


def _study_with_trials(*params: dict[str, float]) -> optuna.Study:
    study = optuna.create_study(study_name="s")
    for i, p in enumerate(params):
        dists = {k: optuna.distributions.FloatDistribution(-10, 10) for k in p}
        study.add_trial(optuna.trial.create_trial(params=p, distributions=dists, value=float(i)))
    return study


def _opened(url: str) -> tuple[str, dict[str, str]]:
    """A UI link taken apart: the hash route and its query (MLflow's UI routes in the fragment)."""
    parts = urllib.parse.urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path, parts.query) == ("http", "127.0.0.1:5000", "/", "")
    route, _, query = parts.fragment.partition("?")
    pairs = urllib.parse.parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    assert len({k for k, _ in pairs}) == len(pairs)
    return route, dict(pairs)


def _view(tracker: Tracker, key: str) -> tuple[dict, dict]:
    """The saved view a ``viewStateShareKey`` names: its envelope, and the runs-table state inside."""
    envelope = json.loads(tracker.client.get_experiment(tracker.experiment_id).tags[VIEW_TAG_PREFIX + key])
    return envelope, json.loads(envelope["state"])


def test_ui_url_opens_the_runs_sorted_by_the_target_with_the_searched_params(tmp_path: Path) -> None:
    """The printed link opens a saved view of the runs table: sorted by the target, best first (ascending
    for a minimised target, descending for a maximised one), with the target and each searched param as
    columns; the URL carries the view's key alone (with sort parameters of its own the UI ignores a view)."""
    study = _study_with_trials({"optimizer.lr": 0.1}, {"optimizer.lr": 0.2, "weights.log10_ratio": 0.5})
    tracker = Tracker(TrackingSection(uri=f"sqlite:///{tmp_path / 'm.db'}"), study)
    assert tracker.ui_url() == f"http://127.0.0.1:5000/#/experiments/{tracker.experiment_id}/runs"
    for metric, ascending in (("val_total_loss", True), ("val_acc", False)):
        target = StudySection(name="s", metric=metric)
        route, query = _opened(tracker.ui_url(target=target, trials=study.trials))
        assert route == f"/experiments/{tracker.experiment_id}/runs" and set(query) == {"viewStateShareKey"}
        envelope, state = _view(tracker, query["viewStateShareKey"])
        assert envelope["name"] == f"s: best {metric} first" and isinstance(envelope["createdAt"], int)
        columns = [f"metrics.`{metric}`", "params.`optimizer.lr`", "params.`weights.log10_ratio`"]
        assert (state["orderByKey"], state["orderByAsc"]) == (f"metrics.`{metric}`", ascending)
        assert state["selectedColumns"] == state["columnOrder"] == columns  # shown, and first after the run
        assert set(state["columnWidths"]) == set(columns) and state["columnWidths"][columns[2]] > 7 * 19
    # Multi-objective: sorted by the first target, every target a column.
    two = StudySection(name="s2", metric=["val_acc", "val_a_loss"])
    _, state = _view(tracker, _opened(tracker.ui_url(target=two, trials=study.trials))[1]["viewStateShareKey"])
    assert (state["orderByKey"], state["orderByAsc"]) == ("metrics.`val_acc`", False)
    assert state["selectedColumns"][:2] == ["metrics.`val_acc`", "metrics.`val_a_loss`"]


def test_ui_url_keeps_one_view_per_study(tmp_path: Path) -> None:
    """Printing the link again rewrites nothing; new searched params update the study's one view in place."""
    study = _study_with_trials({"optimizer.lr": 0.1})
    tracker = Tracker(TrackingSection(uri=f"sqlite:///{tmp_path / 'm.db'}"), study)
    target = StudySection(name="s", metric="val_total_loss")
    first = tracker.ui_url(target=target, trials=study.trials)
    tags = tracker.client.get_experiment(tracker.experiment_id).tags
    assert tracker.ui_url(target=target, trials=study.trials) == first
    assert tracker.client.get_experiment(tracker.experiment_id).tags == tags
    study.add_trial(
        optuna.trial.create_trial(
            params={"momentum": 0.9}, distributions={"momentum": optuna.distributions.FloatDistribution(0, 1)}, value=0
        )
    )
    assert tracker.ui_url(target=target, trials=study.trials) == first
    views = [k for k in tracker.client.get_experiment(tracker.experiment_id).tags if k.startswith(VIEW_TAG_PREFIX)]
    assert len(views) == 1
    _, state = _view(tracker, _opened(first)[1]["viewStateShareKey"])
    assert state["selectedColumns"] == ["metrics.`val_total_loss`", "params.`optimizer.lr`", "params.`momentum`"]


def test_ui_url_falls_back_to_the_sort_where_no_view_can_be_written(tmp_path: Path) -> None:
    """Where the view cannot be written (a read-only server, a view over MLflow's 20,000 characters a tag)
    the URL still sorts by the target, the backquoted key percent-encoded, and leaves out the evaluation runs
    (``searchFilter``, as the view does); it carries nothing else."""
    from mlflow.exceptions import MlflowException

    study = _study_with_trials({"optimizer.lr": 0.1})
    tracker = Tracker(TrackingSection(uri=f"sqlite:///{tmp_path / 'm.db'}"), study)
    no_evaluations = "tags.`sweep.role` != 'evaluation'"
    sort = {"orderByKey": "metrics.`val_acc`", "orderByAsc": "false", "searchFilter": no_evaluations}
    many = _study_with_trials({f"objective.some.rather.long.parameter.path_{i:04d}": 0.0 for i in range(200)})
    url = tracker.ui_url(target=StudySection(name="s", metric="val_acc"), trials=many.trials)
    assert "?orderByKey=metrics.%60val_acc%60&orderByAsc=false" in url and _opened(url)[1] == sort

    def read_only(*args: object, **kwargs: object) -> None:
        raise MlflowException("permission denied")

    tracker.client.set_experiment_tag = read_only  # type: ignore[method-assign]
    url = tracker.ui_url(target=StudySection(name="s", metric="val_total_loss"), trials=study.trials)
    assert _opened(url) == (
        f"/experiments/{tracker.experiment_id}/runs",
        {**sort, "orderByKey": "metrics.`val_total_loss`", "orderByAsc": "true"},
    )
    assert not [k for k in tracker.client.get_experiment(tracker.experiment_id).tags if k.startswith(VIEW_TAG_PREFIX)]


def test_mlflow_telemetry_is_off_unless_the_user_turns_it_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """quiet_mlflow() turns MLflow's usage telemetry off (MLFLOW_DISABLE_TELEMETRY, which MLflow reads at
    each event), but keeps a user's own choice: MLFLOW_DISABLE_TELEMETRY=false turns it back on."""
    from mlflow.environment_variables import MLFLOW_DISABLE_TELEMETRY

    from sweep.tracking.tracking import quiet_mlflow

    for name in ("MLFLOW_DISABLE_TELEMETRY", "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"):
        monkeypatch.delenv(name, raising=False)  # restored after the test
    quiet_mlflow()
    assert MLFLOW_DISABLE_TELEMETRY.get() is True
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "false")
    quiet_mlflow()
    assert MLFLOW_DISABLE_TELEMETRY.get() is False


def test_trial_runs_of_a_compared_choice_are_named_by_it(tmp_path: Path) -> None:
    """A comparison's sub-studies share one experiment: their trials' runs are named by the choice
    (``weighting.type=dwa · trial-0``) so that rows of different choices can be told apart; a plain study's
    stay ``trial-<number>``."""
    from sweep.studyfile.compare import MemberTracking
    from sweep.tracking.tracking import TrialRun

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    for study_name, cfg, run_name in (
        ("plain", TrackingSection(uri=uri), "trial-0"),
        (
            "cmp.dwa",
            MemberTracking(uri=uri, experiment="cmp", choice="weighting.type=dwa"),
            "weighting.type=dwa · trial-0",
        ),
    ):
        study = optuna.create_study(study_name=study_name)
        tracker = Tracker(cfg, study)
        run = TrialRun.open(tracker, study.ask())
        assert tracker.client.get_run(run.run_id).info.run_name == run_name


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
