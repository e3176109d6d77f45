"""What a study gets where its file names no sampler or baselines: chosen per search space, from evidence.

``python -m benchmarks.efficiency`` measures the training each way of searching spends until its pick (its
best trial's configuration, scored on fresh seeds) is within 1 % of the best weights (docs/explanation/
search-defaults.md has the figures). Two things won on every problem it covers — best weights equal, far
from equal, and at the edge of the range:

- **Equal weights first.** A user's natural baseline, and where the best weights often are: the first trial
  trains them (:func:`first_points`), unless ``study.enqueue`` gives baselines of its own (``[]``: none).
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

from typing import Any

from objectives.config import LoopCommon
from sweep.studyfile.samplers import GP, TPE, Median, NoPruner, PrunerConfig, SamplerConfig
from sweep.studyfile.sections import StudySection
from sweep.studyfile.space import CategoricalParam, SearchSection, ratio_names, searched_names

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
    """The points tried before the sampler's own: ``study.enqueue`` when given, else equal loss weights (the
    other searched values sampled as usual) — none when the weights are not searched, are conditional, or
    their range leaves equal weights out, and none for the grid sampler (it walks its grid)."""
    if study.enqueue is not None:  # the file's own baselines; [] for none
        return tuple(dict(point) for point in study.enqueue)
    w = search.weights
    if w.when is not None or (study.sampler is not None and study.sampler.type == "grid"):
        return ()
    terms = objective.loss_terms
    if w.parametrization == "log_ratio" and w.low <= 0.0 <= w.high:
        return ({name: 0.0 for name in ratio_names(terms)},)
    if w.parametrization == "simplex":
        return ({f"weights.u{i}": 0.5 for i in range(len(terms))},)  # equal draws: equal weights
    return ()
