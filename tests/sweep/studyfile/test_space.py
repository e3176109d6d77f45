"""The search space maps one-to-one onto Optuna's public suggest API and resolves fixed configs."""

from __future__ import annotations

import itertools
import math

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from objectives.helpers import derive_seed
from sweep.search.builders import build_sampler
from sweep.studyfile.config import parse_study
from sweep.studyfile.space import grid_space, resolve, sample

optuna.logging.set_verbosity(optuna.logging.WARNING)


def study_file(search: dict, **study: object) -> object:
    doc = {
        "study": {"name": "s", **study},
        "objective": {"problem": "linear_pair", "device": "cpu"},
        "search": search,
    }
    return parse_study(doc, "test.yaml")


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"type": "float", "low": 1e-4, "high": 1e-1, "log": True}, FloatDistribution(1e-4, 1e-1, log=True)),
        ({"type": "float", "low": 0.0, "high": 1.0, "step": 0.25}, FloatDistribution(0.0, 1.0, step=0.25)),
        ({"type": "float", "low": 0.5, "high": 0.5}, FloatDistribution(0.5, 0.5)),
        ({"type": "int", "low": 2, "high": 64, "log": True}, IntDistribution(2, 64, log=True)),
        ({"type": "int", "low": 1, "high": 9, "step": 2}, IntDistribution(1, 9, step=2)),
        ({"type": "categorical", "choices": [8, 16, 32]}, CategoricalDistribution([8, 16, 32])),
    ],
)
def test_spec_maps_to_distribution(spec: dict, expected: object) -> None:
    """Each spec becomes exactly the Optuna distribution with the same (inclusive) bounds."""
    path = "optimizer.weight_decay" if spec["type"] == "float" else "epochs"
    if spec["type"] == "categorical":
        path = "batch_size"
    sf = study_file({"params": {path: spec}})
    trial = optuna.create_study().ask()
    sampled, _ = sample(trial, sf.search, sf.objective)
    assert trial.distributions[path] == expected
    assert set(sampled) == {path}


def test_bounds_are_inclusive() -> None:
    """With low == high the only value Optuna can give is the bound itself."""
    sf = study_file({"params": {"epochs": {"type": "int", "low": 7, "high": 7}}})
    sampled, _ = sample(optuna.create_study().ask(), sf.search, sf.objective)
    assert sampled == {"epochs": 7}


def test_conditional_parameter_sampled_only_when_active() -> None:
    """batch_size_b is suggested only in trials where mixing took 'accumulate'."""
    sf = study_file(
        {
            "params": {
                "mixing": {"type": "categorical", "choices": ["cycle", "accumulate"]},
                "batch_size_b": {"type": "int", "low": 8, "high": 64, "when": {"mixing": "accumulate"}},
            }
        }
    )
    off, _ = sample(optuna.trial.FixedTrial({"mixing": "cycle"}), sf.search, sf.objective)
    on, _ = sample(optuna.trial.FixedTrial({"mixing": "accumulate", "batch_size_b": 16}), sf.search, sf.objective)
    assert off == {"mixing": "cycle"}
    assert on == {"mixing": "accumulate", "batch_size_b": 16}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(20):
        trial = study.ask()
        values, _ = sample(trial, sf.search, sf.objective)
        assert ("batch_size_b" in trial.params) == (values["mixing"] == "accumulate")
        study.tell(trial, 0.0)


def test_log_ratio_weights() -> None:
    """weights.log10_ratio = r gives (10^r, 1) / (10^r + 1) and is sampled on [low, high]."""
    sf = study_file({"weights": {"parametrization": "log_ratio", "low": -4, "high": 4}})
    _, weights = sample(optuna.trial.FixedTrial({"weights.log10_ratio": 1.0}), sf.search, sf.objective)
    assert weights == pytest.approx((10 / 11, 1 / 11))
    trial = optuna.create_study().ask()
    sample(trial, sf.search, sf.objective)
    assert trial.distributions["weights.log10_ratio"] == FloatDistribution(-4, 4)


def test_simplex_weights_are_flat_dirichlet() -> None:
    """Simplex weights are -log(u_i) normalised, from one U(0,1) per loss (Optuna FAQ recipe)."""
    sf = study_file({"weights": {"parametrization": "simplex"}})
    _, weights = sample(optuna.trial.FixedTrial({"weights.u0": 0.2, "weights.u1": 0.7}), sf.search, sf.objective)
    a, b = -math.log(0.2), -math.log(0.7)
    assert weights == pytest.approx((a / (a + b), b / (a + b)))


def test_fixed_weights_come_from_the_objective() -> None:
    """With parametrization fixed nothing is sampled and objective.weights is used as written."""
    doc = {"study": {"name": "s"}, "objective": {"problem": "linear_pair", "weights": [0.2, 0.6]}}
    sf = parse_study(doc, "x.yaml")
    trial = optuna.create_study().ask()
    sampled, weights = sample(trial, sf.search, sf.objective)
    assert sampled == {} and trial.params == {} and weights == (0.2, 0.6)


