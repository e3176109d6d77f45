"""The vectorized loops on a GPU: each member equals its standalone run there too (float32 round-off)."""

from __future__ import annotations

import math

import pytest
import torch

from objectives.alternating import train as train_alternating
from objectives.batched import train_group
from objectives.config import AlternatingConfig, DualLossConfig
from objectives.dual_loss import train as train_dual
from objectives.problems import CoupledProblem, Problem, build_problem

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device: the vectorized loops on the GPU"
)


def close(a: dict[str, float], b: dict[str, float]) -> None:
    for key in a:
        if key != "peak_memory_mb":
            assert math.isclose(a[key], b[key], rel_tol=1e-4, abs_tol=1e-5), (key, a[key], b[key])


def test_dual_loss_members_on_cuda() -> None:
    options = {"n_a": 200, "n_b": 40, "n_val": 100, "hidden": 16}
    p = build_problem("digits_pair", options, 0, "dual_loss", Problem).to("cuda")
    cs = [
        DualLossConfig(
            problem={"name": "digits_pair", "options": options},
            seed=i,
            data_seed=0,
            device="cuda",
            epochs=3,
            batch_size=32,
            weights=(0.2 + 0.3 * i, 0.5),
            optimizer={"type": "adamw", "lr": 0.003 * (i + 1), "weight_decay": 0.01},
            grad_clip=(None, 1.0, 0.2)[i],
        )
        for i in range(3)
    ]
    results = train_group(cs, [None] * 3, problem=p)
    for c, r in zip(cs, results, strict=True):
        close(train_dual(c, problem=p), r)


def test_alternating_members_on_cuda() -> None:
    options = {"n_train": 120, "code_dim": 4, "hidden": 8}
    p = build_problem("digits_codes", options, 0, "alternating", CoupledProblem).to("cuda")
    cs = [
        AlternatingConfig(
            problem={"name": "digits_codes", "options": options},
            seed=i,
            data_seed=0,
            device="cuda",
            epochs=3,
            batch_size=32,
            mode=mode,
            model_a={"optimizer": {"type": "sgd", "lr": 0.05 * (i + 1)}},
        )
        for i, mode in enumerate(["alternate", "alternate", "alternate"])
    ]
    results = train_group(cs, [None] * 3, problem=p)
    for c, r in zip(cs, results, strict=True):
        close(train_alternating(c, problem=p), r)
