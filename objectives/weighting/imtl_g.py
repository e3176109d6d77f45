"""``imtl_g``: impartial multi-task learning, gradient half, Liu et al. (2021), "Towards Impartial
Multi-task Learning" (ICLR).

The shared parameters (those every loss reaches: :mod:`objectives.weighting.jacobian`) step with
d = Σ_i α_i g_i, g_i = ∇(w_i L_i), where Σ_i α_i = 1 and d has the same projection on every unit task
gradient u_i = g_i / ‖g_i‖ (paper: α_{2:} = g_1 Uᵀ (D Uᵀ)⁻¹, α_1 = 1 − Σ α_{2:}, D and U the rows
g_1 − g_i and u_1 − u_i). Each task's own head keeps its own ∇(w_i L_i). The maths is torchjd's
``IMTLG``: the same α written on the Gramian G = J Jᵀ, α ∝ G⁺ (‖g_1‖, …, ‖g_m‖) normalised to sum to 1
(a pseudo-inverse, so linearly dependent rows work; zero weights when that sum is 0). The paper's loss
half (IMTL-L, learned loss scales) is not included, and the gradients are those of the shared
parameters, not of the shared features (the paper's cheaper variant). Effective weights are w_i α_i
(α_i may be negative).

Cost per step: one vectorized backward pass (the Jacobian), the m×m Gramian and its pseudo-inverse;
one host sync per step on a GPU (torchjd's branch on Σ α).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from objectives.frozen import Frozen
from objectives.weighting.jacobian import Aggregating


class Config(Frozen):
    type: Literal["imtl_g"] = Field("imtl_g", description="selects `imtl_g`: impartial multi-task learning (gradients)")


class IMTLGStrategy(Aggregating):
    def __init__(self, cfg: Config, n_losses: int, device: torch.device, seed: int) -> None:
        from torchjd.aggregation import IMTLG  # lazily: torchjd imports cvxpy, when installed (~1 s)

        super().__init__(IMTLG())


build = IMTLGStrategy