def test_resolve_fills_every_value() -> None:
    """Resolution sets sampled paths, weights, a per-trial seed, one data seed and a concrete device."""
    sf = study_file({"params": {"optimizer.lr": {"type": "float", "low": 1e-3, "high": 1e-1}}}, seed=5)
    c3 = resolve(sf.objective, sf.study.seed, 3, {"optimizer.lr": 0.02}, (0.3, 0.7))
    c4 = resolve(sf.objective, sf.study.seed, 4, {"optimizer.lr": 0.02}, (0.3, 0.7))
    assert c3.optimizer.lr == 0.02 and c3.weights == (0.3, 0.7) and c3.device == "cpu"
    assert c3.seed == derive_seed(5, "trial", 3) and c3.seed != c4.seed
    assert c3.data_seed == c4.data_seed == derive_seed(5, "data")
    assert sf.objective.seed is None  # the study file's config is untouched


def test_explicit_seed_wins() -> None:
    """A seed written in the objective (as in an exported file) is used as is."""
    doc = {"study": {"name": "s"}, "objective": {"problem": "linear_pair", "seed": 11, "data_seed": 12}}
    sf = parse_study(doc, "x.yaml")
    cfg = resolve(sf.objective, sf.study.seed, 9, {}, (0.5, 0.5))
    assert (cfg.seed, cfg.data_seed) == (11, 12)


def test_grid_sampler_visits_the_whole_grid() -> None:
    """The grid sampler's space comes from choices, int steps, float steps and the weights grid."""
    sf = study_file(
        {
            "weights": {"parametrization": "log_ratio", "grid": [-1.0, 1.0]},
            "params": {
                "mixing": {"type": "categorical", "choices": ["zip", "cycle"]},
                "epochs": {"type": "int", "low": 1, "high": 3, "step": 2},
                "optimizer.lr": {"type": "float", "low": 0.1, "high": 0.2, "step": 0.1},
            },
        },
        sampler="grid",
    )
    space = grid_space(sf.search, sf.objective.loss_terms)
    assert space["epochs"] == [1, 3] and space["weights.log10_ratio"] == [-1.0, 1.0]
    study = optuna.create_study(
        sampler=build_sampler(sf.study.sampler, 0, grid_space(sf.search, sf.objective.loss_terms))
    )
    study.optimize(lambda t: float(len(sample(t, sf.search, sf.objective)[0])), n_trials=20)
    seen = {tuple(sorted(t.params.items())) for t in study.trials}
    assert len(study.trials) == 16 == len(seen)  # 2 × 2 × 2 × 2, each once, then the sampler stops
    expected = set(itertools.product(*[sorted(map(str, v)) for v in space.values()]))
    assert len(expected) == 16


def test_three_weights_log_ratio() -> None:
    """With a consistency weight, log_ratio samples a/b and consistency/b; b is the reference."""
    doc = {
        "study": {"name": "s"},
        "objective": {"loop": "alternating", "problem": "digits_codes", "weights": [1, 1, 1]},
        "search": {"weights": {"parametrization": "log_ratio", "low": -2, "high": 2}},
    }
    sf = parse_study(doc, "x.yaml")
    trial = optuna.trial.FixedTrial({"weights.log10_ratio": 1.0, "weights.log10_ratio_consistency": -1.0})
    _, weights = sample(trial, sf.search, sf.objective)
    total = 10 + 1 + 0.1
    assert weights == pytest.approx((10 / total, 1 / total, 0.1 / total))
    study = optuna.create_study()
    t = study.ask()
    sample(t, sf.search, sf.objective)
    assert set(t.distributions) == {"weights.log10_ratio", "weights.log10_ratio_consistency"}
    cfg = resolve(sf.objective, sf.study.seed, 0, {}, weights)
    assert cfg.loop == "alternating" and cfg.weights == pytest.approx(weights)


def test_weights_conditional_on_strategy() -> None:
    """search.weights.when: weights are sampled only for the named strategies, else objective.weights."""
    doc = {
        "study": {"name": "s"},
        "objective": {"problem": "linear_pair", "weights": [0.5, 0.5]},
        "search": {
            "weights": {"parametrization": "log_ratio", "when": {"weighting.type": ["static", "dwa"]}},
            "params": {
                "weighting.type": {"type": "categorical", "choices": ["static", "famo", "dwa"]},
                "weighting.temperature": {"type": "float", "low": 0.5, "high": 4, "when": {"weighting.type": "dwa"}},
            },
        },
    }
    sf = parse_study(doc, "x.yaml")
    _, w_static = sample(
        optuna.trial.FixedTrial({"weighting.type": "static", "weights.log10_ratio": 1.0}),
        sf.search,
        sf.objective,
    )
    assert w_static == pytest.approx((10 / 11, 1 / 11))
    sampled, w_famo = sample(optuna.trial.FixedTrial({"weighting.type": "famo"}), sf.search, sf.objective)
    assert w_famo == (0.5, 0.5) and sampled == {"weighting.type": "famo"}
    sampled, _ = sample(
        optuna.trial.FixedTrial({"weighting.type": "dwa", "weighting.temperature": 3.0, "weights.log10_ratio": 0.0}),
        sf.search,
        sf.objective,
    )
    cfg = resolve(sf.objective, sf.study.seed, 0, sampled, (0.5, 0.5))
    assert cfg.weighting.type == "dwa" and cfg.weighting.temperature == 3.0


