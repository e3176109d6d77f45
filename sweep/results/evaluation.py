"""Scoring chosen configurations honestly: retrain with fresh seeds, score on the held-out test split.

A search picks the configuration that did best on the validation split, so that configuration's
validation value is biased upwards (it won a contest on that very data), and one seed says nothing of
the spread. :func:`retrain` trains a trial's resolved config again with seeds the search never used,
keeps the epoch the trial's own scoring rule would keep (the last, or the best on the validation
target, with the trial's early stopping) and scores those models on the problem's ``test`` split, which
no trial reads. :func:`mean_ci` summarises the seeds: mean and Student-t 95 % confidence interval,
clipped to the values the metric can take (:func:`metric_range`).

Nothing here imports Optuna or MLflow; :mod:`sweep.evaluate` picks the trials and records the results.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from objectives.config import LoopCommon
from objectives.helpers import derive_seed, resolve_device
from objectives.loops import LOOPS
from objectives.resolved import resolved_type
from sweep.results.scoring import EarlyStop, Keeper, Score


class NoTestSplit(ValueError):
    """The problem supplies no held-out test split, so there is nothing honest to score on."""


@dataclass(frozen=True)
class Interval:
    """A mean over seeds and its confidence interval ``mean ± half_width`` (``nan`` with one seed), the
    interval clipped to ``[lowest, highest]``: :attr:`low` and :attr:`high` are its ends."""

    mean: float
    half_width: float
    sd: float
    n: int
    lowest: float = -math.inf
    highest: float = math.inf

    @property
    def low(self) -> float:
        """The interval's lower end, no lower than :attr:`lowest`."""
        return max(self.mean - self.half_width, self.lowest)

    @property
    def high(self) -> float:
        """The interval's upper end, no higher than :attr:`highest`."""
        return min(self.mean + self.half_width, self.highest)

    def text(self, digits: int = 3) -> str:
        """``mean ± half_width``; ``mean [low, high]`` where clipping made the interval lopsided."""
        if math.isnan(self.half_width):
            return f"{self.mean:.{digits}f}"
        if self.low == self.mean - self.half_width and self.high == self.mean + self.half_width:
            return f"{self.mean:.{digits}f} ± {self.half_width:.{digits}f}"
        return f"{self.mean:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


def metric_range(name: str) -> tuple[float, float]:
    """The values a metric can take, by sweep's naming (as for directions, :mod:`sweep.studyfile.targets`): an
    accuracy (``*_acc``) lies in [0, 1], a loss (``*_loss``) is ≥ 0; any other metric is unbounded."""
    if name.endswith("_acc"):
        return 0.0, 1.0
    if name.endswith("_loss"):
        return 0.0, math.inf
    return -math.inf, math.inf


def mean_ci(
    values: Sequence[float], level: float = 0.95, bounds: tuple[float, float] = (-math.inf, math.inf)
) -> Interval:
    """Mean and two-sided Student-t confidence interval of independent per-seed values.

    ``half_width = t_{(1+level)/2, n-1} · s / √n`` with ``s`` the sample standard deviation (n − 1).

    Args:
        values: One value per seed.
        level: The confidence level.
        bounds: The values the metric can take (:func:`metric_range`): the interval is clipped to them
            (the half width stays the Student-t one), unless a value lies outside them, which shows the
            metric is not of that kind (an accuracy in percent, a negative log-likelihood as a loss).
    """
    from scipy.stats import t  # only evaluation needs it

    n = len(values)
    if n == 0:
        raise ValueError("no values to summarise")
    mean = math.fsum(values) / n
    lowest, highest = bounds if all(bounds[0] <= v <= bounds[1] for v in values) else (-math.inf, math.inf)
    if n == 1:
        return Interval(mean, math.nan, math.nan, 1, lowest, highest)
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    return Interval(mean, float(t.ppf((1 + level) / 2, n - 1)) * sd / math.sqrt(n), sd, n, lowest, highest)


def evaluation_seeds(study_seed: int, n: int) -> list[int]:
    """``n`` model/batch seeds for evaluation runs: derived from the study seed under a key no trial's
    seed uses (trials use ``("trial", number)``), the same for every configuration (paired comparison)."""
    return [derive_seed(study_seed, "evaluation", i) for i in range(n)]


def config_for(recorded: Mapping[str, Any], seed: int, device: str = "auto") -> LoopCommon:
    """A trial's recorded (resolved) config with another model/batch seed, on ``device`` of this machine.
    The data seed stays: the same train/validation/test split the search used. One model per fresh seed
    (``repeats`` 1): the seeds of an evaluation are its repeats."""
    data = {**recorded, "seed": seed, "repeats": 1, "device": resolve_device(device)}
    return resolved_type(LOOPS[data["loop"]].config).model_validate(data)


@dataclass(frozen=True)
class Selection:
    """How a retrained run picks its epoch, as the search scored the trial: the target, its direction,
    ``last``/``best`` (``study.score``). ``target=None`` (multi-objective): the last epoch."""

    target: str | None
    direction: str = "minimize"
    rule: str = "last"


def retrain(
    cfg: LoopCommon, problem: Any, selection: Selection, on_epoch: Callable[[int], None] | None = None
) -> dict[str, float]:
    """Train ``cfg`` once, keep the epoch the trial's scoring would keep, score it on the test split.

    Args:
        cfg: A resolved config (see :func:`config_for`).
        problem: The built problem (tensors anywhere: the loop moves them); it must have a test split.
        selection: Which epoch counts (the trial's rule, and its early stopping).
        on_epoch: Called after each epoch (a progress bar).

    Returns:
        ``epoch`` (the kept one), that epoch's validation metrics and the kept models' ``test_*`` metrics.

    Raises:
        NoTestSplit: the problem has no test split.
    """
    if not problem.has_test:
        raise NoTestSplit(f"problem {cfg.problem.name} has no test split")
    loop = LOOPS[cfg.loop]
    score = Score(selection.direction, selection.rule, cfg.early_stopping if selection.target else None)
    mode = "best" if selection.target and (selection.rule == "best" or cfg.early_stopping) else "last"
    keeper = Keeper(mode, selection.target or "", score)
    live: dict[str, torch.nn.Module] = {}
    val: dict[int, dict[str, float]] = {}

    def checkpoint(epoch: int, metrics: Mapping[str, float], models: Mapping[str, torch.nn.Module]) -> None:
        keeper(epoch, metrics, models)
        live.update(models)
        val[epoch] = {k: v for k, v in metrics.items() if k.startswith("val_")}

    def report(epoch: int, metrics: Mapping[str, float]) -> None:
        if on_epoch is not None:
            on_epoch(epoch)
        if selection.target is not None:
            score.add(epoch, metrics[selection.target])  # raises EarlyStop as the trial's reporter did

    with contextlib.suppress(EarlyStop):  # the run ends where the trial's early stopping would end it
        loop.train(cfg, report, problem=problem, checkpoint=checkpoint)
    assert keeper.epoch is not None
    if mode == "best":  # the kept epoch's weights back into the trained modules (still on the device)
        for name, state in keeper.state().items():
            live[name].load_state_dict(state)
    return {"epoch": keeper.epoch, **val[keeper.epoch], **loop.test_metrics(cfg, problem, live)}
