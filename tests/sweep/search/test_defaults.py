"""What a study gets where its file names no sampler or baselines (sweep.search.defaults): the sampler chosen by
the search space, equal loss weights first — and what the file says always wins."""

from __future__ import annotations

import math
from typing import Any

import optuna
import pytest

from objectives.helpers import weights_from_uniforms
from sweep.search.builders import build_sampler
from sweep.search.defaults import MOST_GP_DIMENSIONS, chosen_pruner, chosen_sampler, first_points, start_design
from sweep.studyfile.config import StudyFile, parse_study
from sweep.studyfile.search_checks import check_enqueued
from sweep.studyfile.space import sample

LR = {"type": "float", "low": 1e-3, "high": 0.1, "log": True}
RATIO = {"parametrization": "log_ratio"}


def _sf(
    search: dict[str, Any], study: dict[str, Any] | None = None, objective: dict[str, Any] | None = None
) -> StudyFile:
    doc = {
        "study": {"name": "s", **(study or {})},
        "objective": objective or {"problem": "linear_pair"},
        "search": search,
    }
    return parse_study(doc, "s.yaml")


def _chosen(sf: StudyFile) -> Any:
    return chosen_sampler(sf.study, sf.search, sf.objective)


def _first(sf: StudyFile) -> tuple[dict[str, Any], ...]:
    return first_points(sf.study, sf.search, sf.objective)


@pytest.mark.parametrize(
    ("search", "startup"),
    [
        ({"weights": RATIO}, 3),  # one dimension: equal weights and two more, then the GP
        ({"weights": RATIO, "params": {"optimizer.lr": LR}}, 5),
        ({"weights": {"parametrization": "simplex"}}, 5),  # u0, u1
        ({"params": {"optimizer.lr": LR, "batch_size": {"type": "int", "low": 16, "high": 256}}}, 5),
    ],
)
def test_a_small_continuous_space_gets_the_gp_sampler_with_a_start_scaled_to_it(
    search: dict[str, Any], startup: int
) -> None:
    chosen = _chosen(_sf(search))
    assert (chosen.type, chosen.n_startup_trials) == ("gp", startup)
    assert isinstance(build_sampler(chosen, 0), optuna.samplers.GPSampler)


def test_the_start_never_exceeds_optunas_ten() -> None:
    params = {f"optimizer.{k}": LR for k in ("lr", "weight_decay", "momentum")}
    chosen = _chosen(_sf({"weights": RATIO, "params": params}))
    assert (chosen.type, chosen.n_startup_trials) == ("gp", 9)  # 4 dimensions: 1 + 8
    params["eval_batch_size"] = {"type": "int", "low": 64, "high": 4096}
    assert _chosen(_sf({"weights": RATIO, "params": params})).n_startup_trials == 10  # 5 dimensions: capped


@pytest.mark.parametrize(
    ("search", "study", "why"),
    [
        ({"params": {"optimizer.type": {"type": "categorical", "choices": ["adam", "sgd"]}}}, {}, "categorical"),
        (
            {
                "params": {
                    "optimizer.type": {"type": "categorical", "choices": ["adam", "sgd"]},
                    "optimizer.momentum": {
                        "type": "float",
                        "low": 0.0,
                        "high": 0.99,
                        "when": {"optimizer.type": "sgd"},
                    },
                }
            },
            {},
            "conditional",
        ),
        ({"weights": RATIO}, {"metric": ["val_a_loss", "val_b_loss"]}, "two targets"),
        ({}, {}, "nothing searched"),
    ],
)
def test_other_spaces_keep_tpe(search: dict[str, Any], study: dict[str, Any], why: str) -> None:
    assert _chosen(_sf(search, study)).type == "tpe", why


def test_a_space_past_the_gp_limit_keeps_tpe() -> None:
    names = ["lr", "weight_decay", "momentum"]
    params = {f"optimizer.{n}": LR for n in names}
    params |= {k: {"type": "int", "low": 1, "high": 64} for k in ("epochs", "batch_size", "eval_batch_size")}
    params["data.num_workers"] = {"type": "int", "low": 0, "high": 2}
    params["grad_accum_steps"] = {"type": "int", "low": 1, "high": 4}
    sf = _sf({"weights": RATIO, "params": params})
    assert len(params) + 1 > MOST_GP_DIMENSIONS and _chosen(sf).type == "tpe"


def test_a_sampler_the_file_names_wins() -> None:
    sf = _sf({"weights": RATIO}, {"sampler": {"type": "tpe", "n_startup_trials": 4}})
    chosen = _chosen(sf)
    assert (chosen.type, chosen.n_startup_trials) == ("tpe", 4)


