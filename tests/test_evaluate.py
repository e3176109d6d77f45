"""Honest comparisons through the CLI: the test split no trial reads, ``sweep.evaluate`` (fresh seeds,
mean ± 95 % CI recorded in MLflow), and ``study.compare`` (one equal-budget sub-study per choice)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from sweep.results.evaluation import Selection, config_for, evaluation_seeds, mean_ci, retrain
from sweep.results.results import EVALUATION_ATTR
from sweep.storage.storage import Attr
from tests.conftest import run_main, tiny_study, write_yaml
from tests.support.evaluation_problems import Tripwire, guarded

T_975_4 = 2.7764451051977987  # Student t, 97.5 % quantile, 4 degrees of freedom (tables)


def _storage(folder: Path) -> str:
    return f"sqlite:///{folder / '.sweep' / 'optuna.db'}"


def _client(folder: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}")


def _runs(folder: Path, experiment: str) -> list:
    client = _client(folder)
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], max_results=1000)


def _guarded_study(name: str, **problem_options: object) -> dict:
    doc = tiny_study(name)
    doc["objective"]["problem"] = {
        "name": "tests.support.evaluation_problems:guarded",
        "options": dict(problem_options),
    }
    return doc


def test_mean_ci_is_the_student_t_interval() -> None:
    values = [0.71, 0.64, 0.80, 0.69, 0.75]
    ci = mean_ci(values)
    sd = float(np.std(values, ddof=1))
    assert ci.mean == pytest.approx(float(np.mean(values)), abs=1e-15)
    assert ci.sd == pytest.approx(sd, rel=1e-12)
    assert ci.half_width == pytest.approx(T_975_4 * sd / math.sqrt(5), rel=1e-12)
    assert ci.n == 5
    one = mean_ci([0.5])
    assert one.mean == 0.5 and math.isnan(one.half_width) and one.text() == "0.500"


def test_evaluation_seeds_are_fresh_and_shared() -> None:
    seeds = evaluation_seeds(0, 5)
    assert len(set(seeds)) == 5 and seeds == evaluation_seeds(0, 5)
    from objectives.helpers import derive_seed

    assert not set(seeds) & {derive_seed(0, "trial", n) for n in range(10_000)}  # never a trial's seed


def test_search_never_reads_the_test_split_and_evaluate_scores_on_it(tmp_path, monkeypatch) -> None:
    write_yaml(tmp_path / "s.yaml", _guarded_study("guard"))
    monkeypatch.setattr(Tripwire, "armed", True)  # any read of a test split fails the trial
    result = run_main("sweep.run", "s.yaml", "--no-progress", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    study = optuna.load_study(study_name="guard", storage=_storage(tmp_path))
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 3
    assert not any(k.startswith("test_") for r in _runs(tmp_path, "guard") for k in r.data.metrics)

    monkeypatch.setattr(Tripwire, "armed", False)
    monkeypatch.setattr(Tripwire, "reads", 0)
    result = run_main("sweep.evaluate", "s.yaml", "--seeds", "5", "--no-progress", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert Tripwire.reads == 5 * 2 * 48  # every test sample of both tasks, once per seed

    runs = _runs(tmp_path, "guard")
    evaluations = [r for r in runs if r.data.tags.get("sweep.role") == "evaluation"]
    assert len(evaluations) == 1
    ev = evaluations[0]
    study = optuna.load_study(study_name="guard", storage=_storage(tmp_path))
    assert ev.data.tags["mlflow.parentRunId"] == study.user_attrs[Attr.PARENT]
    assert ev.data.tags["sweep.trial"] == str(study.best_trial.number)
    assert ev.info.status == "FINISHED"
    # Search runs still carry no test metric; the evaluation run has one value per seed (steps 0..4), never
    # under the metric's own name (where a table would show one seed's value as the run's).
    searched = [r for r in runs if r.data.tags.get("sweep.role") != "evaluation"]
    assert not any(k.startswith("test_") for r in searched for k in r.data.metrics)
    assert "test_total_loss" not in ev.data.metrics and "val_total_loss" not in ev.data.metrics
    history = _client(tmp_path).get_metric_history(ev.info.run_id, "test_total_loss_seed")
    values = [m.value for m in sorted(history, key=lambda m: m.step)]
    assert [m.step for m in sorted(history, key=lambda m: m.step)] == [0, 1, 2, 3, 4]
    # The CI, checked against a direct computation from the five per-seed values.
    sd = float(np.std(values, ddof=1))
    assert ev.data.metrics["test_total_loss_mean"] == pytest.approx(float(np.mean(values)), rel=1e-12)
    assert ev.data.metrics["test_total_loss_ci95"] == pytest.approx(T_975_4 * sd / math.sqrt(5), rel=1e-12)
    assert f"{np.mean(values):.3f} ± {T_975_4 * sd / math.sqrt(5):.3f}" in result.stdout
    # The same per-seed values in the CSV and in the Optuna study's record.
    frame = pd.read_csv(tmp_path / ".sweep" / "reports" / "guard" / "evaluation.csv")
    assert frame["test_total_loss"].tolist() == pytest.approx(values, rel=1e-12)
    assert frame["seed"].tolist() == evaluation_seeds(0, 5)
    record = study.user_attrs[EVALUATION_ATTR][str(study.best_trial.number)]
    assert record["values"]["test_total_loss"] == pytest.approx(values, rel=1e-12)
    assert record["run_id"] == ev.info.run_id


def test_export_with_seeds_evaluates_the_exported_trial(tmp_path) -> None:
    write_yaml(tmp_path / "s.yaml", _guarded_study("exp"))
    assert run_main("sweep.run", "s.yaml", "--no-progress", cwd=tmp_path).returncode == 0
    assert run_main("sweep.export", "s.yaml", "--seeds", "0", cwd=tmp_path).returncode == 2
    assert not (tmp_path / "exp-best.yaml").exists()  # refused before anything is written
    result = run_main("sweep.export", "s.yaml", "--trial", "1", "--seeds", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "exp-best.yaml").exists()
    (ev,) = [r for r in _runs(tmp_path, "exp") if r.data.tags.get("sweep.role") == "evaluation"]
    assert ev.data.tags["sweep.trial"] == "1" and ev.data.tags["sweep.seeds"] == "2"


def test_evaluate_refuses_a_problem_without_a_test_split(tmp_path) -> None:
    write_yaml(tmp_path / "s.yaml", _guarded_study("notest", with_test=False))
    assert run_main("sweep.run", "s.yaml", "--no-progress", cwd=tmp_path).returncode == 0
    result = run_main("sweep.evaluate", "s.yaml", "--no-progress", cwd=tmp_path)
    assert result.returncode == 2
    line = result.stderr.strip()
    assert "\n" not in line and "s.yaml" in line and "objective.problem" in line and "no test split" in line
    assert not [r for r in _runs(tmp_path, "notest") if r.data.tags.get("sweep.role") == "evaluation"]


@pytest.mark.parametrize("score", ["last", "best"])
def test_retraining_with_the_trials_own_seed_reproduces_its_value(tmp_path, score) -> None:
    """The evaluation path trains exactly what the trial trained: with the trial's seed, the kept epoch's
    validation value is the trial's value (the last epoch's, or the best one's)."""
    doc = _guarded_study(f"replay_{score}")
    doc["study"]["score"] = score
    doc["objective"]["epochs"] = 6
    write_yaml(tmp_path / "s.yaml", doc)
    assert run_main("sweep.run", "s.yaml", "--no-progress", cwd=tmp_path).returncode == 0
    trial = optuna.load_study(study_name=f"replay_{score}", storage=_storage(tmp_path)).best_trial
    recorded = trial.user_attrs[Attr.CONFIG]
    cfg = config_for(recorded, recorded["seed"], "cpu")
    out = retrain(cfg, guarded(recorded["data_seed"]), Selection("val_total_loss", "minimize", score))
    assert out["val_total_loss"] == pytest.approx(trial.value, rel=1e-6)
    if score == "best":
        assert out["epoch"] == trial.user_attrs[Attr.BEST_EPOCH]


