"""The MLflow side of a study: reachability checks, the parent run's params under concurrent starts, and
the UI link's saved view (sort and columns)."""

from __future__ import annotations

import http.server
import json
import threading
import urllib.parse
from pathlib import Path

import optuna
import pytest

from sweep.studyfile.sections import StudySection, TrackingSection
from sweep.tracking.tracking import Tracker, check_tracking
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
