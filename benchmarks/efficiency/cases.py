"""The problems the efficiency benchmark searches, and how good a configuration is on fresh seeds.

A case is a study file's ``objective`` and ``search`` (sweep's parametrization) and its target. Its best loss
weights range from equal to far from equal, so a method that favours equal weights cannot win by that alone.

A configuration's *quality* is its target's mean over :data:`FRESH_SEEDS` fresh seeds (model initialisation and
batch order; the data stay the same), never the value of the one trial that found it: a search that chases a
lucky seed is chasing noise. A case's *reference* is the best quality on a dense grid of its space
(:mod:`benchmarks.efficiency.reference`), computed once and kept in ``references.json`` beside this file
(``python -m benchmarks.efficiency --references`` regenerates them; ``--cases NAME --references --references-only``
one case's alone, training no study).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from objectives.config import LoopCommon
from objectives.loops import LOOPS, train
from objectives.problems import build_problem
from objectives.problems.base import Problem, Task
from sweep.studyfile.config import StudyFile, parse_study
from sweep.studyfile.space import resolve

FRESH_SEEDS = 5  # seeds a configuration's quality is averaged over

LINEAR = {"epochs": 8, "batch_size": 64, "data_seed": 0, "optimizer": {"type": "adam", "lr": 0.05}}

Target = Callable[[Problem, Mapping[str, float]], float]


@dataclass(frozen=True)
class Case:
    """One problem as a study would search it.

    Args:
        name: The case's name in the tables.
        summary: What it is and where its best weights lie.
        objective: The study file's ``objective`` (``data_seed`` fixed: every study sees the same data).
        search: The study file's ``search`` in sweep's parametrization.
        metric: The target, minimised: a metric the loop logs, or the name of ``target``.
        target: Computes the target from the problem and the logged metrics of an epoch (``None``: ``metric``
            is logged). Such a study file names ``val_total_loss``, which only sets its direction.
        noisy: A configuration's quality varies with the seeds more than the target (1 %) allows: the reference
            is the best of a long study's top candidates, and the target its 95 % confidence half-width
            (:mod:`benchmarks.efficiency.reference`).
    """

    name: str
    summary: str
    objective: Mapping[str, Any]
    search: Mapping[str, Any]
    metric: str
    target: Target | None = None
    noisy: bool = False
    _quality: dict[str, list[float]] = field(default_factory=dict, compare=False, repr=False)

    @cached_property
    def study_file(self) -> StudyFile:
        metric = self.metric if self.target is None else "val_total_loss"
        doc = {"study": {"name": self.name, "metric": metric}, "objective": dict(self.objective)}
        return parse_study({**doc, "search": dict(self.search)}, f"{self.name}.yaml")

    @cached_property
    def problem(self) -> Any:
        """The built problem (data once, on the CPU), shared by every trial and every method."""
        objective = self.study_file.objective
        loop = LOOPS[objective.loop]
        seed = objective.data_seed if objective.data_seed is not None else 0
        return build_problem(objective.problem.name, objective.problem.options, seed, loop.name, loop.problem)

    def config(self, sampled: Mapping[str, Any], weights: tuple[float, ...], seed: int) -> LoopCommon:
        """The resolved config of a trial: sampled values, the weights, and the model/batch seed ``seed``."""
        cfg = resolve(self.study_file.objective, 0, 0, sampled, weights)
        return cfg.model_copy(update={"seed": seed, "device": "cpu"})

    def train(self, cfg: LoopCommon, report: Any = None) -> dict[str, float]:
        """Train one config; ``report(epoch, metrics)`` after each epoch (it may raise to stop)."""
        return train(cfg, report or (lambda _e, _m: None), problem=self.problem)  # with repeats: their mean

    def value(self, metrics: Mapping[str, float]) -> float:
        """The target of one epoch's logged metrics."""
        return metrics[self.metric] if self.target is None else self.target(self.problem, metrics)

    def fresh(self, sampled: Mapping[str, Any], weights: tuple[float, ...]) -> list[float]:
        """The target on each of :data:`FRESH_SEEDS` fresh seeds, the same for every configuration (cached)."""
        key = json.dumps([sorted(sampled.items()), weights])
        if key not in self._quality:
            seeds = range(1_000_003, 1_000_003 + FRESH_SEEDS)
            self._quality[key] = [self.value(self.train(self.config(sampled, weights, s))) for s in seeds]
        return self._quality[key]

    def quality(self, sampled: Mapping[str, Any], weights: tuple[float, ...]) -> float:
        """The target's mean over :data:`FRESH_SEEDS` fresh seeds."""
        return statistics.fmean(self.fresh(sampled, weights))


def _zero_loss(task: Task) -> float:
    """The validation loss of predicting 0 (the mean squared target): what a task's loss is relative to."""
    return float(task.loss(task.val[1] * 0.0, task.val[1]))


