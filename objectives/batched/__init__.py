"""Vectorized trials: K configurations trained as one program (``torch.func.functional_call`` + ``torch.vmap``).

A loss-weight study trains one small model many times with other weights and learning rates; one such
training leaves an accelerator nearly idle and, on a CPU, pays per-operation overhead at every step.
A loop's vectorized form (its :class:`~objectives.loops.Loop` record's ``train_group``:
:func:`objectives.batched.dual_loss.train_group`, :func:`objectives.batched.alternating.train_group`)
trains K of them at once, each member exactly as its standalone run. What members may differ in is
:data:`VARIES`; anything else must be equal (:func:`group_key`), and
:func:`objectives.batched.rules.why_not` names what stops a set of configs from being one group.
Grouped training goes through the record: :func:`objectives.loops.why_not`,
:func:`objectives.loops.train_group` (there is no second registry here).
"""

from __future__ import annotations

from objectives.batched.dual_loss import Result
from objectives.batched.rules import VARIES, group_key

__all__ = ["VARIES", "Result", "group_key"]