def test_interrupted_evaluation_leaves_no_half_written_run(tmp_path, monkeypatch) -> None:
    write_yaml(tmp_path / "s.yaml", _guarded_study("stop"))
    assert run_main("sweep.run", "s.yaml", "--no-progress", cwd=tmp_path).returncode == 0
    import sweep.commands.evaluate

    calls = {"n": 0}

    def stopping(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # the second configuration's first seed
            raise KeyboardInterrupt
        return retrain(*args, **kwargs)

    monkeypatch.setattr(sweep.commands.evaluate, "retrain", stopping)
    result = run_main("sweep.evaluate", "s.yaml", "--top", "2", "--seeds", "2", "--no-progress", cwd=tmp_path)
    assert result.returncode == 130
    evaluations = [r for r in _runs(tmp_path, "stop") if r.data.tags.get("sweep.role") == "evaluation"]
    assert len(evaluations) == 1 and evaluations[0].info.status == "FINISHED"
    study = optuna.load_study(study_name="stop", storage=_storage(tmp_path))
    assert list(study.user_attrs[EVALUATION_ATTR]) == [evaluations[0].data.tags["sweep.trial"]]

    # The same command again resumes: the recorded configuration is shown from its record, the other
    # trained; a third run trains nothing; --again retrains both.
    monkeypatch.setattr(sweep.commands.evaluate, "retrain", retrain)
    args = ("sweep.evaluate", "s.yaml", "--top", "2", "--seeds", "2", "--no-progress")
    resumed = run_main(*args, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stderr.count("evaluated before with these seeds") == 1
    evaluation_runs = lambda: [r for r in _runs(tmp_path, "stop") if r.data.tags.get("sweep.role") == "evaluation"]  # noqa: E731
    assert len(evaluation_runs()) == 2
    third = run_main(*args, cwd=tmp_path)
    assert third.returncode == 0 and len(evaluation_runs()) == 2
    table = [line for line in third.stdout.splitlines() if line.startswith("| stop")]
    assert table == [line for line in resumed.stdout.splitlines() if line.startswith("| stop")] and len(table) == 2
    assert run_main(*args, "--again", cwd=tmp_path).returncode == 0 and len(evaluation_runs()) == 2  # replaced


def test_again_supersedes_the_earlier_evaluation_run(tmp_path) -> None:
    """``--again`` (or other seeds) replaces a configuration's evaluation: the earlier MLflow run is tagged
    ``sweep.superseded_by`` with the new run's id and moved to MLflow's deleted runs (restorable), said in
    one line; the study's record and the report show the new one only."""
    from mlflow.entities import ViewType

    write_yaml(tmp_path / "s.yaml", _guarded_study("again"))
    assert run_main("sweep.run", "s.yaml", "--no-progress", "--no-report", cwd=tmp_path).returncode == 0
    args = ("sweep.evaluate", "s.yaml", "--seeds", "2", "--no-progress")
    assert run_main(*args, cwd=tmp_path).returncode == 0
    evaluations = lambda: [r for r in _runs(tmp_path, "again") if r.data.tags.get("sweep.role") == "evaluation"]  # noqa: E731
    (old,) = evaluations()
    again = run_main(*args, "--again", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    (new,) = evaluations()
    assert new.info.run_id != old.info.run_id and new.info.run_name == old.info.run_name
    replaced = _client(tmp_path).get_run(old.info.run_id)
    assert replaced.data.tags["sweep.superseded_by"] == new.info.run_id
    assert replaced.info.lifecycle_stage == "deleted"
    said = [line for line in again.stderr.splitlines() if "superseded" in line]
    assert len(said) == 1 and old.info.run_id in said[0] and new.info.run_id in said[0], again.stderr
    study = optuna.load_study(study_name="again", storage=_storage(tmp_path))
    assert study.user_attrs[EVALUATION_ATTR][new.data.tags["sweep.trial"]]["run_id"] == new.info.run_id
    # Other seeds replace it too; the deleted runs keep the chain.
    assert run_main("sweep.evaluate", "s.yaml", "--seeds", "3", "--no-progress", cwd=tmp_path).returncode == 0
    (third,) = evaluations()
    assert third.data.tags["sweep.seeds"] == "3"
    assert _client(tmp_path).get_run(new.info.run_id).data.tags["sweep.superseded_by"] == third.info.run_id
    experiment = _client(tmp_path).get_experiment_by_name("again").experiment_id
    deleted = _client(tmp_path).search_runs([experiment], run_view_type=ViewType.DELETED_ONLY)
    assert {r.info.run_id for r in deleted} == {old.info.run_id, new.info.run_id}


def test_the_help_says_95_percent() -> None:
    """argparse does not %-format a description: a doubled ``%%`` was printed as written."""
    from sweep.commands.evaluate import parser

    text = " ".join(parser().format_help().split())
    assert "95% CI" in text and "%%" not in text


def test_a_ci_is_clipped_to_the_range_of_its_metric() -> None:
    """Accuracies lie in [0, 1], losses are ≥ 0: an interval passing that range is shown clipped (as
    ``[low, high]``, no longer symmetric); one inside it stays ``mean ± half width``; values outside the
    conventional range (an accuracy in percent, a negative log-likelihood) leave the interval as it is."""
    from sweep.results.evaluation import metric_range
    from sweep.results.results import Evaluated

    acc = mean_ci([1.0, 1.0, 0.82], bounds=metric_range("test_a_acc"))
    assert acc.half_width == pytest.approx(mean_ci([1.0, 1.0, 0.82]).half_width)  # the Student-t width as ever
    assert acc.low == pytest.approx(acc.mean - acc.half_width) and acc.high == 1.0
    assert acc.text() == f"0.940 [{acc.mean - acc.half_width:.3f}, 1.000]"
    loss = mean_ci([0.001, 0.03, 0.002], bounds=metric_range("val_total_loss"))
    assert loss.low == 0.0 and loss.text().startswith("0.011 [0.000, ")
    inside = mean_ci([0.71, 0.64, 0.80, 0.69, 0.75], bounds=metric_range("test_b_acc"))
    assert "±" in inside.text() and (inside.low, inside.high) == (inside.mean - inside.half_width,
                                                                  inside.mean + inside.half_width)  # fmt: skip
    percent = mean_ci([100.0, 100.0, 82.0], bounds=metric_range("test_a_acc"))
    assert "±" in percent.text()
    nll = mean_ci([-0.5, 0.1, 0.2], bounds=metric_range("test_a_loss"))
    assert "±" in nll.text()
    assert metric_range("test_a_mae") == (-math.inf, math.inf)
    row = Evaluated("s", None, optuna.trial.create_trial(value=0.5), "3", 1.0, [1, 2, 3])
    row.runs = [{"test_a_acc": 1.0}, {"test_a_acc": 1.0}, {"test_a_acc": 0.82}]
    assert row.cell("test_a_acc") == acc.text()


def test_a_diverged_seed_is_counted_not_averaged(tmp_path, monkeypatch) -> None:
    """A fresh seed whose training diverges is a result about the configuration: the command goes on,
    says so, and the mean and CI are over the finite seeds with the diverged one shown beside them."""
    from objectives.helpers import NonFiniteLossError

    write_yaml(tmp_path / "s.yaml", _guarded_study("nan"))
    assert run_main("sweep.run", "s.yaml", "--no-progress", cwd=tmp_path).returncode == 0
    import sweep.commands.evaluate

    calls = {"n": 0}

    def second_diverges(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise NonFiniteLossError("a training loss is not finite at epoch 1, step 3")
        return retrain(*args, **kwargs)

    monkeypatch.setattr(sweep.commands.evaluate, "retrain", second_diverges)
    result = run_main("sweep.evaluate", "s.yaml", "--seeds", "3", "--no-progress", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "diverged (a training loss is not finite" in result.stderr
    (ev,) = [r for r in _runs(tmp_path, "nan") if r.data.tags.get("sweep.role") == "evaluation"]
    assert ev.data.metrics["diverged_seeds"] == 1
    history = _client(tmp_path).get_metric_history(ev.info.run_id, "test_total_loss_seed")
    assert sorted(m.step for m in history) == [0, 2]
    values = [m.value for m in history]
    assert ev.data.metrics["test_total_loss_mean"] == pytest.approx(float(np.mean(values)), rel=1e-12)
    assert "(1/3 diverged)" in result.stdout
    frame = pd.read_csv(tmp_path / ".sweep" / "reports" / "nan" / "evaluation.csv")
    assert frame["diverged"].tolist() == [False, True, False] and frame["test_total_loss"].isna().tolist()[1]
    # The report reads the same back from the storage.
    report = run_main("sweep.report", "s.yaml", cwd=tmp_path)
    assert report.returncode == 0 and "(1/3 diverged)" in report.stdout


def _compare_study() -> dict:
    doc = tiny_study("cmp", study={"n_trials": 2, "compare": "weighting.type", "pruner": "none"})
    doc["search"]["params"]["weighting.type"] = {"type": "categorical", "choices": ["static", "dwa"]}
    doc["evaluate"] = {"seeds": 2}
    return doc


def test_compare_runs_one_equal_budget_study_per_choice_and_evaluates_each(tmp_path) -> None:
    write_yaml(tmp_path / "s.yaml", _compare_study())
    result = run_main("sweep.run", "s.yaml", "--no-progress", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    storage = _storage(tmp_path)
    names = sorted(s.study_name for s in optuna.get_all_study_summaries(storage))
    assert names == ["cmp.dwa", "cmp.static"]
    studies = {n: optuna.load_study(study_name=n, storage=storage) for n in names}
    for name, study in studies.items():
        trials = study.get_trials(states=[optuna.trial.TrialState.COMPLETE])
        assert len(trials) == 2  # the same budget for each choice
        assert {t.params["weighting.type"] for t in trials} == {name.split(".")[1]}
    # The same search over the shared parameters: the same sampler seed draws the same points.
    lrs = [[t.params["optimizer.lr"] for t in s.trials] for s in studies.values()]
    assert lrs[0] == lrs[1]
    # MLflow: one experiment, the sub-studies' parent runs nested under one comparison run.
    runs = _runs(tmp_path, "cmp")
    (comparison,) = [r for r in runs if r.data.tags.get("sweep.role") == "comparison"]
    parents = [r for r in runs if r.data.tags.get("sweep.role") == "parent"]
    assert sorted(r.data.tags["sweep.study_name"] for r in parents) == names
    assert {r.data.tags["mlflow.parentRunId"] for r in parents} == {comparison.info.run_id}
    evaluations = [r for r in runs if r.data.tags.get("sweep.role") == "evaluation"]
    assert sorted(r.data.tags["sweep.study_name"] for r in evaluations) == names
    for ev in evaluations:
        parent = studies[ev.data.tags["sweep.study_name"]].user_attrs[Attr.PARENT]
        assert ev.data.tags["mlflow.parentRunId"] == parent
    table = [line for line in result.stdout.splitlines() if line.startswith(("| static", "| dwa"))]
    assert len(table) == 2 and all("±" in line for line in table)

    # sweep.report shows the same comparison from the storage, without retraining.
    report = run_main("sweep.report", "s.yaml", cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    assert "Comparison (weighting.type):" in report.stdout
    assert [line for line in report.stdout.splitlines() if line.startswith(("| static", "| dwa"))] == table
    assert (tmp_path / ".sweep" / "reports" / "cmp" / "static" / "trials.csv").exists()


@pytest.mark.slow
def test_compare_with_workers_passes_each_choice_to_its_processes(tmp_path) -> None:
    """``--workers 2`` on a comparison: each sub-study's worker process gets ``--compare-value`` and
    trains only that choice (a real subprocess run of the CLI)."""
    from tests.conftest import run_cli

    doc = _compare_study()
    doc["study"]["n_trials"] = 3
    del doc["evaluate"]
    write_yaml(tmp_path / "s.yaml", doc)
    result = run_cli("sweep.run", "s.yaml", "--workers", "2", "--no-progress", "--no-report", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for choice in ("static", "dwa"):
        study = optuna.load_study(study_name=f"cmp.{choice}", storage=_storage(tmp_path))
        assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
        assert {t.params["weighting.type"] for t in study.trials} == {choice}


def test_compare_value_runs_one_choice_only(tmp_path) -> None:
    write_yaml(tmp_path / "s.yaml", _compare_study())
    result = run_main("sweep.run", "s.yaml", "--no-progress", "--compare-value", "dwa", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert [s.study_name for s in optuna.get_all_study_summaries(_storage(tmp_path))] == ["cmp.dwa"]
    assert "±" not in result.stdout  # evaluation waits for the whole comparison
    bad = run_main("sweep.run", "s.yaml", "--no-progress", "--compare-value", "famo", cwd=tmp_path)
    assert bad.returncode == 2 and "not a choice of weighting.type" in bad.stderr
    # export needs one study: the choice is named, else refused in one line.
    refused = run_main("sweep.export", "s.yaml", cwd=tmp_path)
    assert refused.returncode == 2 and "--compare-value CHOICE (static, dwa)" in refused.stderr
    exported = run_main("sweep.export", "s.yaml", "--compare-value", "dwa", "-o", "best.yaml", cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    replay = run_main("sweep.run", "best.yaml", "--no-progress", cwd=tmp_path)
    assert replay.returncode == 0, replay.stderr
    best = optuna.load_study(study_name="cmp.dwa", storage=_storage(tmp_path)).best_value
    again = optuna.load_study(study_name=f"cmp.dwa-trial{exported.stdout.split('#')[1].split()[0]}",
                              storage=_storage(tmp_path)).best_value  # fmt: skip
    assert again == pytest.approx(best, rel=1e-9)


@pytest.mark.parametrize(
    ("compare", "message"),
    [
        ("optimizer.lr", "not a searched categorical"),
        ("mixing", "not a searched categorical"),
    ],
)
def test_compare_must_name_a_searched_categorical(tmp_path, compare, message) -> None:
    doc = _compare_study()
    doc["study"]["compare"] = compare
    write_yaml(tmp_path / "s.yaml", doc)
    result = run_main("sweep.run", "s.yaml", cwd=tmp_path)
    assert result.returncode == 2
    assert "study.compare" in result.stderr and message in result.stderr
    assert not (tmp_path / ".sweep").exists() and not (tmp_path / "mlflow.db").exists()


def test_compare_refuses_an_enqueued_compared_value(tmp_path) -> None:
    doc = _compare_study()
    doc["study"]["enqueue"] = [{"weighting.type": "dwa"}]
    write_yaml(tmp_path / "s.yaml", doc)
    result = run_main("sweep.run", "s.yaml", cwd=tmp_path)
    assert result.returncode == 2 and "study.enqueue.0.weighting.type" in result.stderr


def test_evaluate_section_is_validated(tmp_path) -> None:
    doc = _compare_study()
    doc["evaluate"] = {"seeds": 0}
    write_yaml(tmp_path / "s.yaml", doc)
    result = run_main("sweep.run", "s.yaml", cwd=tmp_path)
    assert result.returncode == 2 and "evaluate.seeds" in result.stderr
