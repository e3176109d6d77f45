"""Every weighting strategy, LR schedule and loss-weight schedule trains in both loops (shared suite)."""

from __future__ import annotations

import math

import pytest
import torch

from objectives import alternating, dual_loss
from objectives.config import AlternatingConfig, DualLossConfig
from objectives.lr_schedules import SCHEDULES
from objectives.problems import build_problem
from objectives.weight_schedules import WEIGHT_SCHEDULES
from objectives.weighting import STRATEGIES

DUAL = build_problem("digits_pair", {"n_a": 96, "n_b": 32, "n_val": 64, "hidden": 8}, 0)
COUPLED = build_problem("digits_codes", {"n_train": 96, "code_dim": 4, "hidden": 8}, 0, "alternating")


def _dual(**overrides: object) -> dict[str, float]:
    cfg = DualLossConfig(problem="digits_pair", seed=0, data_seed=0, device="cpu", epochs=3, batch_size=32, **overrides)
    return dual_loss.train(cfg, None, problem=DUAL)


def _alternating(mode: str, **overrides: object) -> dict[str, float]:
    cfg = AlternatingConfig(
        problem="digits_codes",
        mode=mode,
        steps_b=2,
        seed=0,
        data_seed=0,
        device="cpu",
        epochs=3,
        batch_size=32,
        weights=(0.4, 0.4, 0.2),
        **overrides,
    )
    return alternating.train(cfg, None, problem=COUPLED)


def _finite(metrics: dict[str, float]) -> bool:
    return all(math.isfinite(v) for v in metrics.values())


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_strategy_in_dual_loop(strategy: str) -> None:
    """The dual-loss loop trains with the strategy and logs its effective weights."""
    m = _dual(weighting={"type": strategy})
    assert _finite(m) and m["weight_a"] > 0 and m["weight_b"] > 0


@pytest.mark.parametrize("mode", ["alternate", "b_on_detached", "joint"])
@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_strategy_in_alternating_loop(strategy: str, mode: str) -> None:
    """The alternating loop trains with the strategy in every mode, three losses included."""
    m = _alternating(mode, weighting={"type": strategy})
    assert _finite(m) and m["weight_consistency"] >= 0


@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
def test_lr_schedule_in_both_loops(schedule: str) -> None:
    """Each LR schedule drives the dual optimizer and both alternating optimizers."""
    assert _finite(_dual(optimizer={"type": "sgd", "lr": 0.05, "schedule": {"type": schedule}}))
    opt = {"lr": 0.01, "schedule": {"type": schedule}}
    assert _finite(_alternating("alternate", model_a={"optimizer": opt}, model_b={"optimizer": opt}))


@pytest.mark.parametrize("schedule", sorted(WEIGHT_SCHEDULES))
def test_weight_schedule_in_both_loops(schedule: str) -> None:
    """Each loss-weight schedule moves its target's logged weight in both loops (static weighting)."""
    m = _dual(weight_schedule={"type": schedule, "target": "b"})
    assert _finite(m) and m["weight_a"] == pytest.approx(0.5)
    m = _alternating("joint", weight_schedule={"type": schedule, "target": "consistency"})
    assert _finite(m) and m["weight_b"] == pytest.approx(0.4)
    assert 0.0 <= m["weight_consistency"] <= 0.2 + 1e-6


def test_uncertainty_parameters_are_trained() -> None:
    """Uncertainty's log-variances join the optimizer: the logged weights move away from w/2."""
    torch.manual_seed(0)
    m = _dual(weighting={"type": "uncertainty"}, optimizer={"type": "adam", "lr": 0.05})
    assert m["weight_a"] != pytest.approx(0.25, abs=1e-4)


def test_objectives_import_neither_optuna_nor_mlflow() -> None:
    """Every module of objectives/ imports in a fresh interpreter without pulling in optuna or mlflow
    (the loops take a resolved config and a reporter; sweep/ binds them)."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    code = (
        "import importlib, pkgutil, sys, objectives\n"
        "names = [m.name for m in pkgutil.walk_packages(objectives.__path__, 'objectives.')]\n"
        "[importlib.import_module(n) for n in names]\n"
        "print(len(names), sorted({m.split('.')[0] for m in sys.modules} & {'optuna', 'mlflow'}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    count, leaked = done.stdout.strip().split(" ", 1)
    assert int(count) > 30 and leaked == "[]"
