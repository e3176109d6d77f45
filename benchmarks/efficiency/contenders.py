"""The ways to search a case's loss weights that the benchmark compares, and one study of each.

Every contender trains the same case with the same loop, one trial after another, in this process; they
differ only in what they sample, with which sampler and pruner, and what they try first. Trial ``n`` of a
study seeded ``s`` trains with the model/batch seed sweep would give it (``derive_seed(s, "trial", n)``); a
contender that re-evaluates its top trials trains them again with the seeds ``python -m sweep.evaluate`` gives a
study seeded ``s`` (:func:`sweep.results.evaluation.evaluation_seeds`).
The toolkit's own cost per trial (MLflow, storage) is measured by ``benchmarks.overhead``, not here.
"""

from __future__ import annotations

import itertools
import math
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import optuna

from benchmarks.efficiency.cases import Case
from objectives.helpers import derive_seed, weights_from_log10_ratios
from sweep.results.evaluation import evaluation_seeds
from sweep.search.builders import build_pruner, build_sampler
from sweep.search.defaults import chosen_pruner, chosen_sampler, first_points
from sweep.studyfile.samplers import TPE
from sweep.studyfile.space import CategoricalParam, FloatParam, active, sample, suggest

Suggest = Callable[[optuna.Trial, Case], tuple[dict[str, Any], tuple[float, ...]]]


def _sweep_space(trial: optuna.Trial, case: Case) -> tuple[dict[str, Any], tuple[float, ...]]:
    """sweep's parametrization of the case's search (``weights.log10_ratio`` ...)."""
    sampled, weights = sample(trial, case.study_file.search, case.study_file.objective)
    return dict(sampled), weights


def _params(trial: optuna.Trial, case: Case) -> dict[str, Any]:
    """The case's searched values other than the weights, as a user's script would sample them: the same
    ``trial.suggest_*`` call per value (a learning rate log-uniform)."""
    sampled: dict[str, Any] = {}
    for path, spec in case.study_file.search.params.items():
        if active(spec, sampled):
            sampled[path] = suggest(trial, path, spec)
    return sampled


def _raw_weights(trial: optuna.Trial, case: Case) -> tuple[dict[str, Any], tuple[float, ...]]:
    """What a user writes without sweep: each loss's weight its own number in [0, 1], as given to the loss sum."""
    sampled = _params(trial, case)
    return sampled, (trial.suggest_float("w_a", 0.0, 1.0), trial.suggest_float("w_b", 0.0, 1.0))


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
        repeats: Seeds each trial trains (``objective.repeats``), its value their mean; charged ``repeats`` ×
            the epochs.
        reevaluate: ``(K, N)``: the pick is not the best trial but the best mean, over ``N`` evaluation seeds
            (``python -m sweep.evaluate --top K --seeds N``'s), of the study's current top ``K`` trials; each trial
            is retrained on them once, when it first enters the top ``K``, and charged at that step. ``None``: the
            best trial.
    """

    name: str
    summary: str
    sampler: Callable[[int], optuna.samplers.BaseSampler]
    pruner: Callable[[], optuna.pruners.BasePruner] | None = None
    suggest: Suggest = _sweep_space
    first: Callable[[int], Sequence[dict[str, Any]]] = lambda _seed: ()
    most: int | None = None
    repeats: int = 1
    reevaluate: tuple[int, int] | None = None


Config = tuple[dict[str, Any], tuple[float, ...]]  # a trial's sampled values and loss weights


@dataclass
class Step:
    """One trial of a study, and where the study stands after it."""

    epochs: int  # trained in this trial (a pruned one: until it was stopped), and in re-evaluations it caused
    seconds: float  # its wall time: asking the sampler, training, telling
    value: float | None  # its target (None: pruned or failed)
    pick: Config | None  # the study's best configuration after it


def reevaluated_pick(
    case: Case, study: optuna.Study, configs: dict[int, Config], seed: int, top: tuple[int, int],
    means: dict[int, float],
) -> tuple[Config, int]:  # fmt: skip
    """The configuration with the best re-evaluated mean among the study's ``K`` best complete trials (ordered as
    ``sweep.evaluate`` orders them: value, then number), and the epochs spent re-evaluating now.

    Args:
        case: The case (its target is what a re-evaluation averages).
        study: The study (at least one complete trial).
        configs: Each trial's configuration, by number.
        seed: The study's seed: the evaluation seeds are ``evaluation_seeds(seed, N)``.
        top: ``(K, N)``.
        means: The re-evaluated means so far, by trial number; updated (a trial is retrained once).
    """
    k, n = top
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    best = sorted(complete, key=lambda t: (t.value, t.number))[:k]
    epochs = 0

    def count(_epoch: int, _metrics: dict[str, float]) -> None:
        nonlocal epochs
        epochs += 1

    for trial in best:
        # 1. Once per trial, when it first enters the top K: its mean does not change afterwards.
        if trial.number not in means:
            runs = [case.train(case.config(*configs[trial.number], s), count) for s in evaluation_seeds(seed, n)]
            means[trial.number] = statistics.fmean(case.value(m) for m in runs)
    chosen = min(best, key=lambda t: (means[t.number], t.number))
    return configs[chosen.number], epochs


def run_study(case: Case, contender: Contender, seed: int, n_trials: int) -> list[Step]:
    """``n_trials`` trials of ``contender`` on ``case``, the study seeded ``seed``."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    pruner = contender.pruner() if contender.pruner else optuna.pruners.NopPruner()
    study = optuna.create_study(direction="minimize", sampler=contender.sampler(seed), pruner=pruner)
    for point in contender.first(seed):
        study.enqueue_trial(dict(point))
    steps: list[Step] = []
    configs: dict[int, Config] = {}
    means: dict[int, float] = {}  # re-evaluated means, by trial number
    for number in range(min(n_trials, contender.most or n_trials)):
        start = time.perf_counter()
        trial = study.ask()
        sampled, weights = contender.suggest(trial, case)
        configs[trial.number] = (sampled, weights)
        epochs = 0

        def report(epoch: int, metrics: dict[str, float], trial: optuna.Trial = trial) -> None:
            nonlocal epochs
            epochs += contender.repeats  # each epoch of each seed (a group trains them together)
            trial.report(case.value(metrics), epoch)
            if trial.should_prune():
                raise optuna.TrialPruned

        value: float | None = None
        if sum(weights) <= 0:  # two raw weights of 0: no loss to train on
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            try:
                cfg = case.config(sampled, weights, derive_seed(seed, "trial", number))
                value = case.value(case.train(cfg.model_copy(update={"repeats": contender.repeats}), report))
                study.tell(trial, value)
            except optuna.TrialPruned:
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        pick = configs[study.best_trial.number] if complete else None
        if complete and contender.reevaluate is not None:
            pick, spent = reevaluated_pick(case, study, configs, seed, contender.reevaluate, means)
            epochs += spent
        steps.append(Step(epochs, time.perf_counter() - start, value, pick))
    return steps


