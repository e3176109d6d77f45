"""Vectorized trials: K configurations trained as one program (``torch.func.functional_call`` + ``torch.vmap``).

A loss-weight study trains one small model many times with other weights and learning rates; one such
training leaves an accelerator nearly idle and, on a CPU, pays per-operation overhead at every step.
:func:`train_group` trains K of them at once, each member exactly as its standalone run
(:mod:`objectives.batched.dual_loss`). What members may differ in is :data:`VARIES`; anything else must
be equal (:func:`group_key`), and :func:`why_not` names what stops a set of configs from being one group.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from objectives.batched import alternating, dual_loss
from objectives.batched.dual_loss import Result
from objectives.batched.rules import VARIES, group_key, why_not

GROUP_LOOPS: dict[str, Callable[..., list[Result]]] = {
    "dual_loss": dual_loss.train_group,
    "alternating": alternating.train_group,
}


def train_group(
    cfgs: Sequence[Any], reports: Sequence[Any], problem: Any = None, checkpoints: Sequence[Any] | None = None
) -> list[Result]:
    """Train the configs as one vectorized group with their loop's group trainer (:data:`GROUP_LOOPS`)."""
    return GROUP_LOOPS[cfgs[0].loop](cfgs, reports, problem=problem, checkpoints=checkpoints)


__all__ = ["GROUP_LOOPS", "VARIES", "Result", "group_key", "train_group", "why_not"]
