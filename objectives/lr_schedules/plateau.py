"""``plateau``: multiply the LR by ``factor`` when the validation metric stops improving
(``ReduceLROnPlateau``, stepped once per epoch with the loop's ``val_total_loss``)."""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from pydantic import Field, NonNegativeFloat, NonNegativeInt

from objectives.frozen import Frozen

PER = "epoch"


class Config(Frozen):
    type: Literal["plateau"] = "plateau"
    factor: Annotated[float, Field(gt=0, lt=1)] = 0.5
    patience: NonNegativeInt = 2
    threshold: NonNegativeFloat = 1e-4
    min_lr: NonNegativeFloat = 0.0


def build(optimizer: torch.optim.Optimizer, cfg: Config, total_steps: int, steps_per_epoch: int) -> object:
    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=cfg.factor, patience=cfg.patience, threshold=cfg.threshold, min_lr=cfg.min_lr
    )
