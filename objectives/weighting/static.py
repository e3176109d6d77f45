"""``static``: the (tuned, possibly scheduled) weights as they are — the baseline the others are compared with."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from objectives.frozen import Frozen
from objectives.weighting.base import Weighting


class Config(Frozen):
    type: Literal["static"] = Field("static", description="selects `static`: the weights as given")


class Static(Weighting):
    """L = Σ w_i L_i with the configured weights."""

    def __init__(self, cfg: Config, n_losses: int, device: torch.device, seed: int) -> None:
        pass

    def weights(self, losses: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        return base


build = Static
