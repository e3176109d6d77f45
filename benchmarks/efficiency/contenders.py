"""The ways to search a case's loss weights that the benchmark compares, and one study of each.

Every contender trains the same case with the same loop, one trial after another, in this process; they
differ only in what they sample, with which sampler and pruner, and what they try first. Trial ``n`` of a
study seeded ``s`` trains with the model/batch seed sweep would give it (``derive_seed(s, "trial", n)``).
The toolkit's own cost per trial (MLflow, storage) is measured by ``benchmarks.overhead``, not here.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import optuna

from benchmarks.efficiency.cases import Case
from objectives.helpers import derive_seed
from sweep.search.builders import build_pruner, build_sampler
from sweep.search.defaults import chosen_sampler, first_points
from sweep.studyfile.samplers import TPE
from sweep.studyfile.space import sample

Suggest = Callable[[optuna.Trial, Case], tuple[dict[str, Any], tuple[float, ...]]]


def _sweep_space(trial: optuna.Trial, case: Case) -> tuple[dict[str, Any], tuple[float, ...]]:
    """sweep's parametrization of the case's search (``weights.log10_ratio`` ...)."""
    sampled, weights = sample(trial, case.study_file.search, case.study_file.objective)
    return dict(sampled), weights


def _raw_weights(trial: optuna.Trial, case: Case) -> tuple[dict[str, Any], tuple[float, ...]]:
    """What a user writes without sweep: each loss's weight its own number in [0, 1], as given to the loss sum."""
    return {}, (trial.suggest_float("w_a", 0.0, 1.0), trial.suggest_float("w_b", 0.0, 1.0))


@dataclass(frozen=True)
class Contender:
    """One way to search.

    Args:
        name: Its name in the tables.
        summary: What it is.
        sampler: The sampler for a study seeded with the argument.
        pruner: The pruner (``None``: none).
        suggest: What a trial samples: ``(sampled objective values, loss weights)``.
        first: Points tried before the sampler's own (Optuna's ``enqueue_trial``), for a study seeded with the
            argument.
        most: Trials after which it stops (a grid: once it has been walked); ``None``: the study's budget.
    """

    name: str
    summary: str
    sampler: Callable[[int], optuna.samplers.BaseSampler]
    pruner: Callable[[], optuna.pruners.BasePruner] | None = None
    suggest: Suggest = _sweep_space
    first: Callable[[int], Sequence[dict[str, Any]]] = lambda _seed: ()
    most: int | None = None


@dataclass
class Step:
    """One trial of a study, and where the study stands after it."""

    epochs: int  # trained in this trial (a pruned one: until it was stopped)
    seconds: float  # its wall time: asking the sampler, training, telling
    value: float | None  # its target (None: pruned or failed)
    pick: tuple[dict[str, Any], tuple[float, ...]] | None  # the study's best configuration after it


def run_study(case: Case, contender: Contender, seed: int, n_trials: int) -> list[Step]:
    """``n_trials`` trials of ``contender`` on ``case``, the study seeded ``seed``."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    pruner = contender.pruner() if contender.pruner else optuna.pruners.NopPruner()
    study = optuna.create_study(direction="minimize", sampler=contender.sampler(seed), pruner=pruner)
    for point in contender.first(seed):
        study.enqueue_trial(dict(point))
    steps: list[Step] = []
    configs: dict[int, tuple[dict[str, Any], tuple[float, ...]]] = {}
    for number in range(min(n_trials, contender.most or n_trials)):
        start = time.perf_counter()
        trial = study.ask()
        sampled, weights = contender.suggest(trial, case)
        configs[trial.number] = (sampled, weights)
        epochs = 0

        def report(epoch: int, metrics: dict[str, float], trial: optuna.Trial = trial) -> None:
            nonlocal epochs
            epochs += 1
            trial.report(metrics[case.metric], epoch)
            if trial.should_prune():
                raise optuna.TrialPruned

        value: float | None = None
        if sum(weights) <= 0:  # two raw weights of 0: no loss to train on
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            try:
                value = case.train(case.config(sampled, weights, derive_seed(seed, "trial", number)), report)[
                    case.metric
                ]
                study.tell(trial, value)
            except optuna.TrialPruned:
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        pick = configs[study.best_trial.number] if complete else None
        steps.append(Step(epochs, time.perf_counter() - start, value, pick))
    return steps


MEDIAN = lambda: build_pruner(None)  # noqa: E731  (sweep's default pruner, before and after)
GRID_W_A = [round(0.1 * i, 1) for i in range(1, 10)]  # 0.1 ... 0.9


def _grid_weights(trial: optuna.Trial, case: Case) -> tuple[dict[str, Any], tuple[float, ...]]:
    """The seed articles' search: w_a on a grid, w_b = 1 - w_a."""
    w_a = trial.suggest_float("w_a", 0.0, 1.0)
    return {}, (w_a, round(1.0 - w_a, 10))


def _grid_order(seed: int) -> list[dict[str, Any]]:
    """Every grid point once, in a seeded random order (Optuna's grid sampler's own order)."""
    order = list(GRID_W_A)
    random.Random(seed).shuffle(order)
    return [{"w_a": w} for w in order]


def sweep_defaults(case: Case) -> Contender:
    """What a study file naming no sampler, pruner or baselines gets from sweep now (sweep.search.defaults)."""
    sf = case.study_file
    chosen = chosen_sampler(sf.study, sf.search, sf.objective)
    return Contender(
        "sweep",
        f"sweep's shipped defaults: {chosen.type} sampler chosen by the space, equal weights first, median pruner",
        lambda seed: build_sampler(chosen, seed),
        MEDIAN,
        first=lambda _seed: first_points(sf.study, sf.search, sf.objective),
    )


CONTENDERS = [
    Contender(
        "user",
        "what a user writes without sweep: two raw weights in [0, 1], Optuna's default TPE, no pruning",
        lambda seed: optuna.samplers.TPESampler(seed=seed),
        suggest=_raw_weights,
    ),
    Contender(
        "grid",
        "what the seed articles do: w_a = 0.1, 0.2, ... 0.9 (w_b = 1 - w_a) in a seeded random order, no pruning",
        optuna.samplers.RandomSampler,  # never asked: every trial is a queued grid point
        suggest=_grid_weights,
        first=_grid_order,
        most=len(GRID_W_A),
    ),
    Contender(
        "optuna_log_ratio",
        "Optuna's default TPE over sweep's log-ratio parametrization, no pruning",
        lambda seed: optuna.samplers.TPESampler(seed=seed),
    ),
    Contender(
        "sweep_before",
        "sweep's shipped defaults before this work: TPE, 10 random start-up trials, median pruner (5, 2)",
        lambda seed: build_sampler(TPE(), seed),
        MEDIAN,
    ),
]
NAMES = [*(c.name for c in CONTENDERS), "sweep"]


def contenders_for(case: Case, names: Sequence[str]) -> list[Contender]:
    """The contenders ``names`` for ``case`` (sweep's defaults depend on the case's search space)."""
    every = [*CONTENDERS, sweep_defaults(case)]
    return [c for c in every if c.name in names]