def test_equal_weights_come_first() -> None:
    assert _first(_sf({"weights": RATIO}))[0] == {"weights.log10_ratio": 0.0}
    three = {"loop": "alternating", "problem": "digits_codes", "weights": [0.4, 0.4, 0.2]}
    sf = _sf({"weights": RATIO}, objective=three)
    assert _first(sf)[0] == {"weights.log10_ratio": 0.0, "weights.log10_ratio_consistency": 0.0}
    point = _first(_sf({"weights": {"parametrization": "simplex"}}))[0]
    assert weights_from_uniforms(list(point.values())) == (0.5, 0.5)


BATCH = {"type": "int", "low": 16, "high": 250, "step": 16}  # its grid ends at 240, below high


@pytest.mark.parametrize(
    "search",
    [
        {"weights": RATIO},
        {"weights": {"parametrization": "simplex"}},
        {"weights": {**RATIO, "low": 0}},
        {"weights": RATIO, "params": {"optimizer.lr": LR, "batch_size": BATCH}},
        {"weights": RATIO, "params": {"optimizer.momentum": {"type": "float", "low": 0, "high": 0.9, "step": 0.3}}},
        {"weights": RATIO, "params": {"epochs": {"type": "int", "low": 1, "high": 64, "log": True}}},
    ],
)
@pytest.mark.parametrize("seed", [0, 1, 7])
def test_every_start_point_is_one_the_search_itself_could_draw(search: dict[str, Any], seed: int) -> None:
    """They pass the same check as a user's ``study.enqueue`` (inside the space, on its grids, every name
    searched): Optuna would run an enqueued value as given, even outside the space."""
    sf = _sf(search, {"seed": seed})
    points = _first(sf)
    assert len(points) == _chosen(sf).n_startup_trials  # the whole start-up is the design: no random point
    check_enqueued(points, sf.search, sf.objective.loss_terms, "s.yaml")


def test_a_long_design_reaches_the_ends_of_every_range_and_stays_on_its_grid() -> None:
    """256 Sobol points put one in the last 1/256 of each range: where rounding to a grid whose last point is
    below ``high`` (240 of 16, 32, ... 250) would step past it."""
    sf = _sf({"weights": RATIO, "params": {"batch_size": BATCH, "optimizer.lr": LR}})
    points = start_design(sf.search, sf.objective, {"weights.log10_ratio": 0.0}, 256, 0)
    check_enqueued(points, sf.search, sf.objective.loss_terms, "s.yaml")
    assert max(p["batch_size"] for p in points) == 240
    assert min(p["batch_size"] for p in points) == 16
    assert max(p["optimizer.lr"] for p in points) == pytest.approx(0.1, rel=0.05)


def test_the_baseline_trains_the_files_own_values_or_the_middle_of_the_range() -> None:
    lr = {"type": "float", "low": 1e-4, "high": 1.0, "log": True}
    objective = {"problem": "linear_pair", "optimizer": {"type": "adam", "lr": 0.05}, "batch_size": 100}
    sf = _sf({"weights": RATIO, "params": {"optimizer.lr": lr, "batch_size": BATCH}}, objective=objective)
    # 0.05 is drawable; 100 is off the batch size's grid (16, 32, ... 240): the middle of it instead
    assert _first(sf)[0] == {"optimizer.lr": 0.05, "batch_size": 128, "weights.log10_ratio": 0.0}
    sf = _sf({"weights": RATIO, "params": {"optimizer.lr": {**lr, "low": 0.1}}}, objective=objective)
    assert _first(sf)[0]["optimizer.lr"] == pytest.approx(10**-0.5)  # outside: the middle of the log range


def test_the_gp_start_tunes_the_other_values_at_equal_weights_then_fills_the_whole_space() -> None:
    sf = _sf({"weights": RATIO, "params": {"optimizer.lr": LR}}, {"seed": 3})
    points = _first(sf)
    assert len(points) == 5  # 1 + 2·d for d = 2
    line, rest = points[:3], points[3:]
    assert all(p["weights.log10_ratio"] == 0.0 for p in line)  # the baseline and 2·1 more at equal weights
    lrs = sorted(math.log10(p["optimizer.lr"]) for p in line[1:])
    assert lrs[0] < -2 < lrs[1]  # a Sobol pair: one in each half of the log range [-3, -1]
    assert all(p["weights.log10_ratio"] != 0.0 for p in rest)  # then the weights too
    ratios = sorted(p["weights.log10_ratio"] for p in rest)
    assert ratios[0] < 0 < ratios[1]
    assert _first(sf) == points  # the same study file, the same design (a resume finds its points)
    assert _first(_sf({"weights": RATIO, "params": {"optimizer.lr": LR}}, {"seed": 4}))[1:] != points[1:]


