"""``cosine``: cosine annealing from the LR to ``min_lr_ratio``·LR over training.

``CosineAnnealingLR`` when the floor is 0; with a floor, ``LambdaLR`` with the same closed form
m(t) = r + (1 − r)(1 + cos(π t / T)) / 2, so that every parameter group anneals to its own floor
(``CosineAnnealingLR`` takes one absolute ``eta_min`` for all groups).
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import torch
from pydantic import Field

from objectives.frozen import Frozen

PER = "step"


class Config(Frozen):
    type: Literal["cosine"] = Field("cosine", description="selects `cosine` (`CosineAnnealingLR`)")
    min_lr_ratio: Annotated[
        float, Field(ge=0, le=1, description="the LR's floor, as a fraction of the optimizer's LR")
    ] = 0.0


def anneal(optimizer: torch.optim.Optimizer, steps: int, min_lr_ratio: float) -> torch.optim.lr_scheduler.LRScheduler:
    """Cosine from each group's LR to ``min_lr_ratio`` times it over ``steps`` (also warm-up's decay)."""
    steps = max(1, steps)
    if min_lr_ratio == 0.0:
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps, eta_min=0.0)
    r = min_lr_ratio
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda t: r + (1.0 - r) * (1.0 + math.cos(math.pi * min(t, steps) / steps)) / 2.0
    )


def build(optimizer: torch.optim.Optimizer, cfg: Config, total_steps: int, steps_per_epoch: int) -> object:
    return anneal(optimizer, total_steps, cfg.min_lr_ratio)
