"""A three-task study through the commands: search (one by one and in vectorized groups), MLflow records
named by task, export and its exact replay, evaluate, a comparison; a user problem with named tasks; and
the two-task shipped studies untouched by the task names."""

from __future__ import annotations

import math
from pathlib import Path

import yaml

from tests.conftest import run_main, write_yaml
from tests.test_cli import assert_agree, load

TASKS = ("digit", "value", "parity")
SMALL = {"n_digit": 48, "n_value": 64, "n_parity": 16, "hidden": 8}


def _study(name: str, **study: object) -> dict:
    return {
        "study": {"name": name, "n_trials": 4, "seed": 0, "metric": "val_parity_loss", **study},
        "tracking": {"uri": "sqlite:///mlflow.db"},
        "objective": {
            "problem": {"name": "digits_three", "options": SMALL},
            "epochs": 2,
            "batch_size": 16,
            "batch_sizes": {"value": 32},
            "device": "cpu",
        },
        "search": {"weights": {"parametrization": "log_ratio", "low": -2, "high": 2}},
        "evaluate": {"seeds": 2, "top": 1},
    }


def test_a_three_task_study_searches_records_exports_replays_and_evaluates(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "three.yaml", _study("three"))
    done = run_main("sweep.run", str(path), "--no-report", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "digit = " in done.stdout and "parity = " in done.stdout  # the best trial's weights, by task
    study, client, _, runs = load(tmp_path, "three")
    assert_agree(study, client, runs)
    trials = [r for r in runs if r.data.tags.get("sweep.role") == "trial"]
    for run in trials:
        assert {f"val_{t}_loss" for t in TASKS} | {f"weight_{t}" for t in TASKS} <= set(run.data.metrics)
        assert {"val_digit_acc", "val_value_mae", "val_parity_acc"} <= set(run.data.metrics)
        total = sum(run.data.metrics[f"val_{t}_loss"] for t in TASKS)
        assert math.isclose(run.data.metrics["val_total_loss"], total, rel_tol=1e-5)
        weights = [run.data.metrics[f"weight_{t}"] for t in TASKS]
        assert math.isclose(sum(weights), 1.0, rel_tol=1e-5)
    for trial in study.trials:  # two free log-ratios span the three weights
        assert set(trial.params) == {"weights.log10_ratio", "weights.log10_ratio_parity"}
        assert trial.user_attrs["config"]["tasks"] == list(TASKS)

    out = tmp_path / "best.yaml"
    exported = run_main("sweep.export", str(path), "-o", str(out), cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    written = yaml.safe_load(out.read_text())
    assert written["objective"]["tasks"] == list(TASKS) and written["objective"]["batch_sizes"] == {"value": 32}
    replay = run_main("sweep.run", str(out), "--no-report", cwd=tmp_path)
    assert replay.returncode == 0, replay.stderr
    replayed, *_ = load(tmp_path, written["tracking"]["experiment"])
    again = [t for t in replayed.trials if t.user_attrs.get("mlflow_run_id")]
    assert study.best_value in [t.value for t in again]  # bit for bit on the CPU

    evaluated = run_main("sweep.evaluate", str(path), "--seeds", "2", cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    assert "test_parity_acc" in evaluated.stdout and "test_value_mae" in evaluated.stdout


def test_three_tasks_in_vectorized_groups_and_a_comparison(tmp_path: Path) -> None:
    grouped = write_yaml(tmp_path / "grouped.yaml", _study("grouped", parallel_trials=2))
    done = run_main("sweep.run", str(grouped), "--no-report", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    study, client, _, runs = load(tmp_path, "grouped")
    assert_agree(study, client, runs)
    assert len([t for t in study.trials if t.state.name == "COMPLETE"]) == 4

    data = _study("cmp", compare="weighting.type", n_trials=2)
    data["search"]["params"] = {"weighting.type": {"type": "categorical", "choices": ["static", "pcgrad"]}}
    compared = write_yaml(tmp_path / "cmp.yaml", data)
    done = run_main("sweep.run", str(compared), "--no-report", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    evaluated = run_main("sweep.evaluate", str(compared), "--seeds", "2", cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    rows = [line for line in evaluated.stdout.splitlines() if line.startswith(("| static", "| pcgrad"))]
    assert len(rows) == 2


def test_a_user_problem_with_named_tasks_and_a_wrong_task_list(tmp_path: Path) -> None:
    """The example user problem runs with weights by task name; naming other tasks fails in one line."""
    data = {
        "study": {"name": "user3", "n_trials": 2, "seed": 0},
        "tracking": {"uri": "sqlite:///mlflow.db"},
        "objective": {
            "problem": {"name": "examples.three_tasks_problem:make", "options": {"n": 200}},
            "epochs": 1,
            "weights": {"depth": 0.5, "edges": 0.3, "kind": 0.2},
            "device": "cpu",
        },
        "search": {"weights": {"parametrization": "simplex"}},
    }
    done = run_main("sweep.run", str(write_yaml(tmp_path / "user3.yaml", data)), "--no-report", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    study, *_ = load(tmp_path, "user3")
    assert set(study.trials[0].params) == {"weights.u0", "weights.u1", "weights.u2"}
    data["objective"]["weights"] = [0.5, 0.5]  # the default tasks a, b: not this problem's
    data["study"]["name"] = "user3_wrong"
    bad = run_main("sweep.run", str(write_yaml(tmp_path / "wrong.yaml", data)), "--no-report", cwd=tmp_path)
    assert bad.returncode == 2
    assert "set objective.tasks: [depth, edges, kind]" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_a_builtin_named_with_other_tasks_names_the_key(tmp_path: Path) -> None:
    data = _study("bad")
    data["objective"]["tasks"] = ["digit", "value", "odd"]
    bad = run_main("sweep.run", str(write_yaml(tmp_path / "bad.yaml", data)), "--no-report", cwd=tmp_path)
    assert bad.returncode == 2
    assert "objective.tasks" in bad.stderr and "[digit, value, parity]" in bad.stderr
    assert not (tmp_path / "mlflow.db").exists()
