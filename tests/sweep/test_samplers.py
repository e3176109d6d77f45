"""Samplers and pruners built from their study-file sections (Optuna's own classes)."""

from __future__ import annotations

import optuna
import pytest

from sweep.samplers import build_pruner, build_sampler
from sweep.space import grid_space, sample
from tests.sweep.test_space import study_file


@pytest.mark.parametrize(
    ("sampler", "cls"),
    [
        ({"type": "tpe"}, optuna.samplers.TPESampler),
        ({"type": "random"}, optuna.samplers.RandomSampler),
        ({"type": "gp"}, optuna.samplers.GPSampler),
        ({"type": "cmaes"}, optuna.samplers.CmaEsSampler),
        ({"type": "qmc"}, optuna.samplers.QMCSampler),
        ({"type": "nsga2", "population_size": 4}, optuna.samplers.NSGAIISampler),
    ],
)
def test_build_sampler(sampler: dict, cls: type) -> None:
    """Every sampler name builds Optuna's own class and runs a few trials on the weight space."""
    sf = study_file({"weights": {"parametrization": "log_ratio"}}, sampler=sampler)
    built = build_sampler(sf.study.sampler, 0, grid_space(sf.search, len(sf.objective.weights)))
    assert isinstance(built, cls)
    study = optuna.create_study(sampler=built)
    study.optimize(lambda t: sample(t, sf.search, sf.objective.weights)[1][0], n_trials=4)
    assert len(study.trials) == 4


def test_seeded_sampler_is_deterministic() -> None:
    """Same seed, same points."""
    sf = study_file({"weights": {"parametrization": "log_ratio"}}, sampler="random")
    runs = []
    for _ in range(2):
        study = optuna.create_study(
            sampler=build_sampler(sf.study.sampler, 123, grid_space(sf.search, len(sf.objective.weights)))
        )
        study.optimize(lambda t: sample(t, sf.search, sf.objective.weights)[1][0], n_trials=3)
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
