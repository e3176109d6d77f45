"""Learning-rate schedules: a closed registry, one file per schedule, all from ``torch.optim.lr_scheduler``.

A schedule file defines ``Config`` (its options, with a ``type`` literal), ``PER`` (``"step"``: the
scheduler steps after every optimizer step; ``"epoch"``: once per epoch with the validation metric)
and ``build(optimizer, cfg, total_steps, steps_per_epoch)``. Epoch-denominated options (``step``'s
``every_epochs``, ``multistep``'s milestones, ``exponential``'s per-epoch ``gamma``) are converted to
optimizer steps, so every schedule moves smoothly with the optimizer it drives. Adding a schedule is
one file plus one line in :data:`SCHEDULES`.
"""

from __future__ import annotations

from types import ModuleType
from typing import Annotated, Union

import torch
from pydantic import Field

from objectives.lr_schedules import constant, cosine, exponential, multistep, onecycle, plateau, step, warmup

SCHEDULES: dict[str, ModuleType] = {
    "constant": constant,
    "step": step,
    "multistep": multistep,
    "exponential": exponential,
    "cosine": cosine,
    "warmup": warmup,
    "onecycle": onecycle,
    "plateau": plateau,
}

# The config union is derived from the registry, so a new entry is its file plus its line above.
LRScheduleConfig = Annotated[Union[tuple(m.Config for m in SCHEDULES.values())], Field(discriminator="type")]  # noqa: UP007


class LRSchedule:
    """One optimizer's schedule: ``after_step()`` after each optimizer step, ``after_epoch(metric)`` after
    each epoch. Only Python-side state changes: no host sync."""

    def __init__(self, optimizer: torch.optim.Optimizer, cfg: object, total_steps: int, steps_per_epoch: int) -> None:
        module = SCHEDULES[cfg.type]  # type: ignore[attr-defined]
        self.per = module.PER
        self.scheduler = module.build(optimizer, cfg, max(1, total_steps), max(1, steps_per_epoch))
        self._steps, self._total = 0, max(1, total_steps)

    def after_step(self) -> None:
        if self.per == "step" and self._steps < self._total:  # never past the planned steps (OneCycleLR raises)
            self.scheduler.step()
            self._steps += 1

    def after_epoch(self, metric: float) -> None:
        if self.per == "epoch":
            self.scheduler.step(metric)
