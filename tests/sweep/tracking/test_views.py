"""The saved views the UI links open: which runs they list (the trials, not the test-set evaluations), how
they sort them, and which columns they show (a comparison's compared key and searched params); one small
comparison end to end through ``sweep.run`` and ``sweep.ui --print-only``."""

from __future__ import annotations

import json
import re
import time
import urllib.parse
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric

from sweep.studyfile.sections import StudySection
from sweep.tracking.views import VIEW_TAG_PREFIX, runs_view_url
from tests.conftest import run_main, tiny_study, write_yaml


def _state(client: MlflowClient, experiment_id: str, url: str) -> dict:
    """The runs-table state of the saved view a link opens."""
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).fragment.partition("?")[2]))
    assert set(query) == {"viewStateShareKey"}, url
    tag = client.get_experiment(experiment_id).tags[VIEW_TAG_PREFIX + query["viewStateShareKey"]]
    return json.loads(json.loads(tag)["state"])


def _listed(client: MlflowClient, experiment_id: str, state: dict) -> list:
    """The runs a view lists, top to bottom, as the UI asks MLflow for them: its filter and its sort."""
    order = f"{state['orderByKey']} {'ASC' if state['orderByAsc'] else 'DESC'}"
    return client.search_runs([experiment_id], state.get("searchFilter", ""), order_by=[order], max_results=1000)


def _store(tmp_path: Path) -> tuple[MlflowClient, str]:
    """A new tracking store (a copy of the migrated template, as a study makes one) and an experiment."""
    from sweep.tracking.mlflowdb import seed_mlflow_db

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    seed_mlflow_db(uri)
    client = MlflowClient(tracking_uri=uri)
    return client, client.create_experiment("s", artifact_location=(tmp_path / "a").as_uri())


def _evaluation_run(client: MlflowClient, experiment_id: str, per_seed: list[float]) -> str:
    """A run as sweep.evaluate records one: each seed's value a step of the target, and their mean."""
    tags = {"sweep.role": "evaluation", "sweep.study_name": "s", "sweep.trial": "0"}
    run_id = client.create_run(experiment_id, run_name="s #0 on test (2 seeds)", tags=tags).info.run_id
    now = int(time.time() * 1000)
    metrics = [Metric("val_total_loss", v, now, i) for i, v in enumerate(per_seed)]
    metrics += [
        Metric(f"{k}_mean", sum(per_seed) / len(per_seed), now, 0) for k in ("val_total_loss", "test_total_loss")
    ]
    client.log_batch(run_id, metrics=metrics)
    client.set_terminated(run_id)
    return run_id


def test_the_trials_view_lists_no_evaluation_run(tmp_path: Path) -> None:
    """An evaluation run's target metric shows its last seed's value (1.0366 where the mean over seeds is
    1.1226): sorted among the trials it ranked first. The trials' view filters evaluation runs out, so its
    first row is the best trial and no row holds one seed's value; the parent run is still listed."""
    client, experiment_id = _store(tmp_path)
    parent = client.create_run(experiment_id, run_name="s", tags={"sweep.role": "parent"}).info.run_id
    trials = {}
    for number, value in enumerate((1.10, 1.05, 1.20)):
        tags = {"sweep.role": "trial", "mlflow.parentRunId": parent, "sweep.trial_number": str(number)}
        run_id = client.create_run(experiment_id, run_name=f"trial-{number}", tags=tags).info.run_id
        client.log_metric(run_id, "val_total_loss", value)
        trials[run_id] = value
    evaluation = _evaluation_run(client, experiment_id, [1.2086, 1.0366])
    url = runs_view_url(client, experiment_id, "http://127.0.0.1:5000", StudySection(name="s"), ())
    listed = [r.info.run_id for r in _listed(client, experiment_id, _state(client, experiment_id, url))]
    assert evaluation not in listed
    assert listed == [*sorted(trials, key=trials.__getitem__), parent]


def test_the_evaluations_view_sorts_by_the_mean_over_seeds(tmp_path: Path) -> None:
    """The evaluations' own view lists the evaluation runs alone, sorted by the test target's mean over
    seeds, and shows means and CIs, never the per-seed metric (whose shown value is one seed's)."""
    from sweep.tracking.views import evaluations_view_url

    client, experiment_id = _store(tmp_path)
    client.create_run(experiment_id, run_name="trial-0", tags={"sweep.role": "trial"})
    worse = _evaluation_run(client, experiment_id, [1.30, 1.00])  # its last seed is the lowest of all
    better = _evaluation_run(client, experiment_id, [1.05, 1.10])
    target = StudySection(name="s", compare="weighting.type")
    url = evaluations_view_url(client, experiment_id, "http://127.0.0.1:5000", target, ())
    state = _state(client, experiment_id, url)
    assert [r.info.run_id for r in _listed(client, experiment_id, state)] == [better, worse]
    assert (state["orderByKey"], state["orderByAsc"]) == ("metrics.`test_total_loss_mean`", True)
    assert state["selectedColumns"][:4] == [
        "metrics.`test_total_loss_mean`", "metrics.`test_total_loss_ci95`",
        "metrics.`val_total_loss_mean`", "metrics.`val_total_loss_ci95`",
    ]  # fmt: skip
    assert "metrics.`val_total_loss`" not in state["selectedColumns"]
    assert "params.`weighting.type`" in state["selectedColumns"]


