"""``multistep``: multiply the LR by ``gamma`` at each milestone epoch (``MultiStepLR``)."""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from pydantic import Field, PositiveInt

from objectives.frozen import Frozen

PER = "step"


class Config(Frozen):
    type: Literal["multistep"] = Field("multistep", description="selects `multistep` (`MultiStepLR`)")
    milestones: Annotated[
        tuple[PositiveInt, ...],
        Field(min_length=1, description="epochs at which the LR is multiplied by `gamma`"),
    ] = (5, 8)
    gamma: Annotated[float, Field(gt=0, le=1, description="the LR's factor at each milestone")] = 0.1


def build(optimizer: torch.optim.Optimizer, cfg: Config, total_steps: int, steps_per_epoch: int) -> object:
    milestones = [m * steps_per_epoch for m in cfg.milestones]
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=cfg.gamma)
