"""How a trial is scored and which weights it keeps: the last or the best epoch, early stopping.

Pruning stays on the per-epoch values (the reporter reports each epoch's target to Optuna); what this
module decides is the trial's final value (``study.score``), when a trial whose target stalls stops
(``objective.early_stopping``: it completes with its best value, it is not pruned), and which epoch's
weights are kept (``objective.checkpoint``: by default the epoch whose value the trial reports).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from objectives.config import EarlyStopping, LoopCommon


class EarlyStop(Exception):
    """Raised by the reporter when the target has stalled for ``patience`` epochs."""


class Score:
    """A single-objective trial's target, epoch by epoch.

    Args:
        direction: ``minimize`` or ``maximize``.
        rule: ``last`` (the trial's value is its last epoch's) or ``best``.
        early: Early-stopping settings, or ``None``.
    """

    def __init__(self, direction: str, rule: str, early: EarlyStopping | None) -> None:
        self.sign = 1.0 if direction == "minimize" else -1.0
        self.rule, self.early = rule, early
        self.values: list[float] = []
        self.best_epoch: int | None = None
        self.stopped_at: int | None = None
        self._since_improvement = 0
        self._reference: float | None = None  # the value improvements are measured from (min_delta)

    def is_best(self, value: float) -> bool:
        """Would ``value`` be a new best (strictly better than every earlier epoch's)?"""
        return self.best_epoch is None or self.sign * value < self.sign * self.values[self.best_epoch]

    def add(self, epoch: int, value: float) -> None:
        """Record an epoch's target.

        Raises:
            EarlyStop: the target has not improved by more than ``min_delta`` for ``patience`` epochs.
        """
        if self.is_best(value):
            self.best_epoch = epoch
        self.values.append(value)
        if self.early is None:
            return
        if self._reference is None or self.sign * (self._reference - value) > self.early.min_delta:
            self._reference, self._since_improvement = value, 0
        else:
            self._since_improvement += 1
            if self._since_improvement >= self.early.patience:
                self.stopped_at = epoch
                raise EarlyStop(f"no improvement of more than {self.early.min_delta} for {self.early.patience} epochs")

    @property
    def uses_best(self) -> bool:
        """The trial reports its best epoch (``score: best``, or it stopped early)."""
        return self.rule == "best" or self.stopped_at is not None

    def value(self) -> float:
        """The trial's value: its best epoch's target when :attr:`uses_best`, else the last epoch's."""
        assert self.values and self.best_epoch is not None
        return self.values[self.best_epoch] if self.uses_best else self.values[-1]


class Keeper:
    """The loops' checkpoint callback: keeps the weights of the best epoch (a CPU copy, taken when the
    epoch improves) or of the last (a reference, copied once at the end), and writes them once.

    Args:
        mode: ``best`` or ``last``.
        target: The metric that decides the best epoch.
        score: The trial's score, whose rule for "best" this follows.
    """

    def __init__(self, mode: str, target: str, score: Score) -> None:
        self.mode, self.target, self.score = mode, target, score
        self.epoch: int | None = None
        self._state: dict[str, dict[str, torch.Tensor]] | None = None
        self._models: Mapping[str, torch.nn.Module] = {}

    def __call__(self, epoch: int, metrics: Mapping[str, float], models: Mapping[str, torch.nn.Module]) -> None:
        if self.mode == "last":
            self.epoch, self._models = epoch, models
        elif self.score.is_best(metrics[self.target]):
            self.epoch, self._state = epoch, _copy(models)

    def state(self) -> dict[str, dict[str, torch.Tensor]]:
        """The kept weights, ``{name: state_dict}`` (CPU copies)."""
        assert self.epoch is not None, "no epoch finished"
        return self._state if self._state is not None and self.mode == "best" else _copy(self._models)

    def save(self, path: Path) -> Path | None:
        """Write the kept weights (``{name: state_dict}``, loadable with ``weights_only=True``); ``None``
        when no epoch finished."""
        if self.epoch is None:
            return None
        state = self._state if self.mode == "best" else _copy(self._models)
        torch.save(state, path)
        return path


def keeper(cfg: LoopCommon, score: Score, target: str) -> Keeper | None:
    """The checkpoint callback ``objective.checkpoint`` asks for; by default the epoch the trial reports (the
    best with ``study.score: best`` or early stopping, else the last); ``None`` for ``checkpoint: none``.

    Args:
        cfg: The trial's resolved config.
        score: The trial's score.
        target: The study's (first) target metric.
    """
    mode = cfg.checkpoint or ("best" if score.rule == "best" or cfg.early_stopping else "last")
    return None if mode == "none" else Keeper(mode, target, score)


def _copy(models: Mapping[str, torch.nn.Module]) -> dict[str, dict[str, Any]]:
    return {name: {k: v.detach().to("cpu", copy=True) for k, v in m.state_dict().items()} for name, m in models.items()}
