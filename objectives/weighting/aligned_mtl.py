"""``aligned_mtl``: aligned multi-task learning, Senushkin et al. (2023), "Independent Component Alignment
for Multi-Task Learning" (CVPR).

On the shared parameters (those every loss reaches: :mod:`objectives.weighting.jacobian`), with the
weighted task gradients g_i = ∇(w_i L_i) stacked in J and the Gramian M = J Jᵀ = V Λ Vᵀ, the paper's
Algorithm 1 aligns the gradients by the balance transformation B = √λ_min V Λ^{-1/2} Vᵀ (the rows J
become B J: orthogonal, all of norm σ_min = √λ_min, the condition number of the system is 1) and the
shared parameters step with their mean, d = (1/m) 1ᵀ B J. Each task's own head keeps its own ∇(w_i L_i).
The maths is torchjd's ``AlignedMTL`` (adapted from the authors' code) with its default preference
vector (the mean); eigenvalues below λ_max · m · eps count as zero (a rank-deficient J uses the
non-zero ones). ``scale_mode`` picks the scale √λ of B: the smallest eigenvalue (the paper's
Algorithm), the median, or the mean ("rmse", the authors' code). Effective weights are w_i (B 1/m)_i.

Cost per step: one vectorized backward pass (the Jacobian), the m×m Gramian and its eigendecomposition;
one host sync per step on a GPU (torchjd's data-dependent rank).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from objectives.frozen import Frozen
from objectives.weighting.jacobian import Aggregating


class Config(Frozen):
    type: Literal["aligned_mtl"] = Field("aligned_mtl", description="selects `aligned_mtl`: aligned gradients")
    scale_mode: Literal["min", "median", "rmse"] = Field(
        "min", description="eigenvalue that scales the aligned gradients: smallest (paper), median or mean (rmse)"
    )


class AlignedMTLStrategy(Aggregating):
    def __init__(self, cfg: Config, n_losses: int, device: torch.device, seed: int) -> None:
        from torchjd.aggregation import AlignedMTL  # lazily: torchjd imports cvxpy, when installed (~1 s)

        super().__init__(AlignedMTL(scale_mode=cfg.scale_mode))


build = AlignedMTLStrategy
