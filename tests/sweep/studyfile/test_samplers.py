"""The samplers' and pruners' study-file schemas (sweep.studyfile.samplers): one per Optuna class, chosen by
``type`` (or the type's name alone), Optuna's option names and bounds, nothing else accepted. The classes they
build are ``tests/sweep/search/test_builders.py``'s."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest

from sweep.studyfile.samplers import NSGA2, TPE, Hyperband, Patient, PrunerConfig, SamplerConfig, type_shorthand

SAMPLER: Any = pydantic.TypeAdapter(SamplerConfig)
PRUNER: Any = pydantic.TypeAdapter(PrunerConfig)


@pytest.mark.parametrize("name", ["tpe", "random", "gp", "cmaes", "qmc", "grid", "nsga2"])
def test_every_sampler_is_chosen_by_its_type_alone(name: str) -> None:
    assert SAMPLER.validate_python(type_shorthand(name)).type == name


@pytest.mark.parametrize("name", ["none", "median", "hyperband", "successive_halving"])
def test_every_pruner_without_required_options_is_chosen_by_its_type_alone(name: str) -> None:
    assert PRUNER.validate_python(type_shorthand(name)).type == name


def test_the_shorthand_leaves_a_mapping_as_it_is() -> None:
    given = {"type": "tpe", "n_startup_trials": 3}
    assert type_shorthand(given) is given and type_shorthand(None) is None


def test_tpe_is_the_one_sampler_whose_type_may_be_left_out() -> None:
    assert TPE() == TPE(type="tpe")
    with pytest.raises(pydantic.ValidationError):
        SAMPLER.validate_python({"n_startup_trials": 3})  # no type: which sampler?


@pytest.mark.parametrize(
    ("config", "adapter"),
    [
        ({"type": "tpe", "n_startup": 3}, "sampler"),  # a misspelt option is refused, not ignored
        ({"type": "random", "n_startup_trials": 3}, "sampler"),  # an option this sampler does not have
        ({"type": "annealing"}, "sampler"),
        ({"type": "median", "patience": 2}, "pruner"),
        ({"type": "nsga2", "population_size": 1}, "sampler"),
        ({"type": "nsga2", "crossover_prob": 1.5}, "sampler"),
        ({"type": "nsga2", "mutation_prob": -0.1}, "sampler"),
        ({"type": "hyperband", "reduction_factor": 1}, "pruner"),
        ({"type": "successive_halving", "reduction_factor": 1}, "pruner"),
        ({"type": "patient"}, "pruner"),  # patience is required
        ({"type": "patient", "patience": 1, "wrapped": {"type": "patient", "patience": 1}}, "pruner"),
        ({"type": "tpe", "n_startup_trials": -1}, "sampler"),
    ],
)
def test_bad_options_are_refused(config: dict[str, Any], adapter: str) -> None:
    with pytest.raises(pydantic.ValidationError):
        (SAMPLER if adapter == "sampler" else PRUNER).validate_python(config)


def test_bounds_are_inclusive() -> None:
    nsga = NSGA2(type="nsga2", population_size=2, mutation_prob=1.0, crossover_prob=0.0, swapping_prob=1.0)
    assert (nsga.population_size, nsga.mutation_prob, nsga.crossover_prob) == (2, 1.0, 0.0)
    assert Hyperband(type="hyperband", reduction_factor=2).reduction_factor == 2


def test_a_patient_pruner_wraps_another() -> None:
    p = PRUNER.validate_python({"type": "patient", "patience": 2, "wrapped": {"type": "median"}})
    assert isinstance(p, Patient) and p.wrapped is not None and p.wrapped.type == "median"
