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
    type: Literal["onecycle"] = "onecycle"
    pct_start: Annotated[float, Field(gt=0, lt=1)] = 0.3
    anneal_strategy: Literal["cos", "linear"] = "cos"
    div_factor: Annotated[float, Field(gt=0)] = 25.0
    final_div_factor: Annotated[float, Field(gt=0)] = 1e4


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
