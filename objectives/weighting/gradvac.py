"""``gradvac``: gradient vaccine, Wang et al. (2021), "Gradient Vaccine: Investigating and Improving
Multi-task Optimization in Massively Multilingual Models" (ICLR).

On the shared parameters (those every loss reaches: :mod:`objectives.weighting.jacobian`), with the
weighted task gradients g_i = ∇(w_i L_i), each g_i is corrected, against the other tasks in a random
order, towards an adaptive target similarity φ̂_ij: with φ_ij = cos(g_i, g_j) (g_i as corrected so far),
where φ_ij < φ̂_ij, g_i ← g_i + ‖g_i‖ (φ̂_ij √(1 − φ_ij²) − φ_ij √(1 − φ̂_ij²)) / (‖g_j‖ √(1 − φ̂_ij²)) g_j;
then φ̂_ij ← (1 − β) φ̂_ij + β φ_ij (an EMA, starting at 0). The shared parameters step with Σ_i g_i;
each task's own head keeps its own ∇(w_i L_i). The maths is torchjd's ``GradVac`` (written on the Gramian,
``eps`` added to the denominators), on the whole shared block (the paper's/LibMTL's "whole_model"
grouping), with torchjd's and LibMTL's β = 0.5 by default. Effective weights are w_i times the row
weights of the corrected sum (Σ_i g_i = Σ_j c_j g_j).

State: φ̂ is kept per parameter set the loop steps (the alternating loop's A and B steps have different
active losses), each from zeros, for the strategy's life (one trial). Randomness: torchjd draws the
orders with the global ``torch.randperm``; here under :func:`~objectives.weighting.jacobian.seeded_rng`
from the strategy's own generator (deterministic per trial seed, the global RNG untouched).

Cost per step: one vectorized backward pass (the Jacobian), the m×m Gramian and an m(m − 1) loop on the
CPU; one host sync per step on a GPU (torchjd moves the Gramian to the CPU and branches on φ < φ̂).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch
from pydantic import Field

from objectives.frozen import Frozen
from objectives.weighting.jacobian import PerReach, seeded_rng

if TYPE_CHECKING:
    pass


class Config(Frozen):
    type: Literal["gradvac"] = Field("gradvac", description="selects `gradvac`: gradient vaccine")
    beta: float = Field(0.5, ge=0, le=1, description="EMA rate of the target similarities φ̂ (weight of the new φ)")
    eps: float = Field(1e-8, ge=0, le=1, description="added to the denominators of the cosine and the correction")


class GradVacStrategy(PerReach):
    def __init__(self, cfg: Config, n_losses: int, device: torch.device, seed: int) -> None:
        from torchjd.aggregation import GradVac  # lazily: torchjd imports cvxpy, when installed (~1 s)

        super().__init__(lambda m: GradVac(beta=cfg.beta, eps=cfg.eps), n_losses)
        self.generator = torch.Generator().manual_seed(seed)

    def combine(self, matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        with seeded_rng(self.generator, torch.device("cpu")):  # torchjd shuffles on the CPU
            return super().combine(matrix)


build = GradVacStrategy
