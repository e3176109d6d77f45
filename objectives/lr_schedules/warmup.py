"""``warmup``: linear warm-up then cosine or linear decay (``SequentialLR`` of ``LinearLR`` and
``CosineAnnealingLR``/``LinearLR``).

The LR rises linearly from ``start_factor``·LR to LR over the first ``warmup_fraction`` of the
optimizer's steps, then decays to ``min_lr_ratio``·LR at the last step.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from pydantic import Field

from objectives.frozen import Frozen
from objectives.lr_schedules.cosine import anneal

PER = "step"


class Config(Frozen):
    type: Literal["warmup"] = Field("warmup", description="selects `warmup`: linear warm-up, then a decay")
    warmup_fraction: Annotated[
        float, Field(gt=0, lt=1, description="the fraction of the optimizer's steps spent warming up")
    ] = 0.1
    start_factor: Annotated[
        float, Field(gt=0, le=1, description="the LR at the first step, as a fraction of the optimizer's LR")
    ] = 0.01
    decay: Literal["cosine", "linear"] = Field("cosine", description="the decay after the warm-up")
    min_lr_ratio: Annotated[
        float, Field(ge=0, le=1, description="the LR's floor at the last step, as a fraction of the optimizer's LR")
    ] = 0.0


def build(optimizer: torch.optim.Optimizer, cfg: Config, total_steps: int, steps_per_epoch: int) -> object:
    sched = torch.optim.lr_scheduler
    warm = max(1, round(cfg.warmup_fraction * total_steps))
    rest = max(1, total_steps - warm)
    warmup = sched.LinearLR(optimizer, start_factor=cfg.start_factor, end_factor=1.0, total_iters=warm)
    if cfg.decay == "cosine":
        decay = anneal(optimizer, rest, cfg.min_lr_ratio)  # per-group floors, from each group's initial LR
    else:
        decay = sched.LinearLR(optimizer, start_factor=1.0, end_factor=max(cfg.min_lr_ratio, 1e-8), total_iters=rest)
    return sched.SequentialLR(optimizer, [warmup, decay], milestones=[warm])
