"""Loss-weight schedules: how one loss's weight moves over training. Pure functions of the step.

Each file defines ``Config`` (with ``type`` and ``target``, the loss whose weight moves: a task's name
— ``a``, ``b`` or a named task — or ``consistency``) and ``multiplier(cfg, step, total) -> float`` in
[0, 1]; the target loss's weight at optimizer step ``t`` of ``T`` is ``w_target · multiplier(t)`` (the
other weights are left as they are, nothing is renormalised). Adding a schedule is one file plus one line in
:data:`WEIGHT_SCHEDULES`.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType
from typing import Annotated, Union

import torch
from pydantic import Field

from objectives.weight_schedules import constant, cosine, cyclical, linear, sigmoid, step

WEIGHT_SCHEDULES: dict[str, ModuleType] = {
    "constant": constant,
    "linear": linear,
    "cosine": cosine,
    "sigmoid": sigmoid,
    "cyclical": cyclical,
    "step": step,
}

# The config union is derived from the registry, so a new entry is its file plus its line above.
WeightScheduleConfig = Annotated[Union[tuple(m.Config for m in WEIGHT_SCHEDULES.values())], Field(discriminator="type")]  # noqa: UP007


def multiplier(cfg: object, step: int, total: int) -> float:
    """The schedule's multiplier at optimizer step ``step`` of ``total`` (any registered schedule)."""
    return WEIGHT_SCHEDULES[cfg.type].multiplier(cfg, step, max(1, total))  # type: ignore[attr-defined]


def weight_table(
    cfg: object, weights: Sequence[float], names: Sequence[str], total: int, device: torch.device | str
) -> torch.Tensor:
    """Every step's loss weights as one ``(total, k)`` device tensor, computed once before training.

    The loop indexes it by step (``table[step]``), which needs no host→device copy per step.
    """
    if cfg.type == "constant":  # type: ignore[attr-defined]  # nothing moves (its target may name no task here)
        return torch.tensor([list(weights)] * total, dtype=torch.float32, device=device)
    target = names.index(cfg.target)  # type: ignore[attr-defined]
    rows = []
    for t in range(total):
        row = list(weights)
        row[target] *= multiplier(cfg, t, total)
        rows.append(row)
    return torch.tensor(rows, dtype=torch.float32, device=device)
