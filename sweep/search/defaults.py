"""What a study gets where its file names no sampler or baselines: chosen per search space, from evidence.

``python -m benchmarks.efficiency`` measures the training each way of searching spends until its pick (its
best trial's configuration, scored on fresh seeds) is within 1 % of the best weights (docs/explanation/
search-defaults.md has the figures). What won on the problems it covers — best weights equal, far
from equal, and at the edge of the range:

- **Equal weights first, with the file's own values.** A user's natural baseline, and where the best weights
  often are: the first trial trains equal weights with every other searched value as the file sets it (its
  default where it sets none; the middle of the range where that value is outside it), unless
  ``study.enqueue`` gives baselines of its own (``[]``: none) (:func:`first_points`).
- **A space-filling start on the equal-weights line** (the GP's start-up, :func:`start_design`): after the
  baseline, ``2·d`` more trials at equal weights whose ``d`` other searched values (a learning rate) are
  scrambled Sobol points, then the rest of the start-up as Sobol points over the whole space — instead of
  random points. On the weights + learning-rate case a random start left the GP on a plateau of one-sided
  weights for a dozen trials where the baseline drew a poor learning rate (equal weights looked bad);
  tuning the other values at equal weights first needs a median 40 epochs to 1 % even where the file's own
  learning rate is 65x too low, against 84 for a user's own script (``lr_untuned`` in the benchmark).
- **Optuna's GP sampler for small continuous spaces**, after ``1 + 2·d`` start-up trials for ``d`` searched
  dimensions (the equal-weights trial included, at most Optuna's 10), instead of TPE after 10 random ones
  (:func:`chosen_sampler`). Spaces with categorical or conditional parameters, more than
  :data:`MOST_GP_DIMENSIONS` dimensions or several targets keep TPE, which handles them.

- **No pruner with the GP sampler.** Optuna's ``GPSampler`` fits complete trials only: a trial the median
  pruner stopped teaches it nothing, so it proposes the same point again, and the pruner stops it again —
  the benchmark's studies ended with up to 27 pruned trials in a row at one point, and on the weights +
  learning-rate case the median study never reached 1 % (with no pruner: 10 of 10 did, the other cases'
  figures unchanged). Every other sampler keeps the median pruner (:func:`chosen_pruner`).

An explicit ``study.sampler``, ``study.pruner`` or ``study.enqueue`` always wins.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

from scipy.stats import qmc

from objectives.config import LoopCommon
from sweep.studyfile.samplers import GP, TPE, Median, NoPruner, PrunerConfig, SamplerConfig
from sweep.studyfile.search_checks import not_drawable
from sweep.studyfile.sections import StudySection
from sweep.studyfile.space import (
    CategoricalParam,
    FloatParam,
    IntParam,
    SearchSection,
    Spec,
    get_path,
    ratio_names,
    searched_names,
)

MOST_GP_DIMENSIONS = 8  # past this, a GP's fit costs more per trial than it saves (Optuna's own guidance)
MOST_STARTUP = 10  # Optuna's default number of start-up trials


def chosen_sampler(study: StudySection, search: SearchSection, objective: LoopCommon) -> SamplerConfig:
    """The study's sampler: ``study.sampler`` when given, else the one its search space gets by default.

    Args:
        study: The study file's ``study`` section.
        search: Its ``search`` section.
        objective: The loop's config (its loss terms name the weights' parameters).
    """
    if study.sampler is not None:
        return study.sampler
    dims = len(searched_names(search, objective.loss_terms))
    conditional = search.weights.when is not None or any(p.when is not None for p in search.params.values())
    categorical = any(isinstance(p, CategoricalParam) for p in search.params.values())
    if study.multi_objective or conditional or categorical or not 0 < dims <= MOST_GP_DIMENSIONS:
        return TPE()
    return GP(type="gp", n_startup_trials=min(MOST_STARTUP, 1 + 2 * dims))


def chosen_pruner(study: StudySection, sampler: SamplerConfig) -> PrunerConfig:
    """The study's pruner: ``study.pruner`` when given; else none for a multi-objective study (Optuna cannot
    prune one) or with the GP sampler (it learns nothing from pruned trials, see the module's docstring),
    else the median pruner (5 start-up trials, 2 warm-up epochs).

    Args:
        study: The study file's ``study`` section.
        sampler: The sampler the study runs with (:func:`chosen_sampler`).
    """
    if study.pruner is not None:
        return study.pruner
    if study.multi_objective or sampler.type == "gp":
        return NoPruner(type="none")
    return Median(type="median", n_startup_trials=5, n_warmup_steps=2)


def first_points(study: StudySection, search: SearchSection, objective: LoopCommon) -> tuple[dict[str, Any], ...]:
    """The points tried before the sampler's own: ``study.enqueue`` when given; else the baseline — equal loss
    weights, every other searched value as the file sets it — followed, where the study gets the default GP
    sampler, by the rest of its start-up design (:func:`start_design`). None when the weights are not searched,
    are conditional, or their range leaves equal weights out, and none for the grid sampler (it walks its grid).
    """
    if study.enqueue is not None:  # the file's own baselines; [] for none
        return tuple(dict(point) for point in study.enqueue)
    w = search.weights
    if w.when is not None or (study.sampler is not None and study.sampler.type == "grid"):
        return ()
    terms = objective.loss_terms
    if w.parametrization == "log_ratio" and w.low <= 0.0 <= w.high:
        equal = {name: 0.0 for name in ratio_names(terms)}
    elif w.parametrization == "simplex":
        equal = {f"weights.u{i}": 0.5 for i in range(len(terms))}  # equal draws: equal weights
    else:
        return ()
    values = objective.model_dump(mode="json")
    others = {path: spec for path, spec in search.params.items() if spec.when is None}
    baseline = {**{path: _as_written(spec, *get_path(values, path)) for path, spec in others.items()}, **equal}
    chosen = chosen_sampler(study, search, objective)
    if study.sampler is not None or chosen.type != "gp":  # an explicit sampler, or TPE's own random start
        return (baseline,)
    n = min(chosen.n_startup_trials, study.n_trials) - 1  # a study shorter than its start-up leaves none queued
    return (baseline, *start_design(search, objective, equal, n, study.seed))


def start_design(
    search: SearchSection, objective: LoopCommon, equal: dict[str, float], n: int, seed: int
) -> list[dict[str, Any]]:
    """``n`` start-up points after the baseline: first ``2·d`` at equal weights (``equal``), the ``d`` other
    searched values from a scrambled Sobol sequence, then Sobol points over the whole space — every value one
    the search could draw (bounds inclusive, on an int's or step's grid).

    Args:
        search: The search space (continuous and unconditional: the GP's).
        objective: The loop's config (its loss terms name the weights' parameters).
        equal: The weights' parameters at equal weights.
        n: How many points.
        seed: The study's seed: the same study file gives the same design.
    """
    params = dict(search.params)
    w = search.weights
    low, high = (w.low, w.high) if w.parametrization == "log_ratio" else (0.0, 1.0)
    weights: dict[str, Spec] = {name: FloatParam(type="float", low=low, high=high) for name in equal}
    on_line = min(n, 2 * len(params)) if params else 0
    points: list[dict[str, Any]] = []
    if on_line:  # 1. the other values at equal weights: the baseline's weights, tuned first
        for u in _sobol(len(params), on_line, seed):
            points.append({**{p: _at(spec, x) for (p, spec), x in zip(params.items(), u, strict=True)}, **equal})
    if n > on_line:  # 2. then the whole space, weights included
        space = {**params, **weights}
        for u in _sobol(len(space), n - on_line, seed + 1):
            points.append({p: _at(spec, x) for (p, spec), x in zip(space.items(), u, strict=True)})
    return points


def _sobol(dims: int, n: int, seed: int) -> list[list[float]]:
    """The first ``n`` points of a scrambled Sobol sequence in ``[0, 1)^dims`` (scipy warns that ``n`` not a
    power of two loses balance: a start-up's first points are still better spread than random ones)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return qmc.Sobol(dims, scramble=True, seed=seed).random(n).tolist()


def _as_written(spec: Spec, found: bool, value: Any) -> Any:
    """The file's value of a searched parameter, or the middle of its range where the search could not draw it."""
    return value if found and not_drawable(spec, value) is None else _at(spec, 0.5)


def _at(spec: Spec, u: float) -> Any:
    """The value a fraction ``u`` of the way through a parameter's range (log scale where it is log), on its
    grid: the choice ``u`` falls in for a categorical."""
    if isinstance(spec, CategoricalParam):
        return spec.choices[min(int(u * len(spec.choices)), len(spec.choices) - 1)]
    lo, hi = spec.low, spec.high
    x = math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo))) if spec.log else lo + u * (hi - lo)
    step = spec.step
    if step is None:
        return min(hi, max(lo, x))
    k = min(round((x - lo) / step), math.floor((hi - lo) / step + 1e-9))  # the grid's last point may be below high
    return lo + k * step if isinstance(spec, IntParam) else float(f"{lo + k * step:.12g}")