MEDIAN = lambda: build_pruner(None)  # noqa: E731  (sweep's default pruner, before and after)
GRID_W_A = [round(0.1 * i, 1) for i in range(1, 10)]  # 0.1 ... 0.9


def _grid_weights(trial: optuna.Trial, case: Case) -> tuple[dict[str, Any], tuple[float, ...]]:
    """The seed articles' search: w_a on a grid, w_b = 1 - w_a (and the case's other values on their grid)."""
    sampled = _params(trial, case)
    w_a = trial.suggest_float("w_a", 0.0, 1.0)
    return sampled, (w_a, round(1.0 - w_a, 10))


def grid_values(path: str, spec: Any) -> list[Any]:
    """A user's grid over one searched value: every power of ten in a log-scale float's range (a learning rate:
    0.001, 0.01, 0.1), every choice of a categorical."""
    if isinstance(spec, CategoricalParam):
        return list(spec.choices)
    if isinstance(spec, FloatParam) and spec.log:
        low, high = math.ceil(math.log10(spec.low) - 1e-9), math.floor(math.log10(spec.high) + 1e-9)
        return [float(f"{10.0**k:.6g}") for k in range(low, high + 1)]
    raise ValueError(f"grid contender: no grid for {path} (a log-scale float or a categorical)")


def grid_points(case: Case) -> list[dict[str, Any]]:
    """Every grid point: the case's other values' grids × w_a = 0.1 ... 0.9."""
    params = case.study_file.search.params
    axes = [grid_values(path, spec) for path, spec in params.items()]
    return [{**dict(zip(params, v, strict=True)), "w_a": w} for v in itertools.product(*axes) for w in GRID_W_A]


def user(_case: Case) -> Contender:
    return Contender(
        "user",
        "what a user writes without sweep: two raw weights in [0, 1] (and the other values as searched: a "
        "learning rate log-uniform), Optuna's default TPE, no pruning",
        lambda seed: optuna.samplers.TPESampler(seed=seed),
        suggest=_raw_weights,
    )


def grid(case: Case) -> Contender:
    points = grid_points(case)

    def order(seed: int) -> list[dict[str, Any]]:
        """Every grid point once, in a seeded random order (Optuna's grid sampler's own order)."""
        shuffled = list(points)
        random.Random(seed).shuffle(shuffled)
        return shuffled

    return Contender(
        "grid",
        "what the seed articles do: w_a = 0.1, 0.2, ... 0.9 (w_b = 1 - w_a; × every power of ten of a learning "
        "rate's range) in a seeded random order, no pruning",
        optuna.samplers.RandomSampler,  # never asked: every trial is a queued grid point
        suggest=_grid_weights,
        first=order,
        most=len(points),
    )


