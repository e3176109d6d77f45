"""Vectorized trials: K configurations trained as one program (``torch.func.functional_call`` + ``torch.vmap``).

A loss-weight study trains one small model many times with other weights and learning rates; one such
training leaves an accelerator nearly idle and, on a CPU, pays per-operation overhead at every step.
:func:`train_group` trains K of them at once, each member exactly as its standalone run
(:mod:`objectives.batched.dual_loss`). What members may differ in is :data:`VARIES`; anything else must
be equal (:func:`group_key`), and :func:`why_not` names what stops a set of configs from being one group.
"""

from __future__ import annotations

from objectives.batched.dual_loss import Result, train_group
from objectives.batched.rules import VARIES, group_key, why_not

__all__ = ["VARIES", "Result", "group_key", "train_group", "why_not"]
