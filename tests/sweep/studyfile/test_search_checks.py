"""The checks of a search space before anything runs (sweep/studyfile/search_checks.py), called directly:
searchable paths and their probe values, conditions, the grid sampler's needs, combinations of choices,
baseline points the search could draw, MLflow param names and compared sub-studies. Whole files through
the loader: tests/test_study_checks.py and tests/sweep/studyfile/test_config.py."""

from __future__ import annotations

from typing import Any

import pytest

from objectives.config import LoopCommon
from sweep.core.errors import ConfigError
from sweep.studyfile.config import parse_study
from sweep.studyfile.search_checks import (
    MAX_COMBINATIONS,
    check_compare,
    check_enqueued,
    check_param_names,
    check_search,
    label_of,
)
from sweep.studyfile.space import SearchSection
from tests.conftest import tiny_study

F = "s.yaml"
TERMS = ("a", "b")
LR = {"type": "float", "low": 1e-3, "high": 1e-1, "log": True}
MIXING = {"type": "categorical", "choices": ["zip", "cycle"]}


def _objective(loop: str = "dual_loss") -> LoopCommon:
    if loop == "alternating":
        doc = {"study": {"name": "alt"}, "objective": {"loop": "alternating", "problem": "digits_codes"}}
        return parse_study(doc, F).objective
    return parse_study(tiny_study(), F).objective


def _search(params: dict[str, Any], weights: dict[str, Any] | None = None) -> SearchSection:
    return SearchSection.model_validate({"params": params, **({"weights": weights} if weights else {})})


def _refusal(call: Any, *args: Any) -> tuple[str, str]:
    with pytest.raises(ConfigError) as info:
        call(*args)
    assert info.value.file == F
    return info.value.key, info.value.message


# ---- the searched paths and their values -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("loop", "loop cannot be searched"),
        ("seed", "seed cannot be searched"),
        ("data_seed", "data_seed cannot be searched"),
        ("device", "device cannot be searched"),
        ("problem", "problem cannot be searched"),
        ("problem.name", "problem.name cannot be searched"),
        ("weights", "weights cannot be searched (use search.weights)"),
        ("weights.0", "weights.0 cannot be searched (use search.weights)"),
        ("seed.x", "seed.x cannot be searched"),
    ],
)
def test_settings_that_are_not_searchable(path: str, message: str) -> None:
    assert _refusal(check_search, _search({path: MIXING}), _objective(), False, F) == (f"search.params.{path}", message)


def test_a_path_must_exist_in_the_objective() -> None:
    key, message = _refusal(check_search, _search({"optimizer.nope": LR}), _objective(), False, F)
    assert (key, message) == ("search.params.optimizer.nope", "objective has no key 'optimizer.nope'")


def test_a_builtin_problems_data_options_are_not_searchable() -> None:
    """Options that change the data the trials are validated on would make their values incomparable."""
    key, message = _refusal(check_search, _search({"problem.options.n_a": MIXING}), _objective(), False, F)
    assert key == "search.params.problem.options.n_a"
    assert message.startswith("n_a changes the data the trials are validated on")
    assert message.endswith("searchable options of linear_pair: none")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"type": "float", "low": -1.0, "high": 0.1}, "value -1.0: "),  # the low bound is probed
        ({"type": "float", "low": 0.01, "high": 0.1, "grid": [0.05, -0.5]}, "value -0.5: "),  # and each grid point
        ({"type": "categorical", "choices": [0.01, -5]}, "value -5: "),  # and every choice
        ({"type": "categorical", "choices": [True]}, "value True: "),  # a boolean is no learning rate
    ],
)
def test_every_probe_value_is_validated_where_it_goes(spec: dict, message: str) -> None:
    key, said = _refusal(check_search, _search({"optimizer.lr": spec}), _objective(), False, F)
    assert key == "search.params.optimizer.lr" and said.startswith(message) and len(said) > len(message), said


def test_a_boolean_choice_for_a_number_is_named_as_such() -> None:
    key, said = _refusal(
        check_search, _search({"epochs": {"type": "categorical", "choices": [2, True]}}), _objective(), False, F
    )
    assert (key, said) == ("search.params.epochs", "value True: expected a number, got a boolean (yes/no/true/false)")


# ---- conditions ------------------------------------------------------------------------------------------


