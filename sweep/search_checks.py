"""Checks of a study's search space against its objective, before anything runs: every searched path
exists, every probe value validates, conditions name earlier parameters, a grid sampler gets finite
grids, and no combination of categorical choices makes an invalid config (e.g. ``mode: joint`` with two
different per-model schedules, which would otherwise fail every such trial)."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from objectives.config import LoopCommon
from objectives.loops import LOOPS
from objectives.problems import BUILTINS, ProblemError, check_problem
from sweep.errors import ConfigError, pydantic_message
from sweep.space import (
    UNION_KEYS,
    CategoricalParam,
    FloatParam,
    SearchSection,
    Spec,
    When,
    active,
    get_path,
    set_path,
)

_NOT_SEARCHABLE = {"loop", "seed", "data_seed", "device", "weights", "problem", "problem.name"}


def _probe_values(spec: Spec) -> list[Any]:
    if isinstance(spec, CategoricalParam):
        return list(spec.choices)
    return [spec.low, spec.high, *(spec.grid or ())]


def _check_when(when: When | None, declared: Mapping[str, Spec], file: str | Path, key: str, what: str) -> None:
    """A condition names searched parameters (declared before it) and, for categoricals, their choices."""
    for ref, wanted in (when or {}).items():
        if ref not in declared:
            raise ConfigError(file, f"{key}.when.{ref}", f"{ref!r} is not {what}")
        ref_spec = declared[ref]
        if isinstance(ref_spec, CategoricalParam):
            for v in wanted if isinstance(wanted, list) else [wanted]:
                if v not in ref_spec.choices:
                    raise ConfigError(file, f"{key}.when.{ref}", f"{v!r} is not one of {list(ref_spec.choices)}")


def _check_param(path: str, spec: Spec, objective: LoopCommon, declared: Mapping[str, Spec], file: str | Path) -> None:
    """One searched path exists in the objective (or may exist once a union's type is chosen), its
    conditions name parameters declared before it, and every probe value (bounds, grid points,
    choices) validates there."""
    key = f"search.params.{path}"
    if path in _NOT_SEARCHABLE or path.startswith(("weights.", "seed.")):
        hint = " (use search.weights)" if path.startswith("weights") else ""
        raise ConfigError(file, key, f"{path} cannot be searched{hint}")
    option = path.removeprefix("problem.options.")
    builtin = BUILTINS.get(objective.problem.name)
    if path.startswith("problem.options.") and builtin is not None and option not in builtin.model_options:
        allowed = ", ".join(builtin.model_options) or "none"
        raise ConfigError(
            file,
            key,
            f"{option} changes the data the trials are validated on, so their values would not be comparable "
            f"(the search could reward an easier problem); searchable options of {objective.problem.name}: "
            f"{allowed}",
        )
    base = objective.model_dump(mode="json")
    exists, _ = get_path(base, path)
    under_union = any(f"{u}." in f".{path}" for u in UNION_KEYS)  # options of a type chosen by search
    if not exists and not path.startswith("problem.options.") and not under_union:
        raise ConfigError(file, key, f"objective has no key {path!r}")
    _check_when(spec.when, declared, file, key, f"a searched parameter declared before {path!r}")
    # Probe in the context the parameter is sampled in: its conditions' values applied first.
    context = base
    for ref, wanted in (spec.when or {}).items():
        context = set_path(context, ref, wanted[0] if isinstance(wanted, list) else wanted)
    for value in _probe_values(spec):
        try:
            cfg = type(objective).model_validate(set_path(context, path, value))
            if isinstance(value, bool) and not isinstance(get_path(cfg.model_dump(), path)[1], bool):
                raise ConfigError(file, key, f"value {value!r}: expected a number, got a boolean (yes/no/true/false)")
            if path.startswith("problem.options."):
                check_problem(cfg.problem.name, cfg.problem.options, cfg.loop, LOOPS[cfg.loop].problem)
        except ValidationError as e:
            raise ConfigError(file, key, f"value {value!r}: {pydantic_message(e.errors()[0])}") from None
        except ProblemError as e:
            raise ConfigError(file, key, f"value {value!r}: {e}") from None


def check_search(search: SearchSection, objective: LoopCommon, grid: bool, file: str | Path) -> None:
    """Every searched path and condition is valid for ``objective``; a grid sampler gets finite grids.

    Raises:
        ConfigError: naming the ``search.…`` key.
    """
    declared: dict[str, Spec] = {}
    for path, spec in search.params.items():
        _check_param(path, spec, objective, declared, file)
        declared[path] = spec
    _check_when(search.weights.when, declared, file, "search.weights", "a searched parameter")
    _check_combinations(search, objective, file)
    if not grid:
        return
    for path, spec in search.params.items():
        if spec.when:
            raise ConfigError(file, f"search.params.{path}.when", "the grid sampler cannot take conditions")
        if isinstance(spec, FloatParam) and spec.grid is None and spec.step is None:
            raise ConfigError(file, f"search.params.{path}", "the grid sampler needs grid: [...] or step")
    w = search.weights
    if w.parametrization == "simplex":
        raise ConfigError(file, "search.weights", "the grid sampler needs log_ratio with grid: [...]")
    if w.parametrization == "log_ratio" and not w.grid:
        raise ConfigError(file, "search.weights.grid", "the grid sampler needs a list of log10 ratios")


MAX_COMBINATIONS = 4096


def _check_combinations(search: SearchSection, objective: LoopCommon, file: str | Path) -> None:
    """Every combination of the categorical choices (numbers at their low bound), conditions applied as
    sampling applies them, must make a valid config: a rule between two settings (``mode: joint`` needs
    one schedule for both models) would otherwise fail each trial that draws the bad pair. Spaces with
    more than MAX_COMBINATIONS combinations are checked value by value only."""
    categorical = {p: s for p, s in search.params.items() if isinstance(s, CategoricalParam)}
    sizes = [len(s.choices) for s in categorical.values()]
    if len(categorical) < 2 or _product(sizes) > MAX_COMBINATIONS:
        return
    base = objective.model_dump(mode="json")
    for choice in itertools.product(*(s.choices for s in categorical.values())):
        picked = dict(zip(categorical, choice, strict=True))
        sampled: dict[str, Any] = {}
        for path, spec in search.params.items():  # in file order, as sample() does
            if active(spec, sampled):
                sampled[path] = picked[path] if isinstance(spec, CategoricalParam) else spec.low
        data = base
        for path, value in sampled.items():
            data = set_path(data, path, value)
        try:
            type(objective).model_validate(data)
        except ValidationError as e:
            shown = ", ".join(f"{p}={v!r}" for p, v in sampled.items() if p in categorical)
            raise ConfigError(
                file,
                "search.params",
                f"the combination {shown} makes an invalid objective ({pydantic_message(e.errors()[0])}); "
                "add a when: condition so it is never drawn",
            ) from None


def _product(sizes: list[int]) -> int:
    total = 1
    for size in sizes:
        total *= size
    return total
