"""``exponential``: multiply the LR by ``gamma`` per epoch, applied smoothly per step (``ExponentialLR``)."""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from pydantic import Field

from objectives.frozen import Frozen

PER = "step"


class Config(Frozen):
    type: Literal["exponential"] = Field("exponential", description="selects `exponential` (`ExponentialLR`)")
    gamma: Annotated[
        float, Field(gt=0, le=1, description="the LR's factor per epoch (applied smoothly, per optimizer step)")
    ] = 0.9


def build(optimizer: torch.optim.Optimizer, cfg: Config, total_steps: int, steps_per_epoch: int) -> object:
    return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=cfg.gamma ** (1.0 / steps_per_epoch))
