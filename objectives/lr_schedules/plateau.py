"""``plateau``: multiply the LR by ``factor`` when the validation metric stops improving
(``ReduceLROnPlateau``, stepped once per epoch with the loop's ``val_total_loss``)."""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from pydantic import Field, NonNegativeFloat, NonNegativeInt

from objectives.frozen import Frozen

PER = "epoch"


class Config(Frozen):
    type: Literal["plateau"] = Field("plateau", description="selects `plateau` (`ReduceLROnPlateau`)")
    factor: Annotated[
        float, Field(gt=0, lt=1, description="`ReduceLROnPlateau`'s `factor`: the LR's factor on a plateau")
    ] = 0.5
    patience: NonNegativeInt = Field(
        2, description="`ReduceLROnPlateau`'s `patience`: epochs without improvement before the LR is cut"
    )
    threshold: NonNegativeFloat = Field(
        1e-4, description="`ReduceLROnPlateau`'s `threshold`: the least relative improvement that counts"
    )
    min_lr: NonNegativeFloat = Field(0.0, description="`ReduceLROnPlateau`'s `min_lr`: the LR's floor")


def build(optimizer: torch.optim.Optimizer, cfg: Config, total_steps: int, steps_per_epoch: int) -> object:
    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=cfg.factor, patience=cfg.patience, threshold=cfg.threshold, min_lr=cfg.min_lr
    )
