"""``gls``: geometric loss strategy, Chennupati et al. (2019), "MultiNet++: Multi-Stream Feature Aggregation
and Geometric Loss Strategy for Multi-Task Learning" (CVPR Workshops).

Trains on the geometric mean of the losses instead of their sum. The static weights enter as the
exponents of a weighted geometric mean, G = Π_i L_i^{w_i / Σw} = exp(Σ_i w_i log L_i / Σ_i w_i) (equal
weights: the paper's (Π_i L_i)^{1/k}); G does not change when all w_i scale alike, and a zero w_i drops
the loss. The effective weight of loss i is ∂G/∂L_i = G w_i / (Σw L_i): a loss that is small relative
to the others gets a larger weight, which balances the tasks' loss scales. The losses must be
positive (log L_i); a zero loss gives G = 0 and no finite weights.

The maths is the one-line formula, written here rather than torchjd's ``GeometricMean`` (equal weights
only), whose ``(values < 0).any()`` check costs a host sync every step; the tests pin it against
``GeometricMean`` at equal weights.

Cost per step: nothing measurable (k logarithms and one exponential); no host sync.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from pydantic import Field

from objectives.frozen import Frozen
from objectives.weighting.base import Weighting


class Config(Frozen):
    type: Literal["gls"] = Field("gls", description="selects `gls`: the (weighted) geometric mean of the losses")


def geometric_mean(losses: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """exp(Σ_i w_i log L_i / Σ_i w_i), with the graph of ``losses`` (all-zero weights give 1)."""
    total = base.sum().clamp_min(torch.finfo(base.dtype).tiny)
    return torch.exp((base * torch.log(losses)).sum() / total)


class GLS(Weighting):
    weights_from_losses = True  # the weights are functions of the step's loss values
    weights_before_step = False  # the weights G w_i / (Σw L_i) depend on the step's losses

    def __init__(self, cfg: Config, n_losses: int, device: torch.device, seed: int) -> None:
        pass

    def weights(self, losses: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        losses = losses.detach()
        total = base.sum().clamp_min(torch.finfo(base.dtype).tiny)
        return geometric_mean(losses, base) * base / (total * losses)

    def backward(self, losses: torch.Tensor, base: torch.Tensor, params: Sequence[torch.Tensor]) -> torch.Tensor:
        geometric_mean(losses, base).backward()
        return self.weights(losses, base)


build = GLS
