"""``step``: multiply the LR by ``gamma`` every ``every_epochs`` epochs (``torch.optim.lr_scheduler.StepLR``)."""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from pydantic import Field, PositiveInt

from objectives.frozen import Frozen

PER = "step"


class Config(Frozen):
    type: Literal["step"] = Field("step", description="selects `step` (`StepLR`)")
    every_epochs: PositiveInt = Field(10, description="epochs between two multiplications by `gamma`")
    gamma: Annotated[float, Field(gt=0, le=1, description="the LR's factor every `every_epochs` epochs")] = 0.1


def build(optimizer: torch.optim.Optimizer, cfg: Config, total_steps: int, steps_per_epoch: int) -> object:
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.every_epochs * steps_per_epoch, gamma=cfg.gamma)