def test_schedules_and_strategies_searchable_in_alternating_loop() -> None:
    """Per-model LR schedule types, the strategy and the weight schedule are searchable for the alternating loop."""
    doc = {
        "study": {"name": "s"},
        "objective": {"loop": "alternating", "problem": "digits_codes", "weights": [1, 1, 1]},
        "search": {
            "params": {
                "model_a.optimizer.schedule.type": {"type": "categorical", "choices": ["constant", "onecycle"]},
                "model_a.optimizer.schedule.pct_start": {
                    "type": "float",
                    "low": 0.1,
                    "high": 0.5,
                    "when": {"model_a.optimizer.schedule.type": "onecycle"},
                },
                "model_b.optimizer.schedule.type": {"type": "categorical", "choices": ["constant", "plateau"]},
                "weighting.type": {"type": "categorical", "choices": ["static", "pcgrad"]},
                "weight_schedule.type": {"type": "categorical", "choices": ["constant", "sigmoid"]},
                "weight_schedule.target": {
                    "type": "categorical",
                    "choices": ["consistency"],
                    "when": {"weight_schedule.type": "sigmoid"},
                },
            }
        },
    }
    sf = parse_study(doc, "x.yaml")
    values = {
        "model_a.optimizer.schedule.type": "onecycle",
        "model_a.optimizer.schedule.pct_start": 0.2,
        "model_b.optimizer.schedule.type": "plateau",
        "weighting.type": "pcgrad",
        "weight_schedule.type": "sigmoid",
        "weight_schedule.target": "consistency",
    }
    sampled, weights = sample(optuna.trial.FixedTrial(values), sf.search, sf.objective)
    cfg = resolve(sf.objective, sf.study.seed, 0, sampled, weights)
    assert cfg.model_a.optimizer.schedule.type == "onecycle" and cfg.model_a.optimizer.schedule.pct_start == 0.2
    assert cfg.model_b.optimizer.schedule.type == "plateau"
    assert cfg.weighting.type == "pcgrad" and cfg.weight_schedule.target == "consistency"


def test_searching_the_weight_schedule_type_keeps_its_target() -> None:
    """Choosing another weight-schedule type keeps which loss it moves (target is not a type option)."""
    doc = {
        "study": {"name": "s"},
        "objective": {
            "loop": "alternating",
            "problem": "digits_codes",
            "weights": [1, 1, 1],
            "weight_schedule": {"type": "linear", "target": "consistency", "ramp_fraction": 0.5},
        },
        "search": {"params": {"weight_schedule.type": {"type": "categorical", "choices": ["linear", "sigmoid"]}}},
    }
    sf = parse_study(doc, "x.yaml")
    cfg = resolve(sf.objective, sf.study.seed, 0, {"weight_schedule.type": "sigmoid"}, (1, 1, 1))
    assert cfg.weight_schedule.type == "sigmoid" and cfg.weight_schedule.target == "consistency"
    assert cfg.weight_schedule.ramp_fraction == 0.3  # the linear schedule's own option did not carry over


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ({"type": "float", "low": math.nan, "high": 0.1}, "finite"),
        ({"type": "float", "low": 0.01, "high": math.inf}, "finite"),
        ({"type": "float", "low": 0.01, "high": 0.1, "grid": [0.01, math.nan]}, "finite"),
        ({"type": "float", "low": 0.01, "high": 0.1, "step": math.inf}, "finite"),
        ({"type": "categorical", "choices": [0.5, math.nan]}, "finite"),
    ],
)
def test_the_schema_refuses_non_finite_values(spec: dict, fragment: str) -> None:
    """The search schema itself refuses NaN/inf bounds, steps, grid points and choices (a config built in
    code, not only a file: the file loader refuses them earlier by key)."""
    from pydantic import ValidationError

    from sweep.studyfile.space import SearchSection

    with pytest.raises(ValidationError, match=fragment):
        SearchSection.model_validate({"params": {"optimizer.lr": spec}})
    with pytest.raises(ValidationError, match="finite"):
        SearchSection.model_validate({"weights": {"parametrization": "log_ratio", "low": -math.inf, "high": 1}})
