"""``fairgrad``: α-fair resource allocation, Ban & Ji (2024), "Fair Resource Allocation in Multi-Task
Learning" (ICML).

On the shared parameters (those every loss reaches: :mod:`objectives.weighting.jacobian`), with the
weighted task gradients g_i = ∇(w_i L_i) stacked in J and the Gramian G = J Jᵀ, the step is
d = Σ_i w'_i g_i with w' > 0 the solution of the paper's Equation 4, G w' = w'^(−1/α) (element-wise),
the optimality condition of maximising Σ_i (g_iᵀ d)^(1−α) / (1−α): α = 0 is the plain mean (w' = 1/m),
α = 1 proportional fairness, α → ∞ max-min fairness. Each task's own head keeps its own ∇(w_i L_i).
The maths is torchjd's ``FairGrad`` (adapted from the authors' code): scipy's ``least_squares`` on
G w' − w'^(−1/α) from w' = 1/m with w' ≥ 0, at most ``max_iters`` function evaluations (scipy's
default 100 m when unset); an iterative solve, so w' is approximate (scipy's default tolerances).
Effective weights are w_i w'_i.

Cost per step: one vectorized backward pass (the Jacobian), the m×m Gramian and one small scipy solve on
the CPU (one host sync per step on a GPU; about a millisecond).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from objectives.frozen import Frozen
from objectives.weighting.jacobian import Aggregating


class Config(Frozen):
    type: Literal["fairgrad"] = Field("fairgrad", description="selects `fairgrad`: α-fair allocation of the step")
    alpha: float = Field(
        1.0, ge=0, le=100, description="fairness α: 0 the mean, 1 proportional fairness, large α max-min fairness"
    )
    max_iters: int | None = Field(
        None, ge=1, le=100_000, description="most evaluations of scipy's least_squares (unset: 100 × tasks)"
    )


class FairGradStrategy(Aggregating):
    def __init__(self, cfg: Config, n_losses: int, device: torch.device, seed: int) -> None:
        from torchjd.aggregation import FairGrad  # lazily: torchjd imports cvxpy, when installed (~1 s)

        super().__init__(FairGrad(alpha=cfg.alpha, max_iters=cfg.max_iters))


build = FairGradStrategy