def test_a_condition_names_a_parameter_declared_before_it_and_its_choices() -> None:
    later = _search({"optimizer.lr": {**LR, "when": {"mixing": "zip"}}, "mixing": MIXING})
    assert _refusal(check_search, later, _objective(), False, F) == (
        "search.params.optimizer.lr.when.mixing",
        "'mixing' is not a searched parameter declared before 'optimizer.lr'",
    )
    wrong = _search({"mixing": MIXING, "optimizer.lr": {**LR, "when": {"mixing": ["zip", "round_robin"]}}})
    assert _refusal(check_search, wrong, _objective(), False, F) == (
        "search.params.optimizer.lr.when.mixing",
        "'round_robin' is not one of ['zip', 'cycle']",
    )
    fine = _search({"mixing": MIXING, "optimizer.lr": {**LR, "when": {"mixing": ["zip"]}}})
    check_search(fine, _objective(), False, F)


def test_the_weights_condition_names_a_searched_parameter() -> None:
    search = _search({"mixing": MIXING}, {"parametrization": "log_ratio", "when": {"optimizer.lr": 0.01}})
    assert _refusal(check_search, search, _objective(), False, F) == (
        "search.weights.when.optimizer.lr",
        "'optimizer.lr' is not a searched parameter",
    )


# ---- the grid sampler ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "weights", "key", "message"),
    [
        ({"optimizer.lr": LR}, None, "search.params.optimizer.lr", "the grid sampler needs grid: [...] or step"),
        (
            {"mixing": MIXING, "epochs": {"type": "int", "low": 1, "high": 3, "when": {"mixing": "zip"}}},
            None,
            "search.params.epochs.when",
            "the grid sampler cannot take conditions",
        ),
        ({}, {"parametrization": "simplex"}, "search.weights", "the grid sampler needs log_ratio with grid: [...]"),
        ({}, {"parametrization": "log_ratio"}, "search.weights.grid", "the grid sampler needs a list of log10 ratios"),
    ],
    ids=["float without a grid", "condition", "simplex", "log ratio without a grid"],
)
def test_the_grid_sampler_needs_finite_grids(params: dict, weights: dict | None, key: str, message: str) -> None:
    search = _search(params, weights)
    check_search(search, _objective(), False, F)  # any other sampler takes it
    assert _refusal(check_search, search, _objective(), True, F) == (key, message)


def test_finite_grids_pass_the_grid_sampler() -> None:
    search = _search(
        {
            "optimizer.lr": {"type": "float", "low": 0.01, "high": 0.1, "grid": [0.01, 0.1]},
            "optimizer.weight_decay": {"type": "float", "low": 0.0, "high": 0.5, "step": 0.25},
            "epochs": {"type": "int", "low": 1, "high": 3},
            "mixing": MIXING,
        },
        {"parametrization": "log_ratio", "grid": [-1, 0, 1]},
    )
    check_search(search, _objective(), True, F)
    check_search(_search({}), _objective(), True, F)  # fixed weights, nothing searched


# ---- combinations of choices -----------------------------------------------------------------------------

JOINT = {
    "mode": {"type": "categorical", "choices": ["alternate", "joint"]},
    "model_b.optimizer.schedule.type": {"type": "categorical", "choices": ["constant", "cosine"]},
}


def test_a_combination_of_choices_that_makes_an_invalid_objective_is_refused() -> None:
    key, message = _refusal(check_search, _search(JOINT), _objective("alternating"), False, F)
    assert key == "search.params"
    assert message.startswith("the combination mode='joint', model_b.optimizer.schedule.type='cosine' makes an invalid")
    assert message.endswith("add a when: condition so it is never drawn")
    conditioned = {**JOINT, "model_b.optimizer.schedule.type": {**JOINT["model_b.optimizer.schedule.type"],
                                                                "when": {"mode": "alternate"}}}  # fmt: skip
    check_search(_search(conditioned), _objective("alternating"), False, F)


