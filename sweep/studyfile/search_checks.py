"""Checks of a study's search space against its objective, before anything runs: every searched path
exists, every probe value validates, conditions name earlier parameters, a grid sampler gets finite
grids, and no combination of categorical choices makes an invalid config (e.g. ``mode: joint`` with two
different per-model schedules, which would otherwise fail every such trial)."""

from __future__ import annotations

import itertools
import posixpath
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from objectives.config import LoopCommon
from objectives.loops import LOOPS
from objectives.problems import BUILTINS, ProblemError, check_problem
from sweep.core.errors import ConfigError, pydantic_message
from sweep.studyfile.space import (
    UNION_KEYS,
    CategoricalParam,
    FloatParam,
    IntParam,
    SearchSection,
    Spec,
    When,
    active,
    get_path,
    searched_names,
    set_path,
)

_NOT_SEARCHABLE = {"loop", "seed", "data_seed", "repeats", "device", "weights", "problem", "problem.name"}


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


def check_enqueued(
    enqueue: Sequence[Mapping[str, Any]], search: SearchSection, terms: Sequence[str], file: str | Path
) -> None:
    """Each baseline point (``study.enqueue``) names searched parameters, with values the search itself
    could draw: Optuna runs an enqueued value as given, even outside the space. Bounds are inclusive
    (as in Optuna); an int or a float with ``step`` must be on its grid; a categorical value must be one
    of the choices (``true`` is not the choice ``1``)."""
    known = searched_names(search, terms)
    w = search.weights
    low, high = (w.low, w.high) if w.parametrization == "log_ratio" else (0.0, 1.0)
    weights = FloatParam(type="float", low=low, high=high)  # log10 ratios, or the simplex's uniforms
    for i, point in enumerate(enqueue):
        for name, value in point.items():
            if name not in known:
                why: str | None = f"not a searched parameter; searched: {', '.join(known)}"
            else:
                why = not_drawable(search.params.get(name, weights), value)
            if why:
                raise ConfigError(file, f"study.enqueue.{i}.{name}", why)


def not_drawable(spec: Spec, value: Any) -> str | None:
    """Why the search could never draw ``value`` for ``spec`` (``None``: it could)."""
    if isinstance(spec, CategoricalParam):
        if any(c == value and isinstance(c, bool) == isinstance(value, bool) for c in spec.choices):
            return None
        return f"{value!r} is not one of the choices {list(spec.choices)}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        shown = "null" if value is None else str(value).lower() if isinstance(value, bool) else repr(value)
        kind = "the boolean " if isinstance(value, bool) else "the string " if isinstance(value, str) else ""
        return f"expected a number, got {kind}{shown}"
    if isinstance(spec, IntParam) and not isinstance(value, int):
        return f"expected an integer, got {value!r}"
    if not spec.low <= value <= spec.high:
        return f"{value!r} is outside the searched range [{spec.low!r}, {spec.high!r}] (bounds are inclusive)"
    step = spec.step
    if step is not None and abs((k := (value - spec.low) / step) - round(k)) > 1e-8:  # Optuna's own test
        return f"{value!r} is off the searched grid: low ({spec.low!r}) plus a multiple of step ({step!r})"
    return None


_MLFLOW_NAME = re.compile(r"[/\w.\- :]{1,250}")  # what MLflow takes as a param name (mlflow.utils.validation)


def check_param_names(objective: LoopCommon, search: SearchSection, file: str | Path) -> None:
    """Every setting a trial logs as an MLflow param (the objective flattened to dotted names, and each
    searched name) has a name MLflow takes: at most 250 characters of letters, digits, spaces and
    ``_ - . : /``, and no empty or ``.`` path step. Only a user problem's options can break that; one that
    did failed every trial's records with a traceback."""
    names = [(f"objective.{n}", n) for n in _dotted(objective.problem.options, "problem.options.")]
    names += [(f"search.params.{n}", n) for n in search.params]
    for key, name in names:
        if not _MLFLOW_NAME.fullmatch(name) or posixpath.normpath(name) != name:
            raise ConfigError(file, key, f"{name[:60]!r}{'...' if len(name) > 60 else ''} cannot be an MLflow "
                              "param name (each trial logs its settings as params): at most 250 characters of "
                              "letters, digits, spaces and _ - . : /")  # fmt: skip


def _dotted(tree: Mapping[Any, Any], prefix: str) -> list[str]:
    """The dotted names of a nested mapping's leaves, as :func:`sweep.tracking.tracking.flatten` makes them."""
    out: list[str] = []
    for key, value in tree.items():
        if isinstance(value, Mapping) and value:
            out += _dotted(value, f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key}")
    return out


def label_of(value: object) -> str:
    """A categorical choice as a study-name part (``[A-Za-z0-9_.-]``; anything else becomes ``_``)."""
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", str(value))


def check_compare(
    compare: str | None, name: str, search: SearchSection, enqueue: Sequence[Mapping[str, Any]], file: str | Path
) -> None:
    """``study.compare`` names a searched, unconditional categorical with at least two choices, each of
    which names a sub-study of its own (``<name>.<choice>``, at most 200 characters as ``study.name``:
    it is also the sub-study's MLflow run name); no baseline point fixes it."""
    if compare is None:
        return
    spec = search.params.get(compare)
    if not isinstance(spec, CategoricalParam):
        categoricals = [k for k, v in search.params.items() if isinstance(v, CategoricalParam)] or ["none"]
        searched = ", ".join(categoricals)
        raise ConfigError(
            file, "study.compare", f"{compare!r} is not a searched categorical; searched ones: {searched}"
        )
    if len(spec.choices) < 2:
        raise ConfigError(file, "study.compare", f"{compare!r} has one choice: nothing to compare")
    if spec.when:
        raise ConfigError(file, "study.compare", f"{compare!r} is conditional (when:); compare an unconditional one")
    names: dict[str, object] = {}
    for i, choice in enumerate(spec.choices):
        key, sub = f"search.params.{compare}.choices.{i}", f"{name}.{label_of(choice)}"
        if len(sub) > 200:
            shown = sub if len(sub) <= 60 else f"{sub[:40]}...{sub[-10:]}"
            raise ConfigError(file, key, f"its sub-study name {shown} has {len(sub)} characters; at most 200")
        if sub in names:
            raise ConfigError(file, key, f"{choice!r} names the same sub-study ({sub}) as {names[sub]!r}")
        names[sub] = choice
    for i, point in enumerate(enqueue):
        if compare in point:
            raise ConfigError(file, f"study.enqueue.{i}.{compare}", "the compared parameter is fixed per sub-study")


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