def test_a_comparisons_view_shows_the_compared_key_first(tmp_path: Path) -> None:
    """A comparison's view shows its compared key as the first param column, even before any trial (the
    trials live in its sub-studies), then the params its trials searched."""
    client, experiment_id = _store(tmp_path)
    target = StudySection(name="cmp", compare="weighting.type")
    state = _state(client, experiment_id, runs_view_url(client, experiment_id, "http://127.0.0.1:5000", target, ()))
    assert state["selectedColumns"] == ["metrics.`val_total_loss`", "params.`weighting.type`"]
    dists = {"optimizer.lr": optuna.distributions.FloatDistribution(0.001, 0.1)}
    dists["weighting.type"] = optuna.distributions.CategoricalDistribution(["dwa"])
    trial = optuna.trial.create_trial(
        params={"optimizer.lr": 0.01, "weighting.type": "dwa"}, distributions=dists, value=1
    )
    url = runs_view_url(client, experiment_id, "http://127.0.0.1:5000", target, [trial])
    assert _state(client, experiment_id, url)["selectedColumns"] == [
        "metrics.`val_total_loss`", "params.`weighting.type`", "params.`optimizer.lr`"
    ]  # fmt: skip


@pytest.fixture(scope="module")
def compared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A tiny comparison of two weighting strategies, searched and evaluated (``sweep.run``), and what
    ``sweep.ui --print-only`` printed for it."""
    tmp_path = tmp_path_factory.mktemp("compared")
    doc = tiny_study("cmp", study={"n_trials": 2, "compare": "weighting.type", "pruner": "none"})
    doc["search"]["params"]["weighting.type"] = {"type": "categorical", "choices": ["static", "dwa"]}
    doc["evaluate"] = {"seeds": 2}
    write_yaml(tmp_path / "s.yaml", doc)
    ran = run_main("sweep.run", "s.yaml", "--no-progress", "--no-report", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    shown = run_main("sweep.ui", "s.yaml", "--print-only", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    return tmp_path, shown.stdout


def test_a_comparisons_link_lists_its_trials_by_choice_with_their_params(compared: tuple[Path, str]) -> None:
    """``sweep.ui`` on a comparison: the view shows the compared key and the searched params (the trials
    of every sub-study), lists every trial and no evaluation run, best first, and each trial's run name
    says its choice."""
    tmp_path, printed = compared
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment_id = client.get_experiment_by_name("cmp").experiment_id
    state = _state(client, experiment_id, re.search(r"MLflow UI: (\S+)", printed)[1])
    assert state["selectedColumns"] == [
        "metrics.`val_total_loss`", "params.`weighting.type`", "params.`optimizer.lr`", "params.`weights.log10_ratio`"
    ]  # fmt: skip
    storage = f"sqlite:///{tmp_path / '.sweep' / 'optuna.db'}"
    names = {}
    for choice in ("static", "dwa"):
        for t in optuna.load_study(study_name=f"cmp.{choice}", storage=storage).trials:
            names[t.user_attrs["mlflow_run_id"]] = (f"weighting.type={choice} · trial-{t.number}", t.value)
    listed = _listed(client, experiment_id, state)
    assert not [r for r in listed if r.data.tags["sweep.role"] == "evaluation"]
    trials = [r for r in listed if r.data.tags["sweep.role"] == "trial"]
    assert {r.info.run_id: (r.info.run_name, r.data.metrics["val_total_loss"]) for r in trials} == names
    assert listed[: len(trials)] == trials and [r.data.metrics["val_total_loss"] for r in trials] == sorted(
        v for _, v in names.values()
    )


def test_a_comparisons_evaluations_have_their_own_link(compared: tuple[Path, str]) -> None:
    """The evaluation runs ``sweep.run`` recorded (one per choice) are reached by a link of their own."""
    tmp_path, printed = compared
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment_id = client.get_experiment_by_name("cmp").experiment_id
    state = _state(client, experiment_id, re.search(r"Test-set evaluations \(mean over seeds\): (\S+)", printed)[1])
    listed = _listed(client, experiment_id, state)
    assert sorted(r.data.tags["sweep.study_name"] for r in listed) == ["cmp.dwa", "cmp.static"]
    means = [r.data.metrics["test_total_loss_mean"] for r in listed]
    assert means == sorted(means)
