"""``dwa``: Dynamic Weight Average, Liu, Johns & Davison (2019), "End-to-End Multi-Task Learning with
Attention" (CVPR).

From the ratio of each loss's mean over the last two epochs, r_i = L_i(t−1) / L_i(t−2), the weights
of epoch t are λ_i = K exp(r_i / T) / Σ_j exp(r_j / T) (K losses, temperature T), and 1 for the first
two epochs; a loss that falls more slowly gets more weight. Here λ multiplies the static weights
(equal ratios leave them unchanged).
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from pydantic import Field

from objectives.frozen import Frozen
from objectives.weighting.base import Weighting


class Config(Frozen):
    type: Literal["dwa"] = Field("dwa", description="selects `dwa`: Dynamic Weight Average")
    temperature: Annotated[float, Field(gt=0, description="T in λ_i = K softmax(r_i/T)")] = 2.0


class DWA(Weighting):
    def __init__(self, cfg: Config, n_losses: int, device: torch.device, seed: int) -> None:
        self.temperature = cfg.temperature
        self.history: list[torch.Tensor] = []  # the last two epochs' mean losses (device tensors)
        self.lam = torch.ones(n_losses, device=device)

    def weights(self, losses: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        return base * self.lam

    def end_epoch(self, mean_losses: torch.Tensor) -> None:
        self.history = [*self.history, mean_losses.detach()][-2:]
        if len(self.history) == 2:
            ratio = self.history[1] / self.history[0].clamp_min(1e-12)
            self.lam = len(ratio) * torch.softmax(ratio / self.temperature, dim=0)


build = DWA
