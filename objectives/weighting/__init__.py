"""Weighting strategies: a closed registry, one file per strategy (each cites its paper).

A strategy file defines ``Config`` (options, with a ``type`` literal) and ``build(cfg, n_losses,
device, seed)`` returning an object that follows :class:`~objectives.weighting.base.Weighting`.
Both loops use them the same way, through :func:`make` and the object's methods. Adding a strategy
is one file plus one line in :data:`STRATEGIES`.

Costs per step beyond the static baseline: ``gradnorm`` and ``pcgrad`` one backward pass per loss,
``famo`` one extra forward pass; ``uncertainty``, ``dwa`` and ``rlw`` nothing measurable.
"""

from __future__ import annotations

from types import ModuleType
from typing import Annotated, Union

import torch
from pydantic import Field

from objectives.weighting import dwa, famo, gradnorm, pcgrad, rlw, static, uncertainty
from objectives.weighting.base import Weighting

STRATEGIES: dict[str, ModuleType] = {
    "static": static,
    "uncertainty": uncertainty,
    "dwa": dwa,
    "rlw": rlw,
    "gradnorm": gradnorm,
    "pcgrad": pcgrad,
    "famo": famo,
}

# The config union is derived from the registry, so a new entry is its file plus its line above.
WeightingConfig = Annotated[Union[tuple(m.Config for m in STRATEGIES.values())], Field(discriminator="type")]  # noqa: UP007

# Strategies that recompute the step's losses after the optimizer step (an extra forward pass).
NEEDS_LOSSES_AFTER_STEP = frozenset({"famo"})


def make(cfg: object, n_losses: int, device: torch.device, seed: int) -> Weighting:
    """The strategy a config names, for ``n_losses`` losses, seeded with ``seed``."""
    return STRATEGIES[cfg.type].build(cfg, n_losses, device, seed)  # type: ignore[attr-defined]
