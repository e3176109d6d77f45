"""``constant``: the optimizer's LR throughout."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from objectives.frozen import Frozen

PER = "step"


class Config(Frozen):
    type: Literal["constant"] = Field("constant", description="selects `constant`: the optimizer's LR throughout")


def build(optimizer: torch.optim.Optimizer, cfg: Config, total_steps: int, steps_per_epoch: int) -> object:
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
