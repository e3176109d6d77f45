"""``rlw``: Random Loss Weighting, Lin et al. (2021), "Reasonable Effectiveness of Random Weighting:
A Litmus Test for Multi-Task Learning" (TMLR 2022).

Every step draws λ = softmax(z), z ~ N(0, I), and trains on Σ_i K λ_i w_i L_i (K losses, so equal
draws leave the static weights unchanged). Draws come from the strategy's own seeded generator on
the loop's device: deterministic per seed, no host sync.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from objectives.frozen import Frozen
from objectives.weighting.base import Weighting


class Config(Frozen):
    type: Literal["rlw"] = Field("rlw", description="selects `rlw`: random loss weighting")


class RLW(Weighting):
    def __init__(self, cfg: Config, n_losses: int, device: torch.device, seed: int) -> None:
        self.n = n_losses
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.device = device

    def weights(self, losses: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        z = torch.randn(self.n, generator=self.generator, device=self.device)
        return base * self.n * torch.softmax(z, dim=0)


build = RLW
