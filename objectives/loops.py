"""The closed registry of training loops, by the ``loop`` name a study file gives.

A loop is one registered unit, a :class:`Loop` record: everything outside the loop's own file (the
study-file schema, the target check, the runner, the summary, vectorized groups) reads the record
instead of spelling out loop names, loss names or metric names. Adding a loop is its file (a ``train``
function, a config class with its ``LOSSES``, a ``logged_metrics`` function) plus one line in
:data:`LOOPS`; its vectorized form (``train_group``) is optional: without one, the trials of a study
with ``parallel_trials`` > 1 train one after another (:func:`why_not` says so).

Which of a loop's losses a config trains is :attr:`~objectives.config.LoopCommon.loss_terms` (its
``LOSSES`` up to its number of weights), read by the loops, the vectorized loops and the preflight check
alike.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from objectives import alternating, dual_loss, repeats
from objectives.batched import alternating as batched_alternating
from objectives.batched import dual_loss as batched_dual_loss
from objectives.batched.dual_loss import Result
from objectives.batched.rules import why_not as why_not_vectorized
from objectives.batched.slots import OnEnd, Refill
from objectives.config import AlternatingConfig, DualLossConfig, LoopCommon
from objectives.problems import CoupledProblem, Problem, build_problem
from objectives.resolved import resolved

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
        train_group: Its vectorized form, or ``None``: ``train_group(cfgs, reports, problem=...,
            checkpoints=..., refill=..., on_end=...) -> [metrics or the exception that stopped the member]``
            (``refill``, ``on_end``: :mod:`objectives.batched.slots`), each member exactly
            as ``train`` would train it alone (:mod:`objectives.batched`). ``None``: grouped trials of the
            loop train one after another (:func:`why_not` gives the reason).
    """

    name: str
    train: Callable[..., dict[str, float]]
    config: type[LoopCommon]
    problem: type
    logged_metrics: Callable[[TaskMetrics, int], tuple[str, ...]]
    test_metrics: Callable[..., dict[str, float]]
    train_group: Callable[..., list[Result]] | None = None

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
        "dual_loss",
        dual_loss.train,
        DualLossConfig,
        Problem,
        dual_loss.logged_metrics,
        dual_loss.test_metrics,
        batched_dual_loss.train_group,
    ),
    "alternating": Loop(
        "alternating",
        alternating.train,
        AlternatingConfig,
        CoupledProblem,
        alternating.logged_metrics,
        alternating.test_metrics,
        batched_alternating.train_group,
    ),
}


def why_not(cfgs: Sequence[LoopCommon], problem: Any) -> str:
    """Why these configs cannot train as one vectorized group; ``""`` when they can.

    A loop whose record has no ``train_group`` is never grouped; otherwise the vectorization rules
    decide (:func:`objectives.batched.rules.why_not`: what the members differ in, the weighting, the
    numerics, the data, the model). The reason is one line: the runner's note when the trials train one
    after another instead.

    Args:
        cfgs: The members' resolved configs (one loop).
        problem: Their (one) built problem.
    """
    name = cfgs[0].loop
    if LOOPS[name].train_group is None:
        return f"loop {name} has no vectorized form (its Loop record gives no train_group)"
    if any(c.repeats > 1 for c in cfgs):
        return "repeats > 1: each trial trains its own seeds as one vectorized group (objectives.repeats)"
    return why_not_vectorized(cfgs, problem)


def train(
    cfg: LoopCommon,
    report: Any = None,
    problem: Any = None,
    checkpoint: Any = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, float]:
    """Train one resolved config with its loop: once, or with each of its ``repeats`` seeds, reporting their
    mean every epoch (:func:`objectives.repeats.train_repeats`: as one vectorized group where
    :func:`why_not` accepts the seeds' configs, else one after another). ``progress(epoch)`` hears the
    epochs that ``report`` does not: those of the seeds trained before the first, one after another.

    Returns:
        The last epoch's metrics (with repeats: their mean over the seeds).
    """
    loop = LOOPS[cfg.loop]
    if cfg.repeats == 1:
        return loop.train(cfg, report, problem=problem, checkpoint=checkpoint)
    cfg = resolved(cfg)
    if problem is None:  # one problem for every seed: the same data
        problem = build_problem(cfg.problem.name, cfg.problem.options, cfg.data_seed, cfg.loop, loop.problem)
    seeds = repeats.members(cfg)
    group = train_group if not why_not(seeds, problem) else None
    return repeats.train_repeats(
        cfg, report, problem=problem, checkpoint=checkpoint, train=loop.train, train_group=group, progress=progress
    )


def train_group(
    cfgs: Sequence[LoopCommon],
    reports: Sequence[Any],
    problem: Any = None,
    checkpoints: Sequence[Any] | None = None,
    refill: Refill | None = None,
    on_end: OnEnd | None = None,
) -> list[Result]:
    """Train the configs as one vectorized group with their loop's ``train_group`` (its :class:`Loop` record).

    Args:
        cfgs: Resolved configs of one loop that :func:`why_not` accepts as one group.
        reports: Each member's reporter.
        problem: Their built problem (built from ``cfgs[0]`` when omitted).
        checkpoints: Each member's checkpoint callback.
        refill: ``refill(fits, free) -> Joiner | None``: asked at an epoch's end for a new member in each row freed
            in it (pruned, stopped, diverged or done); it joins at its own epoch 0. A loop that cannot take
            one never asks (the alternating loop). The contract: :mod:`objectives.batched.slots`.
        on_end: ``on_end(index, result)``: each member's end, told as it happens (joiners' indices follow
            the first members', in the order they joined).

    Returns:
        Per member (then per joiner): its last epoch's metrics, or the exception that stopped it.

    Raises:
        ValueError: the configs cannot be one group (the reason from :func:`why_not`).
    """
    group = LOOPS[cfgs[0].loop].train_group
    if group is None:
        raise ValueError(why_not(cfgs, problem))
    more = {key: f for key, f in (("refill", refill), ("on_end", on_end)) if f is not None}
    return group(cfgs, reports, problem=problem, checkpoints=checkpoints, **more)
