"""Samplers and pruners built from their study-file sections (Optuna's own classes, sweep.search.builders)."""

from __future__ import annotations

import math

import optuna
import pytest

from sweep.search.builders import build_pruner, build_sampler
from sweep.studyfile.space import grid_space, sample
from tests.sweep.studyfile.test_space import study_file

# A 2-D space (CMA-ES needs two dimensions): the loss-weight ratio and the learning rate.
SPACE = {
    "weights": {"parametrization": "log_ratio"},
    "params": {"optimizer.lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True}},
}


def _points(sampler: optuna.samplers.BaseSampler, sf: object, n_trials: int = 4) -> list[dict[str, float]]:
    """Run a study of a fixed, deterministic objective on the study file's search space.

    Args:
        sampler: The sampler the study uses.
        sf: The parsed study file (its ``search`` section and loss weights).
        n_trials: How many trials to run.

    Returns:
        Every trial's parameters, in trial order.
    """

    def objective(trial: optuna.Trial) -> float:
        values, weights = sample(trial, sf.search, sf.objective)
        return (weights[0] - 0.3) ** 2 + (math.log10(values["optimizer.lr"]) + 2.0) ** 2

    study = optuna.create_study(sampler=sampler)
    study.optimize(objective, n_trials=n_trials)
    assert len(study.trials) == n_trials
    return [t.params for t in study.trials]


def _settings(sampler: optuna.samplers.BaseSampler) -> dict[str, object]:
    """The plain values (numbers, flags, names) an Optuna sampler keeps, e.g. from its constructor's arguments.

    Args:
        sampler: A freshly built sampler (no trials run yet: some samplers cache study state).

    Returns:
        Its attributes whose values are numbers, booleans, strings or ``None``, by name.
    """
    return {k: v for k, v in vars(sampler).items() if isinstance(v, bool | int | float | str | type(None))}


# Each sampler with its study-file options set; several differ from both the file's and Optuna's defaults.
SAMPLERS = [
    ("tpe", optuna.samplers.TPESampler, {"n_startup_trials": 2, "n_ei_candidates": 3, "multivariate": False,
                                          "group": False, "constant_liar": False}),
    ("random", optuna.samplers.RandomSampler, {}),
    ("gp", optuna.samplers.GPSampler, {"n_startup_trials": 2, "deterministic_objective": True}),
    ("cmaes", optuna.samplers.CmaEsSampler, {"n_startup_trials": 2, "sigma0": 0.5, "popsize": 3,
                                              "use_separable_cma": True, "lr_adapt": False}),
    ("qmc", optuna.samplers.QMCSampler, {"qmc_type": "halton", "scramble": True}),
    ("nsga2", optuna.samplers.NSGAIISampler, {"population_size": 2, "mutation_prob": 0.5, "crossover_prob": 0.5,
                                               "swapping_prob": 0.3}),
]  # fmt: skip


@pytest.mark.parametrize(("section", "cls", "options"), SAMPLERS, ids=[case[0] for case in SAMPLERS])
def test_build_sampler(section: str, cls: type, options: dict[str, object]) -> None:
    """Every sampler name builds Optuna's own class with the study file's options and the given seed.

    The built sampler keeps the same settings as ``cls(seed=..., **options)`` and proposes exactly the
    same points; Optuna's defaults would propose other points within these trials, so an option that
    did not reach the sampler shows. The same seed replays the points, another seed changes them.
    """
    sf = study_file(SPACE, sampler={"type": section, **options})
    expected_kwargs = {"warn_asynchronous_seeding": False} if cls is optuna.samplers.QMCSampler else {}
    built = build_sampler(sf.study.sampler, 7)
    assert type(built) is cls
    expected = cls(seed=7, **expected_kwargs, **options)
    assert _settings(built) == _settings(expected)
    points = _points(built, sf)
    assert points == _points(expected, sf)
    if options:  # the test can tell a dropped option: Optuna's defaults propose other points
        assert _points(cls(seed=7, **expected_kwargs), sf) != points
    assert _points(build_sampler(sf.study.sampler, 7), sf) == points
    assert _points(build_sampler(sf.study.sampler, 8), sf) != points


def test_seeded_sampler_is_deterministic() -> None:
    """Same seed, same points."""
    sf = study_file({"weights": {"parametrization": "log_ratio"}}, sampler="random")
    runs = []
    for _ in range(2):
        study = optuna.create_study(
            sampler=build_sampler(sf.study.sampler, 123, grid_space(sf.search, sf.objective.loss_terms))
        )
        study.optimize(lambda t: sample(t, sf.search, sf.objective)[1][0], n_trials=3)
        runs.append([t.params for t in study.trials])
    assert runs[0] == runs[1]


@pytest.mark.parametrize(
    ("pruner", "cls"),
    [
        (None, optuna.pruners.MedianPruner),
        ("none", optuna.pruners.NopPruner),
        ({"type": "hyperband", "reduction_factor": 2}, optuna.pruners.HyperbandPruner),
        ({"type": "successive_halving"}, optuna.pruners.SuccessiveHalvingPruner),
        ({"type": "patient", "patience": 1}, optuna.pruners.PatientPruner),
    ],
)
def test_build_pruner(pruner: object, cls: type) -> None:
    """Pruner names build Optuna's classes; the default is the median pruner."""
    study = {} if pruner is None else {"pruner": pruner}
    sf = study_file({}, **study)
    assert isinstance(build_pruner(sf.study.pruner, sf.study.multi_objective), cls)


def test_multi_objective_defaults_to_no_pruning() -> None:
    """Optuna cannot prune multi-objective studies, so the default there is no pruner."""
    sf = study_file({}, metrics=["val_a_loss", "val_b_loss"])
    assert isinstance(build_pruner(sf.study.pruner, sf.study.multi_objective), optuna.pruners.NopPruner)
