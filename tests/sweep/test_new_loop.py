"""A new loop is one file plus one registry line: a loop defined in this test module, registered in
:data:`objectives.loops.LOOPS` (nothing else edited), is validated, searched, run, tracked, summarised
and exported like the built-in loops."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import mlflow
import optuna
import pytest
import yaml

from objectives import dual_loss
from objectives.config import DualLossConfig
from objectives.helpers import Checkpoint, Reporter
from objectives.loops import LOOPS, Loop
from objectives.problems import Problem
from sweep.core.errors import ConfigError
from sweep.studyfile.config import parse_study
from tests.conftest import run_main, tiny_study, write_yaml


class HalvedConfig(DualLossConfig):
    """The throwaway loop's config: the dual-loss settings plus its own option and loss names."""

    loop: Literal["halved"] = "halved"  # type: ignore[assignment]
    factor: float = 0.5


def train(
    cfg: HalvedConfig,
    report: Reporter | None = None,
    problem: Problem | None = None,
    checkpoint: Checkpoint | None = None,
) -> dict[str, float]:
    """Dual-loss training that also logs each validation loss scaled by ``factor``."""

    def scaled(epoch: int, metrics: Mapping[str, float]) -> None:
        if report is not None:
            report(epoch, {**metrics, "val_scaled_loss": cfg.factor * metrics["val_total_loss"]})

    last = dual_loss.train(cfg, scaled, problem=problem, checkpoint=checkpoint)
    return {**last, "val_scaled_loss": cfg.factor * last["val_total_loss"]}


def logged_metrics(task_metrics: Mapping[str, tuple[str, ...]], n_losses: int) -> tuple[str, ...]:
    return (*dual_loss.logged_metrics(task_metrics, n_losses), "val_scaled_loss")


@pytest.fixture
def halved(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(
        LOOPS, "halved", Loop("halved", train, HalvedConfig, Problem, logged_metrics, dual_loss.test_metrics)
    )


def _study(name: str) -> dict:
    doc = tiny_study(name, study={"metric": "val_scaled_loss", "n_trials": 2})
    doc["objective"] = {**doc["objective"], "loop": "halved", "factor": 0.25}
    doc["search"]["params"]["factor"] = {"type": "float", "low": 0.1, "high": 0.9}
    return doc


def test_an_unregistered_loop_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"objective\.loop: unknown value 'halved'"):
        parse_study(_study("nope"), "x.yaml")


@pytest.mark.usefixtures("halved")
def test_a_registered_loop_is_searched_run_tracked_and_exported(tmp_path: Path) -> None:
    sf = parse_study(_study("halved"), "x.yaml")
    assert isinstance(sf.objective, HalvedConfig) and sf.objective.factor == 0.25
    with pytest.raises(ConfigError, match="unknown metric 'val_nope_loss'"):  # its record says what it logs
        parse_study({**_study("h"), "study": {"name": "h", "metric": "val_nope_loss"}}, "x.yaml")

    path = write_yaml(tmp_path / "halved.yaml", _study("halved"))
    done = run_main("sweep.run", str(path), "--no-progress", "--no-report", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "loss weights: a = " in done.stdout  # the summary names the weights by the record's losses

    study = optuna.load_study(study_name="halved", storage=f"sqlite:///{tmp_path / '.sweep/optuna.db'}")
    complete = study.get_trials(states=[optuna.trial.TrialState.COMPLETE])
    assert len(complete) == 2
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    for trial in complete:
        assert trial.user_attrs["config"]["loop"] == "halved"
        assert trial.user_attrs["config"]["factor"] == pytest.approx(trial.params["factor"])
        run = client.get_run(trial.user_attrs["mlflow_run_id"])
        assert run.info.status == "FINISHED"
        assert run.data.metrics["val_scaled_loss"] == pytest.approx(trial.value)

    exported = run_main("sweep.export", str(path), "-o", "best.yaml", cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    replay = yaml.safe_load((tmp_path / "best.yaml").read_text())
    assert replay["objective"]["loop"] == "halved"
    again = run_main("sweep.run", "best.yaml", "--no-progress", "--no-report", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    best = optuna.load_study(study_name="halved-trial" + str(study.best_trial.number), storage=study._storage)
    assert best.best_value == pytest.approx(study.best_value, rel=1e-6)


@pytest.mark.usefixtures("halved")
def test_a_registered_loop_without_a_vectorized_form_runs_with_parallel_trials(tmp_path: Path) -> None:
    """``parallel_trials: 4``: the loop's record has no ``train_group``, so the four trials train one after
    another with one note, and all complete (they used to fail with a KeyError each)."""
    doc = _study("halved4")
    doc["study"] = {**doc["study"], "n_trials": 4, "parallel_trials": 4}
    del doc["search"]["params"]["factor"]  # what members may differ in only: one group of four
    path = write_yaml(tmp_path / "halved4.yaml", doc)
    done = run_main("sweep.run", str(path), "--no-progress", "--no-report", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "train one after another: loop halved has no vectorized form" in done.stderr
    study = optuna.load_study(study_name="halved4", storage=f"sqlite:///{tmp_path / '.sweep/optuna.db'}")
    assert len(study.get_trials(states=[optuna.trial.TrialState.COMPLETE])) == 4