def optuna_log_ratio(_case: Case) -> Contender:
    return Contender(
        "optuna_log_ratio",
        "Optuna's default TPE over sweep's log-ratio parametrization, no pruning",
        lambda seed: optuna.samplers.TPESampler(seed=seed),
    )


def sweep_before(_case: Case) -> Contender:
    return Contender(
        "sweep_before",
        "sweep's shipped defaults before this work: TPE, 10 random start-up trials, median pruner (5, 2)",
        lambda seed: build_sampler(TPE(), seed),
        MEDIAN,
    )


def sweep_defaults(case: Case) -> Contender:
    """What a study file naming no sampler, pruner or baselines gets from sweep now (sweep.search.defaults)."""
    sf = case.study_file
    chosen = chosen_sampler(sf.study, sf.search, sf.objective)
    pruner = chosen_pruner(sf.study, chosen)
    return Contender(
        "sweep",
        f"sweep's shipped defaults: {chosen.type} sampler chosen by the space, equal weights first (the file's "
        "other values), a Sobol start, "
        f"{'no' if pruner.type == 'none' else pruner.type} pruner",
        lambda seed: build_sampler(chosen, seed),
        lambda: build_pruner(pruner),
        first=lambda seed: first_points(sf.study.model_copy(update={"seed": seed}), sf.search, sf.objective),
    )


def sweep_repeats(case: Case) -> Contender:
    """sweep's defaults with ``objective.repeats: 3``: each trial's value the mean of 3 seeds, so the search
    compares configurations rather than seeds (:mod:`objectives.repeats`), at 3× the epochs."""
    defaults = sweep_defaults(case)
    return Contender(
        "sweep_repeats",
        "sweep's shipped defaults with objective.repeats: 3 (a trial's value the mean of 3 seeds, trained as one "
        "vectorized group; charged 3x the epochs)",
        defaults.sampler,
        defaults.pruner,
        first=defaults.first,
        repeats=3,
    )


def sweep_reevaluate(case: Case) -> Contender:
    """sweep's defaults, the study naming as its best the top 3 trials' best mean over 3 evaluation seeds (what
    ``python -m sweep.evaluate --top 3 --seeds 3`` retrains), each trial re-evaluated once and charged for it."""
    defaults = sweep_defaults(case)
    return Contender(
        "sweep_reevaluate",
        "sweep's shipped defaults, the pick the best mean over 3 evaluation seeds (sweep.evaluate's) of the current "
        "top 3 trials; each trial retrained once when it enters the top 3, charged 3x its epochs then",
        defaults.sampler,
        defaults.pruner,
        first=defaults.first,
        reevaluate=(3, 3),
    )


HYPERGRAD_TARGET = {"val_a_loss": "a", "val_b_loss": "b"}  # the case's target as hypergrad's reference loss


def one_training(case: Case) -> Contender:
    """No search: one training with ``weighting: hypergrad`` (its default step size) from equal weights, the
    file's other values, its reference loss the case's target (``a`` for val_a_loss, else the total)."""
    terms = case.study_file.objective.loss_terms
    target = HYPERGRAD_TARGET.get(case.metric, "total")

    def suggest(_trial: optuna.Trial, _case: Case) -> tuple[dict[str, Any], tuple[float, ...]]:
        return {"weighting": {"type": "hypergrad", "target": target}}, weights_from_log10_ratios(
            [0.0] * (len(terms) - 1)
        )

    return Contender(
        "one_training",
        f"no search: one training with weighting hypergrad (target {target}, default step size) from equal weights",
        optuna.samplers.RandomSampler,  # never asked: the one trial samples nothing
        suggest=suggest,
        most=1,
    )


# Every contender by name, in the tables' order: one more is one more entry (a function of the case).
CONTENDERS: dict[str, Callable[[Case], Contender]] = {
    "user": user,
    "grid": grid,
    "optuna_log_ratio": optuna_log_ratio,
    "sweep_before": sweep_before,
    "sweep": sweep_defaults,
    "sweep_repeats": sweep_repeats,
    "sweep_reevaluate": sweep_reevaluate,
    "one_training": one_training,
}
NAMES = list(CONTENDERS)


def contenders_for(case: Case, names: Sequence[str]) -> list[Contender]:
    """The contenders ``names`` for ``case``, in the tables' order (grid and sweep's defaults depend on its space)."""
    return [make(case) for name, make in CONTENDERS.items() if name in names]
