"""End to end: ``python -m sweep.run`` on CPU in a temp dir, then Optuna and MLflow must agree."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow import MlflowClient

from sweep.tracking.tracking import flatten
from tests.conftest import run_cli, run_main, tiny_study, write_yaml

STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}


def load(tmp_path: Path, name: str) -> tuple[optuna.Study, MlflowClient, str, list]:
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / '.sweep' / 'optuna.db'}")
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name(name)
    assert exp is not None
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    return study, client, exp.experiment_id, runs


def assert_agree(study: optuna.Study, client: MlflowClient, runs: list) -> None:
    """One parent run; one child per trial, linked both ways, same params (plus every fixed setting),
    status following state; the parent carries the study's fixed settings."""
    parents = [r for r in runs if r.data.tags.get("sweep.role") == "parent"]
    children = {r.info.run_id: r for r in runs if r.data.tags.get("sweep.role") == "trial"}
    assert len(parents) == 1
    parent = parents[0]
    assert study.user_attrs["mlflow_parent_run_id"] == parent.info.run_id
    assert {"epochs", "batch_size", "problem.name", "metric", "score"} <= set(parent.data.params)
    assert len(children) == len(study.trials)
    assert len({t.number for t in study.trials}) == len(study.trials)
    for trial in study.trials:
        run = children[trial.user_attrs["mlflow_run_id"]]
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["sweep.trial_number"] == str(trial.number)
        assert run.data.tags["sweep.trial_state"] == trial.state.name
        assert run.info.status == STATUS[trial.state.name]
        # every setting that shaped the trial (the resolved config, flattened), the sampled values as stored
        expected = {k: str(v) for k, v in flatten(trial.user_attrs.get("config", {})).items()}
        assert run.data.params == {**expected, **{k: str(v) for k, v in trial.params.items()}}
        if "config" in trial.user_attrs:
            assert {"epochs", "batch_size", "problem.name", "device", "seed"} <= set(run.data.params)
        if trial.state.name == "FAIL":
            assert run.data.tags["sweep.fail_reason"] == trial.user_attrs["fail_reason"]


