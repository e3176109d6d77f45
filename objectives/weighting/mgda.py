"""``mgda``: the multiple-gradient descent algorithm, Sener & Koltun (2018), "Multi-Task Learning as
Multi-Objective Optimization" (NeurIPS).

The shared parameters (those every loss reaches: :mod:`objectives.weighting.jacobian`) step along the
min-norm point of the convex hull of the weighted task gradients g_i = ∇(w_i L_i):
d = Σ_i α_i g_i with α = argmin_{α ∈ Δ} ‖Σ_i α_i g_i‖²; each task's own head keeps its own ∇(w_i L_i).
The maths is torchjd's ``MGDA`` (the paper's Algorithm 2, Frank-Wolfe on the Gramian G = J Jᵀ, stopped
when the step size γ falls below ``epsilon`` or after ``max_iters`` iterations), used as it is. The
paper's optional gradient normalisation (l2/loss/loss+) is not applied: the static weights w_i already
scale each row. Effective weights are w_i α_i (they sum to 1 after dividing by w_i).

Cost per step: one vectorized backward pass (the Jacobian), the m×m Gramian and up to ``max_iters``
Frank-Wolfe iterations; each iteration branches on the Gramian in Python (host syncs per step on a GPU).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from objectives.frozen import Frozen
from objectives.weighting.jacobian import Aggregating


class Config(Frozen):
    type: Literal["mgda"] = Field("mgda", description="selects `mgda`: the min-norm point of the task gradients")
    epsilon: float = Field(
        0.001, gt=0, le=1, description="Frank-Wolfe stops once its step size γ falls below this (torchjd's default)"
    )
    max_iters: int = Field(100, ge=1, le=100_000, description="most Frank-Wolfe iterations per step")


class MGDAStrategy(Aggregating):
    def __init__(self, cfg: Config, n_losses: int, device: torch.device, seed: int) -> None:
        from torchjd.aggregation import MGDA  # lazily: torchjd imports cvxpy, when installed (~1 s)

        super().__init__(MGDA(epsilon=cfg.epsilon, max_iters=cfg.max_iters))


build = MGDAStrategy
