"""``uncertainty``: homoscedastic-uncertainty weighting, Kendall, Gal & Cipolla (2018), "Multi-Task
Learning Using Uncertainty to Weigh Losses for Scene Geometry and Semantics" (CVPR).

Learns s_i = log σ_i² per loss and minimises L = Σ_i [w_i L_i / (2 e^{s_i}) + s_i / 2] (the form
LibMTL uses), so the effective weight of loss i is w_i / (2 e^{s_i}). The s_i join the model's
optimizer (:meth:`parameters`); losses with a zero static weight get no s_i term.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from pydantic import Field

from objectives.frozen import Frozen
from objectives.weighting.base import Weighting, weighted_backward


class Config(Frozen):
    type: Literal["uncertainty"] = Field(
        "uncertainty", description="selects `uncertainty`: homoscedastic-uncertainty weighting"
    )
    init_log_var: float = Field(0.0, description="the initial learned s_i = log σ_i² of every loss")


class Uncertainty(Weighting):
    weights_before_step = False  # the weights alone are not the step: backward also trains s (the s_i/2 term)

    def __init__(self, cfg: Config, n_losses: int, device: torch.device, seed: int) -> None:
        self.log_var = torch.nn.Parameter(torch.full((n_losses,), cfg.init_log_var, device=device))

    def parameters(self) -> list[torch.nn.Parameter]:
        return [self.log_var]

    def weights(self, losses: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        return base / (2.0 * torch.exp(self.log_var))

    def backward(self, losses: torch.Tensor, base: torch.Tensor, params: Sequence[torch.Tensor]) -> torch.Tensor:
        active = (base > 0).to(losses.dtype)
        return weighted_backward(self.weights(losses, base), losses, (active * self.log_var).sum() / 2.0)


build = Uncertainty