@pytest.mark.slow
def test_run_resume_and_agree(tmp_path: Path) -> None:
    """A tiny study runs, prints the best trial and UI command; resume adds trials, not parents."""
    path = write_yaml(tmp_path / "tiny.yaml", tiny_study())
    first = run_cli("sweep.run", str(path), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "Best trial #" in first.stdout
    assert "mlflow ui --backend-store-uri 'sqlite:///mlflow.db' --host 127.0.0.1" in first.stdout
    assert "http://127.0.0.1:5000/#/experiments/" in first.stdout and "/runs" in first.stdout

    study, client, _, runs = load(tmp_path, "tiny")
    assert len(study.trials) == 3
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    for db in (tmp_path / ".sweep" / "optuna.db", tmp_path / "mlflow.db"):  # commits without fsync (sweep.core.sqlite)
        with contextlib.closing(sqlite3.connect(db)) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",), db
    assert_agree(study, client, runs)
    for trial in study.trials:
        run = client.get_run(trial.user_attrs["mlflow_run_id"])
        # per-epoch metrics: each task's losses, weighted loss, weights and LR, one value per epoch
        for key in (
            "train_a_loss",
            "train_b_loss",
            "val_a_loss",
            "val_b_loss",
            "train_weighted_loss",
            "weight_a",
            "lr",
        ):
            history = client.get_metric_history(run.info.run_id, key)
            assert [m.step for m in sorted(history, key=lambda m: m.step)] == [0, 1, 2]
        assert run.data.metrics["val_total_loss"] == pytest.approx(trial.value)
        assert run.data.metrics["weight_a"] == pytest.approx(trial.user_attrs["weights"][0])
        # the resolved config artifact: every value fixed, replayable
        local = client.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path / f"a{trial.number}"))
        cfg = yaml.safe_load(Path(local).read_text())
        assert cfg["seed"] == trial.user_attrs["seed"] and cfg["device"] == "cpu"
        assert cfg["optimizer"]["lr"] == pytest.approx(trial.params["optimizer.lr"])

    again = run_cli("sweep.run", str(path), "--n-trials", "5", "--no-report", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    study, client, _, runs = load(tmp_path, "tiny")
    assert len(study.trials) == 5
    assert [t.number for t in study.trials] == [0, 1, 2, 3, 4]
    assert_agree(study, client, runs)
    assert len({tuple(sorted(t.params.items())) for t in study.trials}) == 5  # resume did not replay points

    done = run_main("sweep.run", str(path), "--n-trials", "5", "--no-report", cwd=tmp_path)
    assert done.returncode == 0
    assert "0 run now" in done.stdout


@pytest.mark.slow
def test_failing_trials_end_failed_in_both(tmp_path: Path) -> None:
    """A diverging trial (NaN/Inf loss) ends FAILED in Optuna and MLflow with the reason; the study goes on;
    a command whose every trial failed exits 1."""
    doc = tiny_study("boom", objective={"optimizer": {"type": "sgd", "lr": 1e30, "momentum": 0.0}})
    doc["search"] = {"weights": {"parametrization": "log_ratio"}}
    path = write_yaml(tmp_path / "boom.yaml", doc)
    result = run_cli("sweep.run", str(path), "--n-trials", "2", "--no-report", cwd=tmp_path)
    assert result.returncode == 1, result.stderr  # every trial run now failed: said, and not a success
    assert "error: all 2 trial(s) run now failed" in result.stderr
    assert "No trial completed yet." in result.stdout
    assert "trial 0 failed: NonFiniteLossError" in result.stderr
    study, client, _, runs = load(tmp_path, "boom")
    assert [t.state.name for t in study.trials] == ["FAIL", "FAIL"]
    assert all("is inf" in t.user_attrs["fail_reason"] or "is nan" in t.user_attrs["fail_reason"] for t in study.trials)
    assert_agree(study, client, runs)
    assert "Traceback" not in result.stderr


def test_pruned_trials_end_killed(tmp_path: Path) -> None:
    """Trials the pruner stops end PRUNED in Optuna and KILLED in MLflow, with the epoch recorded."""
    doc = tiny_study(
        "prune",
        study={"n_trials": 8, "pruner": {"type": "median", "n_startup_trials": 1, "n_warmup_steps": 0}},
        objective={"epochs": 4},
    )
    doc["search"]["params"]["optimizer.lr"] = {"type": "float", "low": 1e-5, "high": 1e-1, "log": True}
    path = write_yaml(tmp_path / "prune.yaml", doc)
    result = run_main("sweep.run", str(path), "--no-report", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    study, client, _, runs = load(tmp_path, "prune")
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    assert pruned, "the seeded search should prune at least one trial"
    assert_agree(study, client, runs)
    for t in pruned:
        run = client.get_run(t.user_attrs["mlflow_run_id"])
        assert int(run.data.tags["sweep.pruned_at_epoch"]) == max(t.intermediate_values)


def test_multi_objective_study(tmp_path: Path) -> None:
    """Two metrics and directions make a multi-objective study; pruning is off; the Pareto front is printed."""
    doc = tiny_study("multi", study={"metrics": ["val_a_loss", "val_b_loss"]})
    path = write_yaml(tmp_path / "multi.yaml", doc)
    result = run_main("sweep.run", str(path), "--no-report", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Pareto front" in result.stdout
    assert "multi-objective study: pruning is off" in result.stderr
    study, client, _, runs = load(tmp_path, "multi")
    assert len(study.directions) == 2 and all(len(t.values) == 2 for t in study.trials)
    assert_agree(study, client, runs)


@pytest.mark.slow
def test_bad_file_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    """Invalid input: one line naming file and key on stderr, exit 2, no storage or MLflow store created."""
    doc = tiny_study("bad", study={"metric": "train_weighted_loss"})
    path = write_yaml(tmp_path / "bad.yaml", doc)
    result = run_cli("sweep.run", str(path), cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: study.metric: ")
    assert not (tmp_path / ".sweep").exists() and not (tmp_path / "mlflow.db").exists()
    assert not (tmp_path / "mlartifacts").exists()


@pytest.mark.slow
def test_help_and_check(tmp_path: Path) -> None:
    """--help documents the command; --check validates without writing anything."""
    helped = run_cli("sweep.run", "--help", cwd=tmp_path)
    assert helped.returncode == 0 and "--n-trials" in helped.stdout and "resumes" in helped.stdout
    path = write_yaml(tmp_path / "ok.yaml", tiny_study())
    checked = run_cli("sweep.run", str(path), "--check", cwd=tmp_path)
    assert checked.returncode == 0 and "ok" in checked.stdout
    assert not (tmp_path / ".sweep").exists()


def test_study_name_override(tmp_path: Path) -> None:
    """--study-name renames the study and, by default, its MLflow experiment."""
    path = write_yaml(tmp_path / "tiny.yaml", tiny_study(study={"n_trials": 1}))
    result = run_main("sweep.run", str(path), "--study-name", "renamed", "--no-report", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    study, client, _, runs = load(tmp_path, "renamed")
    assert len(study.trials) == 1
    assert_agree(study, client, runs)


def test_timeout_override_stops_starting_trials(tmp_path: Path) -> None:
    """--timeout (seconds) stops starting trials: no trial starts after it has passed (a study of 300
    tiny trials would otherwise run on for a minute or more), and everything it ran agrees."""
    path = write_yaml(tmp_path / "tiny.yaml", tiny_study("timed", study={"n_trials": 300}))
    result = run_main("sweep.run", str(path), "--timeout", "2", "--no-report", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    study, client, _, runs = load(tmp_path, "timed")
    starts = [t.datetime_start for t in study.trials]
    assert 1 <= len(starts) < 300
    assert (max(starts) - min(starts)).total_seconds() <= 2.0  # timed from before the first trial's start
    assert_agree(study, client, runs)


@pytest.mark.slow
def test_concurrent_starts_share_one_parent_run(tmp_path: Path) -> None:
    """Two workers starting on the same study at once end up with one parent run, not two."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    path = write_yaml(tmp_path / "w.yaml", tiny_study("workers", study={"n_trials": 4}))
    import os

    env = {"PYTHONPATH": str(ROOT), "MLFLOW_DISABLE_TELEMETRY": "true", "PATH": "/usr/bin:/bin"}
    env["HOME"] = os.environ.get("HOME", str(tmp_path))  # keeps Matplotlib's font cache between processes
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "sweep.run", str(path), "--no-report"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for p in procs:
        _, err = p.communicate(timeout=240)
        assert p.returncode == 0, err
    study, client, _, runs = load(tmp_path, "workers")
    finished = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) >= 4
    assert_agree(study, client, runs)


def test_alternating_study_end_to_end(tmp_path: Path) -> None:
    """The shipped alternating study (shortened) runs; MLflow has both models' LRs and all losses per epoch."""
    from tests.conftest import ROOT

    doc = yaml.safe_load((ROOT / "studies" / "alternating.yaml").read_text())
    doc["study"].update({"n_trials": 3, "sampler": {"type": "random"}})
    doc["objective"].update({"epochs": 2, "problem": {"name": "digits_codes", "options": {"n_train": 120}}})
    path = write_yaml(tmp_path / "alternating.yaml", doc)
    result = run_main("sweep.run", str(path), "--no-report", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    study, client, _, runs = load(tmp_path, "alternating")
    assert len(study.trials) == 3
    assert_agree(study, client, runs)
    for trial in study.trials:
        run_id = trial.user_attrs["mlflow_run_id"]
        for key in ("lr_a", "lr_b", "train_a_loss", "train_b_loss", "val_a_loss", "val_b_loss", "weight_consistency"):
            assert [m.step for m in client.get_metric_history(run_id, key)] == [0, 1], key
        lr_a = client.get_metric_history(run_id, "lr_a")[0].value
        assert lr_a == pytest.approx(trial.params["model_a.optimizer.lr"])
        assert ("steps_a" in trial.params) == (trial.params["mode"] == "alternate")


def test_weighting_compare_study_end_to_end(tmp_path: Path) -> None:
    """The shipped strategy comparison (shortened) runs: one sub-study per strategy, each agreeing with
    MLflow trial by trial (strategy and effective weights on every run), then the evaluation table."""
    from tests.conftest import ROOT

    doc = yaml.safe_load((ROOT / "studies" / "weighting_compare.yaml").read_text())
    doc["study"].update({"n_trials": 2, "sampler": {"type": "random"}})
    doc["objective"].update({"epochs": 2, "problem": {"name": "digits_pair", "options": {"n_a": 200, "n_b": 30}}})
    choices = ["static", "gradnorm", "pcgrad", "famo"]
    doc["search"]["params"]["weighting.type"]["choices"] = choices
    for name, spec in list(doc["search"]["params"].items()):  # options of the methods left out go with them
        wanted = (spec.get("when") or {}).get("weighting.type")
        if wanted is not None:
            kept = [w for w in ([wanted] if isinstance(wanted, str) else wanted) if w in choices]
            if kept:
                spec["when"]["weighting.type"] = kept
            else:
                del doc["search"]["params"][name]
    doc["search"]["weights"]["when"] = {"weighting.type": ["static"]}
    doc["evaluate"] = {"seeds": 2}
    path = write_yaml(tmp_path / "wc.yaml", doc)
    result = run_main("sweep.run", str(path), "--no-report", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("weighting_compare")
    every = client.search_runs([exp.experiment_id], max_results=1000)
    for choice in choices:
        study = optuna.load_study(
            study_name=f"weighting_compare.{choice}", storage=f"sqlite:///{tmp_path / '.sweep' / 'optuna.db'}"
        )
        parent = study.user_attrs["mlflow_parent_run_id"]
        runs = [r for r in every if r.info.run_id == parent or (
            r.data.tags.get("mlflow.parentRunId") == parent and r.data.tags.get("sweep.role") == "trial")]  # fmt: skip
        assert_agree(study, client, runs)
        for trial in study.trials:
            run = client.get_run(trial.user_attrs["mlflow_run_id"])
            assert run.data.params["weighting.type"] == trial.params["weighting.type"] == choice
            history = client.get_metric_history(run.info.run_id, "weight_a")
            assert [m.step for m in history] == [0, 1]
            uses_static = trial.params["weighting.type"] == "static"
            assert ("weights.log10_ratio" in trial.params) == uses_static
    assert [line.split(" | ")[0] for line in result.stdout.splitlines() if line.startswith("| ") and "±" in line] == [
        f"| {c}" for c in choices
    ]
