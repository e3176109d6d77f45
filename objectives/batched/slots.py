"""Freed slots of a vectorized group taken by new members (successive halving without idle slots).

A vectorized loop trains K members in one program. A member that stops (pruned, early-stopped, its loss not
finite) or finishes its epochs frees its row; with a ``refill`` callback the loop asks, at the epoch's end,
for a new member per freed row, which joins at its own epoch 0 and trains exactly as its standalone run
(its own model from its seed, batches from its own generator, weight table, LR schedule, strategy and
optimizer state, all indexed by its own epoch and step). The loop runs while any member trains.

The contract, for a loop's ``train_group(cfgs, reports, ..., refill=None, on_end=None)``:

- ``on_end(index, result)``: called as each member ends, before any freed row is refilled; ``index`` is the
  member's place in the returned list (the first ``len(cfgs)``, then joiners in the order they joined);
  ``result`` is its last epoch's metrics or the exception that stopped it. Members that end together are
  each told (:func:`tell_ends`) even when telling one raised (a Ctrl-C recorded meanwhile): that error comes
  after the last is told.
- ``refill(fits, free)``: called once per freed row at an epoch's end (``free``: the rows free now, this
  one included, so a caller may prepare that many at once), and again while a returned member trains no
  epoch; returns a :class:`Joiner` or ``None`` (the rows stay empty until the next epoch's end).
  ``fits(cfg)`` says whether ``cfg`` may join this group (:func:`objectives.batched.rules.why_not` with the
  group's first config): ``refill`` should return only a member that fits; one that does not is not
  trained and ends at once (``on_end``) with a :class:`ValueError` naming why, as does one whose building
  failed (its model out of memory, say) with that error: the group goes on without it.
- A loop that cannot take new members never calls ``refill`` (its ``on_end`` still comes).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from objectives.batched.common import Schedule
from objectives.batched.optim import BatchedOptimizer
from objectives.config import LoopCommon, OptimizerConfig
from objectives.helpers import Checkpoint, Reporter
from objectives.weighting.base import Weighting

Result = dict[str, float] | BaseException
Fits = Callable[[Any], bool]
OnEnd = Callable[[int, Result], None]


@dataclass(frozen=True)
class Joiner:
    """A new member for a freed row: its resolved config, reporter and checkpoint callback."""

    cfg: LoopCommon
    report: Reporter | None = None
    checkpoint: Checkpoint | None = None


Refill = Callable[[Fits, int], Joiner | None]


@dataclass
class Row:
    """One training member's own state: everything indexed by its own epoch and step.

    Attributes:
        index: Its place in the loop's results.
        cfg: Its config.
        epoch: Its next epoch.
        weights: Its static weights × weight schedule, one row per step of its training.
        schedule: Its LR schedule.
        generator: Its batches' generator.
        strategy: Its weighting strategy.
    """

    index: int
    cfg: Any
    epoch: int
    weights: torch.Tensor
    schedule: Schedule
    generator: torch.Generator
    strategy: Weighting

    def step(self, steps_per_epoch: int, i: int) -> int:
        """Its own step number at step ``i`` of its current epoch."""
        return self.epoch * steps_per_epoch + i


def epoch_weights(rows: Sequence[Row], steps: int) -> torch.Tensor:
    """Each row's weights for the steps of its current epoch, as one ``(steps, K, n)`` table."""
    return torch.stack([r.weights[r.epoch * steps : (r.epoch + 1) * steps] for r in rows], dim=1)


def tell_ends(on_end: OnEnd | None, ends: Sequence[tuple[int, Result]]) -> None:
    """Tell each of ``ends`` (``on_end(index, result)``), all of them even when telling one raised; the first
    error (say, a Ctrl-C recorded while one was told) is raised after the last is told."""
    if on_end is None:
        return
    error: BaseException | None = None
    for index, result in ends:
        try:
            on_end(index, result)
        except BaseException as e:  # 1. the others ended too: each is told its own result, not this error
            error = error or e
    if error is not None:
        raise error


def join_params(params: dict[str, torch.Tensor], model: torch.nn.Module) -> None:
    """Add ``model``'s parameters to the stacked ones (in place) as one more row, the last: all of them or,
    when one cannot be (out of memory), none."""
    own = dict(model.named_parameters())
    grown = {name: torch.cat([p.detach(), own[name].detach().unsqueeze(0).to(p.device)]) for name, p in params.items()}
    params.update({name: p.requires_grad_() for name, p in grown.items()})


class JoinableOptimizer(BatchedOptimizer):
    """A :class:`BatchedOptimizer` a member may join after others (each member counts its own steps).

    A joiner's moments (SGD's momentum buffer, Adam's averages) are zero rows: SGD's ``0·μ + g`` is its
    first step's buffer ``g`` (torch's), Adam's zero averages are torch's initial state, and its bias
    corrections use its own step count.
    """

    def join(self, cfg: OptimizerConfig) -> None:
        """One more member (the last row of the stacked parameters, :func:`join_params`) with ``cfg``."""
        if cfg.type != self.type:
            raise ValueError(f"one optimizer type per group, got {cfg.type} beside {self.type}")
        self.cfgs.append(cfg)
        self.counts.append(0)
        for state in self.state.values():
            for key in list(state):
                if key in ("buf", "exp_avg", "exp_avg_sq"):  # moments: a zero row
                    moment = state[key]
                    state[key] = torch.cat([moment, moment.new_zeros((1, *moment.shape[1:]))])
                else:  # per-member constants: made again from the configs at the next step
                    del state[key]