def relative_loss(problem: Problem, metrics: Mapping[str, float]) -> float:
    """Each task's validation loss over the zero predictor's, summed: Σ (1 − R²), scale-free as a sum of
    accuracies is (the plain sum of the losses is the larger loss's alone when their scales are far apart)."""
    return metrics["val_a_loss"] / _zero_loss(problem.a) + metrics["val_b_loss"] / _zero_loss(problem.b)


WEIGHTS_ONLY = {"weights": {"parametrization": "log_ratio", "low": -4, "high": 4}}
WEIGHTS_LR = {**WEIGHTS_ONLY, "params": {"optimizer.lr": {"type": "float", "low": 0.001, "high": 0.3, "log": True}}}
DIGITS = {"epochs": 8, "batch_size": 64, "data_seed": 0, "mixing": "cycle", "optimizer": {"type": "sgd", "lr": 0.1}}
DIGITS_SEARCH = {
    "weights": {"parametrization": "log_ratio", "low": -3, "high": 3},
    "params": {
        "optimizer.lr": {"type": "float", "low": 0.01, "high": 0.3, "log": True},
        "optimizer.schedule.type": {"type": "categorical", "choices": ["constant", "cosine", "warmup"]},
    },
}
# digits_images at a size where one training takes about 0.45 s on one CPU thread: 128 + 128 training and 60
# validation PNGs of 16×16 read and decoded per item through DataLoaders in the training process.
IMAGES_OPTIONS = {"n_a": 128, "n_b": 128, "n_val": 60, "size": 16, "channels": 8}
IMAGES = {"epochs": 4, "batch_size": 32, "data_seed": 0, "mixing": "cycle", "optimizer": {"type": "adam", "lr": 0.01}}
IMAGES_SEARCH = {
    "weights": {"parametrization": "log_ratio", "low": -2, "high": 2},
    "params": {"optimizer.lr": {"type": "float", "low": 0.001, "high": 0.03, "log": True}},
}

CASES = [
    Case(
        "equal",
        "linear_pair, the sum of both validation losses: best near equal weights",
        {"problem": "linear_pair", **LINEAR},
        WEIGHTS_ONLY,
        "val_total_loss",
    ),
    Case(
        "auxiliary",
        "linear_pair with 10 samples of task a and a related task b (30x its loss scale); the target is task "
        "a's loss alone: b helps at a small weight",
        {"problem": {"name": "linear_pair", "options": {"n_a": 10, "noise": 2.0, "related": 0.98}}, **LINEAR},
        WEIGHTS_ONLY,
        "val_a_loss",
    ),
    Case(
        "one_task",
        "linear_pair, task a's loss alone, b unrelated: best at the edge of the range (w_a → 1)",
        {"problem": "linear_pair", **LINEAR},
        WEIGHTS_ONLY,
        "val_a_loss",
    ),
    Case(
        "lr",
        "linear_pair, the sum of both validation losses, the weights and Adam's learning rate (log-uniform in "
        "[0.001, 0.3]) searched: best at equal weights and lr ≈ 0.065; the file's own lr is 0.05",
        {"problem": "linear_pair", **LINEAR},
        WEIGHTS_LR,
        "val_total_loss",
    ),
    Case(
        "lr_untuned",
        "as lr, but the file's own learning rate is Adam's default 0.001, 65x below the best: a baseline trial "
        "with the file's values starts far off",
        {"problem": "linear_pair", **LINEAR, "optimizer": {"type": "adam", "lr": 0.001}},
        WEIGHTS_LR,
        "val_total_loss",
    ),
    Case(
        "scales",
        "linear_pair with losses 1000x apart; the target is each task's loss relative to predicting 0, summed "
        "(Σ 1 − R², scale-free like a sum of accuracies): best far from equal (w_a ≈ 0.997)",
        {"problem": {"name": "linear_pair", "options": {"scale": 1000.0}}, **LINEAR},
        WEIGHTS_ONLY,
        "val_relative_loss",
        relative_loss,
    ),
    Case(
        "digits",
        "digits_pair (the quickstart's problem, 8 epochs of SGD), the sum of both validation losses; the "
        "weights, the learning rate (log-uniform in [0.01, 0.3]) and the LR schedule (constant, cosine or "
        "warm-up) searched; noisy: best at w_a ≈ 0.9",
        {"problem": "digits_pair", **DIGITS},
        DIGITS_SEARCH,
        "val_total_loss",
        noisy=True,
    ),
    Case(
        "images",
        "digits_images (PNG files decoded per item by DataLoaders, no workers: 128 + 128 training and 60 validation "
        "images of 16x16, a small CNN, 4 epochs of Adam), the sum of both validation losses; the weights and the "
        "learning rate (log-uniform in [0.001, 0.03]) searched; noisy: best at w_a ≈ 0.83, lr ≈ 0.015",
        {
            "problem": {"name": "digits_images", "options": IMAGES_OPTIONS},
            **IMAGES,
            "data": {"num_workers": 0},
        },
        IMAGES_SEARCH,
        "val_total_loss",
        noisy=True,
    ),
]
