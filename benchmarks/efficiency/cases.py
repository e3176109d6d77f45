"""The problems the efficiency benchmark searches, and how good a configuration is on fresh seeds.

A case is a study file's ``objective`` and ``search`` (sweep's parametrization) and its target. Its best loss
weights range from equal to far from equal, so a method that favours equal weights cannot win by that alone.

A configuration's *quality* is its target's mean over :data:`FRESH_SEEDS` fresh seeds (model initialisation and
batch order; the data stay the same), never the value of the one trial that found it: a search that chases a
lucky seed is chasing noise. A case's *reference* is the best quality on a dense grid of its space
(:func:`reference`), computed once and kept in ``references.json`` beside this file (``python -m
benchmarks.efficiency --references`` regenerates it).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from objectives.config import LoopCommon
from objectives.helpers import weights_from_log10_ratios
from objectives.loops import LOOPS
from objectives.problems import build_problem
from sweep.studyfile.config import StudyFile, parse_study
from sweep.studyfile.space import resolve

FRESH_SEEDS = 5  # seeds a configuration's quality is averaged over
REFERENCES = Path(__file__).with_name("references.json")
GRID_STEP = 0.1  # the reference grid over log10(w_a / w_b)

LINEAR = {"epochs": 8, "batch_size": 64, "data_seed": 0, "optimizer": {"type": "adam", "lr": 0.05}}


@dataclass(frozen=True)
class Case:
    """One problem as a study would search it.

    Args:
        name: The case's name in the tables.
        summary: What it is and where its best weights lie.
        objective: The study file's ``objective`` (``data_seed`` fixed: every study sees the same data).
        search: The study file's ``search`` in sweep's parametrization.
        metric: The target, minimised.
    """

    name: str
    summary: str
    objective: Mapping[str, Any]
    search: Mapping[str, Any]
    metric: str
    _quality: dict[str, float] = field(default_factory=dict, compare=False, repr=False)

    @cached_property
    def study_file(self) -> StudyFile:
        doc = {"study": {"name": self.name, "metric": self.metric}, "objective": dict(self.objective)}
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
        return LOOPS[cfg.loop].train(cfg, report or (lambda _e, _m: None), problem=self.problem)

    def quality(self, sampled: Mapping[str, Any], weights: tuple[float, ...]) -> float:
        """The target's mean over :data:`FRESH_SEEDS` fresh seeds (cached per configuration)."""
        key = json.dumps([sorted(sampled.items()), weights])
        if key not in self._quality:
            values = [self.train(self.config(sampled, weights, 1_000_003 + i))[self.metric] for i in range(FRESH_SEEDS)]
            self._quality[key] = statistics.fmean(values)
        return self._quality[key]


def _ratio_grid(low: float, high: float) -> list[float]:
    n = round((high - low) / GRID_STEP)
    return [round(low + i * GRID_STEP, 10) for i in range(n + 1)]


def reference(case: Case) -> dict[str, Any]:
    """The best fresh-seed quality on a grid over log10(w_a / w_b) (step :data:`GRID_STEP`, sweep's range)."""
    w = case.study_file.search.weights
    rows = [(r, case.quality({}, _two(r))) for r in _ratio_grid(w.low, w.high)]
    r, best = min(rows, key=lambda row: row[1])
    return {"value": best, "log10_ratio": r, "w_a": _two(r)[0], "grid": rows}


def references(refresh: bool = False) -> dict[str, dict[str, Any]]:
    """Every case's reference: from ``references.json``, computed (and written) where missing or ``refresh``."""
    stored = json.loads(REFERENCES.read_text()) if REFERENCES.exists() and not refresh else {}
    changed = False
    for case in CASES:
        if case.name not in stored or stored[case.name].get("objective") != dict(case.objective):
            stored[case.name] = {**reference(case), "objective": dict(case.objective), "metric": case.metric}
            changed = True
    if changed:
        REFERENCES.write_text(json.dumps(stored, indent=1) + "\n")
    return stored


def _two(log10_ratio: float) -> tuple[float, float]:
    return weights_from_log10_ratios([log10_ratio])  # type: ignore[return-value]


WEIGHTS_ONLY = {"weights": {"parametrization": "log_ratio", "low": -4, "high": 4}}

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
]