def test_a_study_shorter_than_its_start_up_queues_no_point_it_will_not_run() -> None:
    search = {"weights": RATIO, "params": {"optimizer.lr": LR}}
    assert len(_first(_sf(search, {"n_trials": 2}))) == 2  # not 5: the rest would wait in the queue for ever
    assert _first(_sf(search, {"n_trials": 2})) == _first(_sf(search, {"n_trials": 9}))[:2]  # a longer resume
    # finds these two and queues the rest


@pytest.mark.parametrize(
    ("search", "study"),
    [
        ({"weights": RATIO}, {"sampler": "gp"}),  # a sampler the file names: its own start-up
        ({"weights": RATIO}, {"sampler": "tpe"}),
        ({"weights": RATIO, "params": {"optimizer.type": {"type": "categorical", "choices": ["adam", "sgd"]}}}, {}),
    ],
)
def test_only_the_default_gp_gets_the_design(search: dict[str, Any], study: dict[str, Any]) -> None:
    assert len(_first(_sf(search, study))) == 1


@pytest.mark.parametrize(
    ("search", "study"),
    [
        ({"weights": {**RATIO, "low": 0.5, "high": 3}}, {}),  # equal weights are outside the range
        ({"weights": {"parametrization": "fixed"}}, {}),
        ({"weights": {**RATIO, "grid": [-1, 0, 1]}}, {"sampler": "grid"}),  # the grid walks its own points
        (
            {
                "weights": {**RATIO, "when": {"optimizer.type": "adam"}},
                "params": {"optimizer.type": {"type": "categorical", "choices": ["adam", "sgd"]}},
            },
            {},
        ),
    ],
)
def test_no_equal_point_where_it_does_not_belong(search: dict[str, Any], study: dict[str, Any]) -> None:
    assert _first(_sf(search, study)) == ()


def test_baselines_the_file_gives_win() -> None:
    sf = _sf({"weights": RATIO}, {"enqueue": [{"weights.log10_ratio": 1.5}]})
    assert _first(sf) == ({"weights.log10_ratio": 1.5},)
    assert _first(_sf({"weights": RATIO}, {"enqueue": []})) == ()  # none at all: the sampler from the first trial


def test_a_study_s_first_trials_train_the_design_then_the_sampler_takes_over() -> None:
    """Enqueued, each point fixes every searched value; the conditional ones are the sampler's."""
    cond = {"type": "float", "low": 0.0, "high": 0.9, "when": {"optimizer.type": "sgd"}}
    both = {"optimizer.type": {"type": "categorical", "choices": ["adam", "sgd"]}, "optimizer.momentum": cond}
    for search in ({"weights": RATIO, "params": {"optimizer.lr": LR}}, {"weights": RATIO, "params": both}):
        sf = _sf(search, {"seed": 5})
        study = optuna.create_study(sampler=build_sampler(_chosen(sf), 0))
        points = _first(sf)
        for point in points:
            study.enqueue_trial(point)
        for point in points:
            trial = study.ask()
            sampled, weights = sample(trial, sf.search, sf.objective)
            assert {**sampled, "weights.log10_ratio": math.log10(weights[0] / weights[1])} == pytest.approx(
                {**point, **{k: v for k, v in sampled.items() if k not in point}}
            )
            study.tell(trial, 1.0)
        assert not study.get_trials(states=(optuna.trial.TrialState.WAITING,))  # then the sampler's own


@pytest.mark.parametrize(
    ("study", "expected"),
    [
        ({}, "none"),  # the GP, chosen by the space, learns nothing from a pruned trial
        ({"sampler": "gp"}, "none"),
        ({"sampler": "tpe"}, "median"),
        ({"sampler": "random"}, "median"),
        ({"pruner": "hyperband"}, "hyperband"),  # the file's own pruner wins, with the GP too
        ({"sampler": "tpe", "metrics": ["val_a_loss", "val_b_loss"]}, "none"),  # Optuna prunes no multi-objective
    ],
)
def test_the_pruner_follows_what_the_sampler_learns_from(study: dict[str, Any], expected: str) -> None:
    sf = _sf({"weights": RATIO}, study)
    pruner = chosen_pruner(sf.study, _chosen(sf))
    assert pruner.type == expected
    if expected == "median":
        assert (pruner.n_startup_trials, pruner.n_warmup_steps) == (5, 2)