@pytest.mark.parametrize(("epochs", "checked"), [(MAX_COMBINATIONS // 4, True), (MAX_COMBINATIONS // 4 + 1, False)])
def test_combinations_are_checked_up_to_the_limit(epochs: int, checked: bool) -> None:
    """2 x 2 x ``epochs`` combinations: at :data:`MAX_COMBINATIONS` each is checked; one choice more, none is
    (each value is still checked alone)."""
    search = _search({**JOINT, "epochs": {"type": "categorical", "choices": list(range(1, epochs + 1))}})
    if checked:
        assert _refusal(check_search, search, _objective("alternating"), False, F)[0] == "search.params"
    else:
        check_search(search, _objective("alternating"), False, F)


# ---- baseline points (study.enqueue) ---------------------------------------------------------------------

ENQUEUE_SPACE = {
    "optimizer.lr": {"type": "float", "low": 0.01, "high": 0.1},
    "optimizer.weight_decay": {"type": "float", "low": 0.0, "high": 1.0, "step": 0.25},
    "epochs": {"type": "int", "low": 1, "high": 9, "step": 2},
    "mixing": {"type": "categorical", "choices": ["zip", 1, 0.5]},
    "data.drop_last": {"type": "categorical", "choices": [True, False]},
}


@pytest.mark.parametrize(
    "point",
    [
        {"optimizer.lr": 0.01},  # bounds are inclusive
        {"optimizer.lr": 0.1, "optimizer.weight_decay": 1.0},
        {"optimizer.lr": 0.05, "optimizer.weight_decay": 0.75},
        {"epochs": 1},
        {"epochs": 9},
        {"epochs": 5, "mixing": 1, "data.drop_last": False},
        {"mixing": 0.5},
        {"mixing": "zip"},
        {"weights.log10_ratio": -2},
        {"weights.log10_ratio": 2.0},
        {},
    ],
)
def test_a_point_the_search_could_draw_is_taken(point: dict) -> None:
    check_enqueued([point], _search(ENQUEUE_SPACE, {"low": -2, "high": 2}), TERMS, F)


@pytest.mark.parametrize(
    ("point", "message"),
    [
        ({"optimizer.lr": 0.0099}, "0.0099 is outside the searched range [0.01, 0.1] (bounds are inclusive)"),
        ({"optimizer.lr": 0.11}, "0.11 is outside the searched range [0.01, 0.1] (bounds are inclusive)"),
        ({"optimizer.weight_decay": 0.3}, "0.3 is off the searched grid: low (0.0) plus a multiple of step (0.25)"),
        ({"epochs": 4}, "4 is off the searched grid: low (1) plus a multiple of step (2)"),
        ({"epochs": 11}, "11 is outside the searched range [1, 9] (bounds are inclusive)"),
        ({"epochs": 3.0}, "expected an integer, got 3.0"),
        ({"epochs": True}, "expected a number, got the boolean true"),
        ({"optimizer.lr": None}, "expected a number, got null"),
        ({"optimizer.lr": "0.05"}, "expected a number, got the string '0.05'"),
        ({"optimizer.lr": [0.05]}, "expected a number, got [0.05]"),
        ({"mixing": True}, "True is not one of the choices ['zip', 1, 0.5]"),  # true is not the choice 1
        ({"data.drop_last": 1}, "1 is not one of the choices [True, False]"),
        ({"mixing": "ZIP"}, "'ZIP' is not one of the choices ['zip', 1, 0.5]"),
        ({"weights.log10_ratio": 2.5}, "2.5 is outside the searched range [-2.0, 2.0] (bounds are inclusive)"),
    ],
)
def test_a_point_the_search_could_never_draw_is_refused(point: dict, message: str) -> None:
    (name,) = point
    search = _search(ENQUEUE_SPACE, {"low": -2, "high": 2})
    assert _refusal(check_enqueued, [{}, point], search, TERMS, F) == (f"study.enqueue.1.{name}", message)


def test_a_point_names_searched_parameters_only() -> None:
    search = _search({"optimizer.lr": LR}, {"parametrization": "simplex"})
    check_enqueued([{"weights.u0": 0.0, "weights.u1": 1.0}], search, TERMS, F)  # the simplex's uniforms, in [0, 1]
    assert _refusal(check_enqueued, [{"weights.u1": 1.5}], search, TERMS, F)[1].startswith("1.5 is outside")
    assert _refusal(check_enqueued, [{"epochs": 3}], search, TERMS, F) == (
        "study.enqueue.0.epochs",
        "not a searched parameter; searched: optimizer.lr, weights.u0, weights.u1",
    )
    fixed = _search({})
    assert _refusal(check_enqueued, [{"weights.log10_ratio": 0}], fixed, TERMS, F) == (
        "study.enqueue.0.weights.log10_ratio",
        "not a searched parameter; searched: ",
    )


# ---- MLflow param names ----------------------------------------------------------------------------------


def _with_options(options: dict[str, Any]) -> LoopCommon:
    """The objective with a user problem's ``options`` (not validated: any problem may take them)."""
    objective = _objective()
    return objective.model_copy(update={"problem": objective.problem.model_copy(update={"options": options})})


@pytest.mark.parametrize(
    "options",
    [
        {"a": 1, "b b": {"c-d": 2, "e:f/g": 3}, "empty": {}, "é": {"": 1}},  # letters of any script; "a." is a name
        {"x" * (250 - len("problem.options.")): 1},  # exactly 250 characters
    ],
)
def test_names_mlflow_takes_pass(options: dict) -> None:
    check_param_names(_with_options(options), _search({"optimizer.lr": LR}), F)


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"a|b": 1}, "problem.options.a|b"),
        ({"a/../b": 1}, "problem.options.a/../b"),  # a ".." path step
        ({"a//b": 1}, "problem.options.a//b"),  # an empty path step
        ({"a/./b": 1}, "problem.options.a/./b"),  # a "." path step
        ({"a/": 1}, "problem.options.a/"),
        ({"x" * (251 - len("problem.options.")): 1}, "problem.options." + "x" * (251 - len("problem.options."))),
    ],
    ids=["bar", "dot dot step", "empty step", "dot step", "trailing slash", "251 characters"],
)
def test_names_mlflow_refuses_are_named_by_their_key(options: dict, name: str) -> None:
    key, message = _refusal(check_param_names, _with_options(options), _search({}), F)
    shown = repr(name[:60]) + ("..." if len(name) > 60 else "")
    assert key == f"objective.{name}" and message.startswith(f"{shown} cannot be an MLflow param name"), message


