"""The closed registry of training loops, by the ``loop`` name a study file gives.

A loop is one registered unit, a :class:`Loop` record: everything outside the loop's own file (the
study-file schema, the target check, the runner, the summary) reads the record instead of spelling
out loop names, loss names or metric names. Adding a loop is its file (a ``train`` function, a config
class with its ``LOSSES``, a ``logged_metrics`` function) plus one line in :data:`LOOPS`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from objectives import alternating, dual_loss
from objectives.config import AlternatingConfig, DualLossConfig, LoopCommon
from objectives.problems import CoupledProblem, Problem

TaskMetrics = Mapping[str, tuple[str, ...]]


@dataclass(frozen=True)
class Loop:
    """One training loop.

    Attributes:
        name: The ``objective.loop`` value that selects it.
        train: ``train(cfg, report, problem=..., checkpoint=...) -> last epoch's metrics``; ``checkpoint``
            is called every epoch before ``report`` with the metrics and the models by name
            (:class:`~objectives.helpers.Checkpoint`).
        config: Its config class (a :class:`~objectives.config.LoopCommon` with ``LOSSES``).
        problem: The problem type it trains (what a problem builder must return for it).
        logged_metrics: ``logged_metrics(task_metrics, n_losses)``: every metric name it logs per epoch,
            given the extra metric names per task (``{"a": ("acc",), "b": ()}``) and the number of losses.
        test_metrics: ``test_metrics(cfg, problem, models) -> {"test_<name>": value}``: trained models
            (by the names ``checkpoint`` gives them) scored on the problem's held-out test split.
    """

    name: str
    train: Callable[..., dict[str, float]]
    config: type[LoopCommon]
    problem: type
    logged_metrics: Callable[[TaskMetrics, int], tuple[str, ...]]
    test_metrics: Callable[..., dict[str, float]]

    @property
    def losses(self) -> tuple[str, ...]:
        """Its loss names, in the order of ``weights`` (``w_a``, ``w_b``, ...)."""
        return self.config.LOSSES

    def targets(self, task_metrics: TaskMetrics, n_losses: int) -> tuple[str, ...]:
        """The validation metrics it logs: what a study may name as its target (the total, losses, then the rest)."""
        names = [m for m in self.logged_metrics(task_metrics, n_losses) if m.startswith("val_")]
        return tuple(sorted(names, key=lambda m: (m != "val_total_loss", not m.endswith("_loss"))))


LOOPS: dict[str, Loop] = {
    "dual_loss": Loop(
        "dual_loss", dual_loss.train, DualLossConfig, Problem, dual_loss.logged_metrics, dual_loss.test_metrics
    ),
    "alternating": Loop(
        "alternating",
        alternating.train,
        AlternatingConfig,
        CoupledProblem,
        alternating.logged_metrics,
        alternating.test_metrics,
    ),
}
