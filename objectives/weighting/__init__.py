"""Weighting strategies: a closed registry, one file per strategy (each cites its paper).

A strategy file defines ``Config`` (options, with a ``type`` literal) and ``build``, its strategy
class: a subclass of :class:`~objectives.weighting.base.Weighting` built as ``build(cfg, n_losses,
device, seed)``. Both loops use them the same way, through :func:`make` and the object's methods;
what a strategy needs from a loop its class declares (:func:`capabilities`). Adding a strategy is
one file plus one line in :data:`STRATEGIES`.

Costs per step beyond the static baseline: ``gradnorm`` and ``pcgrad`` one backward pass per loss,
``famo`` one extra forward pass, ``hypergrad`` one backward pass per loss and one forward and backward
of a validation batch per update; ``mgda``, ``upgrad``, ``imtl_g``, ``cagrad`` and ``nash_mtl`` one
vectorized backward pass (the Jacobian) and a small m×m problem on the CPU (Frank-Wolfe, m QPs, a
pseudo-inverse, one or up to 20 cvxpy solves); ``aligned_mtl``, ``gradvac``, ``graddrop``,
``fairgrad``, ``excess_mtl`` and ``db_mtl`` one vectorized backward pass and an m×m eigendecomposition,
an m(m−1) loop, a sign mask, a scipy least-squares solve, element-wise excess risks, an EMA;
``uncertainty``, ``dwa``, ``rlw`` and the loss scalarizations ``imtl_l``, ``gls`` and ``stch`` nothing
measurable.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from types import ModuleType
from typing import Annotated, Union

import torch
from pydantic import Field

from objectives.weighting import (
    aligned_mtl,
    cagrad,
    db_mtl,
    dwa,
    excess_mtl,
    fairgrad,
    famo,
    gls,
    graddrop,
    gradnorm,
    gradvac,
    hypergrad,
    imtl_g,
    imtl_l,
    mgda,
    nash_mtl,
    pcgrad,
    rlw,
    static,
    stch,
    uncertainty,
    upgrad,
)
from objectives.weighting.base import Weighting

STRATEGIES: dict[str, ModuleType] = {
    "static": static,
    "uncertainty": uncertainty,
    "dwa": dwa,
    "rlw": rlw,
    "gradnorm": gradnorm,
    "pcgrad": pcgrad,
    "famo": famo,
    "hypergrad": hypergrad,
    "mgda": mgda,
    "upgrad": upgrad,
    "imtl_g": imtl_g,
    "cagrad": cagrad,
    "nash_mtl": nash_mtl,
    "aligned_mtl": aligned_mtl,
    "gradvac": gradvac,
    "graddrop": graddrop,
    "fairgrad": fairgrad,
    "excess_mtl": excess_mtl,
    "db_mtl": db_mtl,
    "imtl_l": imtl_l,
    "gls": gls,
    "stch": stch,
}

# The config union is derived from the registry, so a new entry is its file plus its line above.
WeightingConfig = Annotated[Union[tuple(m.Config for m in STRATEGIES.values())], Field(discriminator="type")]  # noqa: UP007


@dataclass(frozen=True)
class Capabilities:
    """What a strategy needs from a loop, as its class declares it (see :class:`Weighting`)."""

    weights_before_step: bool
    losses_after_step: bool
    own_backward: bool
    reference_losses: bool
    weights_from_losses: bool


def capabilities(name: str) -> Capabilities:
    """The declared capabilities of the strategy called ``name``."""
    cls = STRATEGIES[name].build
    return Capabilities(**{f.name: getattr(cls, f.name) for f in fields(Capabilities)})


def names_with(**caps: bool) -> tuple[str, ...]:
    """The strategy names, in registry order, whose capabilities match every one given, e.g.
    ``names_with(weights_before_step=True)`` → ``("static", "dwa", "rlw")``.

    Raises:
        TypeError: a keyword is not a capability.
    """
    unknown = set(caps) - {f.name for f in fields(Capabilities)}
    if unknown:
        raise TypeError(f"not a capability: {', '.join(sorted(unknown))}")
    return tuple(
        name for name in STRATEGIES if all(getattr(capabilities(name), key) == value for key, value in caps.items())
    )


def make(cfg: object, n_losses: int, device: torch.device, seed: int) -> Weighting:
    """The strategy a config names, for ``n_losses`` losses, seeded with ``seed``."""
    return STRATEGIES[cfg.type].build(cfg, n_losses, device, seed)  # type: ignore[attr-defined]