def test_a_searched_name_is_checked_too() -> None:
    assert _refusal(check_param_names, _with_options({}), _search({"a|b": LR}), F)[0] == "search.params.a|b"


# ---- compared sub-studies --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "label"),
    [("dwa", "dwa"), ("a b/c", "a_b_c"), (0.001, "0.001"), (True, "True"), (None, "None"), ("é-1.x_y", "_-1.x_y")],
)
def test_label_of_keeps_name_characters_only(value: object, label: str) -> None:
    assert label_of(value) == label


def test_check_compare_takes_a_searched_unconditional_categorical() -> None:
    search = _search({"mixing": MIXING, "optimizer.lr": LR})
    check_compare(None, "s", search, [], F)
    check_compare("mixing", "s", search, [{"optimizer.lr": 0.01}], F)
    assert _refusal(check_compare, "optimizer.lr", "s", search, [], F) == (
        "study.compare",
        "'optimizer.lr' is not a searched categorical; searched ones: mixing",
    )
    assert _refusal(check_compare, "epochs", "s", _search({"optimizer.lr": LR}), [], F) == (
        "study.compare",
        "'epochs' is not a searched categorical; searched ones: none",
    )
    one = _search({"mixing": {"type": "categorical", "choices": ["zip"]}})
    assert _refusal(check_compare, "mixing", "s", one, [], F) == (
        "study.compare",
        "'mixing' has one choice: nothing to compare",
    )
    conditional = _search(
        {"epochs": {"type": "categorical", "choices": [1, 2]}, "mixing": {**MIXING, "when": {"epochs": 1}}}
    )
    assert _refusal(check_compare, "mixing", "s", conditional, [], F) == (
        "study.compare",
        "'mixing' is conditional (when:); compare an unconditional one",
    )
    assert _refusal(check_compare, "mixing", "s", search, [{}, {"mixing": "zip"}], F) == (
        "study.enqueue.1.mixing",
        "the compared parameter is fixed per sub-study",
    )


def test_each_choice_names_a_sub_study_of_its_own_of_at_most_200_characters() -> None:
    search = _search({"mixing": {"type": "categorical", "choices": ["a b", "zip", "a_b"]}})
    assert _refusal(check_compare, "mixing", "s", search, [], F) == (
        "search.params.mixing.choices.2",
        "'a_b' names the same sub-study (s.a_b) as 'a b'",
    )
    check_compare("mixing", "n" * (200 - len(".cycle")), _search({"mixing": MIXING}), [], F)  # 200: fine
    long = "n" * (201 - len(".cycle"))
    key, message = _refusal(check_compare, "mixing", long, _search({"mixing": MIXING}), [], F)
    assert key == "search.params.mixing.choices.1"
    assert message == f"its sub-study name {'n' * 40}...{('n' * 200 + '.cycle')[-10:]} has 201 characters; at most 200"
