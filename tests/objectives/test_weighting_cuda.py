"""Every weighting strategy and three named tasks on a GPU: the same training as on the CPU, to float32
round-off (a strategy whose state or RNG lived on the wrong device, or that read a CPU tensor where the
Jacobian is on the GPU, fails here). The comparison also runs on the CPU against itself, so its configs
are exercised on machines without a GPU."""

from __future__ import annotations

import math

import pytest
import torch

from objectives.config import DualLossConfig
from objectives.dual_loss import train
from objectives.weighting import STRATEGIES

SMALL = {"n_digit": 48, "n_value": 64, "n_parity": 24, "hidden": 8}
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device: the strategies and N tasks on the GPU"))]  # fmt: skip


def _run(strategy: str, device: str) -> list[dict[str, float]]:
    cfg = DualLossConfig(
        problem={"name": "digits_three", "options": SMALL}, tasks=["digit", "value", "parity"], seed=0,
        data_seed=0, device=device, epochs=3, batch_size=16, weighting={"type": strategy},
        optimizer={"type": "sgd", "lr": 0.05, "momentum": 0.0},
    )  # fmt: skip
    epochs: list[dict[str, float]] = []
    train(cfg, lambda epoch, metrics: epochs.append(dict(metrics)))
    return epochs


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_a_strategy_trains_three_tasks_on_the_device_as_on_the_cpu(strategy: str, device: str) -> None:
    on_device, on_cpu = _run(strategy, device), _run(strategy, "cpu")
    assert len(on_device) == len(on_cpu) == 3
    for got, want in zip(on_device, on_cpu, strict=True):
        assert all(math.isfinite(v) for v in got.values())
        assert all(got[f"weight_{t}"] >= 0 for t in ("digit", "value", "parity"))
        for key in want.keys() - {"peak_memory_mb"}:
            # float32 on both; a GPU sums in another order, and methods with a solver (cvxpy, scipy) amplify it
            assert math.isclose(got[key], want[key], rel_tol=2e-3, abs_tol=1e-4), (key, got[key], want[key])
