"""``onecycle``: the one-cycle policy (Smith & Topin 2019) over the whole run (``OneCycleLR``).

The optimizer's LR is the peak; it starts at peak/``div_factor``, rises for ``pct_start`` of the steps
and anneals to start/``final_div_factor``.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from pydantic import Field

from objectives.frozen import Frozen

PER = "step"


class Config(Frozen):
    type: Literal["onecycle"] = Field("onecycle", description="selects `onecycle` (`OneCycleLR`)")
    pct_start: Annotated[
        float, Field(gt=0, lt=1, description="`OneCycleLR`'s `pct_start`: the fraction of steps spent rising")
    ] = 0.3
    anneal_strategy: Literal["cos", "linear"] = Field(
        "cos", description="`OneCycleLR`'s `anneal_strategy`: the shape of the rise and the fall"
    )
    div_factor: Annotated[
        float, Field(gt=0, description="`OneCycleLR`'s `div_factor`: initial LR = LR / div_factor")
    ] = 25.0
    final_div_factor: Annotated[
        float,
        Field(gt=0, description="`OneCycleLR`'s `final_div_factor`: last LR = initial LR / final_div_factor"),
    ] = 1e4


def build(optimizer: torch.optim.Optimizer, cfg: Config, total_steps: int, steps_per_epoch: int) -> object:
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=[g["lr"] for g in optimizer.param_groups],
        total_steps=max(1, total_steps),
        pct_start=cfg.pct_start,
        anneal_strategy=cfg.anneal_strategy,
        div_factor=cfg.div_factor,
        final_div_factor=cfg.final_div_factor,
        cycle_momentum=False,
    )
