"""``excess_mtl``: robust multi-task learning with excess risks, He et al. (2024), "Robust Multi-Task
Learning with Excess Risks" (ICML).

On the shared parameters (those every loss reaches: :mod:`objectives.weighting.jacobian`), with the
weighted task gradients g_i = ∇(w_i L_i), each task's excess risk is estimated by a second-order Taylor
expansion with an AdaGrad diagonal Hessian (Equations 6–7): S_i ← S_i + g_i², Ê_i = Σ g_i² / √(S_i + 1e-7);
divided by the first step's Ê_i (scale processing, Section 3.2), it drives an exponentiated-gradient
step on the task weights (Equation 9), α_i ← α_i exp(η Ê_i) / Σ_j α_j exp(η Ê_j), from α = 1/m, and
the shared parameters step with Σ_i α_i g_i. Each task's own head keeps its own ∇(w_i L_i). The maths is
torchjd's ``ExcessMTL`` (adapted from the authors' code and LibMTL, which start from α = 1 rather than
the paper's 1/m): ``robust_step_size`` is η; with ``n_warmup_steps`` > 0 the first steps keep α = 1/m and
the baseline Ê is their mean (Appendix C.1), with 0 the first step's. Effective weights are w_i α_i.

State: S (one float per shared parameter and task), α and the baseline are kept per parameter set the
loop steps (the alternating loop's A and B steps differ), for the strategy's life (one trial).

Cost per step: one vectorized backward pass (the Jacobian) and a few element-wise passes over it (no host
sync); memory: S, the size of the Jacobian's shared block.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from objectives.frozen import Frozen
from objectives.weighting.jacobian import PerReach


class Config(Frozen):
    type: Literal["excess_mtl"] = Field("excess_mtl", description="selects `excess_mtl`: excess-risk weighting")
    robust_step_size: float = Field(
        1.0, gt=0, le=100, description="step size η of the exponentiated-gradient update of the task weights"
    )
    n_warmup_steps: int = Field(
        0, ge=0, le=1_000_000, description="steps with uniform weights whose mean excess risk is the baseline"
    )


class ExcessMTLStrategy(PerReach):
    def __init__(self, cfg: Config, n_losses: int, device: torch.device, seed: int) -> None:
        from torchjd.aggregation import ExcessMTL  # lazily: torchjd imports cvxpy, when installed (~1 s)

        super().__init__(lambda m: ExcessMTL(cfg.robust_step_size, cfg.n_warmup_steps), n_losses)


build = ExcessMTLStrategy
