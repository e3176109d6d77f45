"""Every field of the study-file schema carries its description (``Field(description=...)``).

The models are found by walking the types themselves, from ``StudyFile``, every registered loop's config, every
built-in problem's options and every entry of the weighting, LR-schedule and weight-schedule registries, into
every model a field's type holds (the members of each ``type: ...`` union, sampler and pruner included). A new
field, option or registry entry without a description fails here; ``docs/generate.py`` writes the study-file
reference from these descriptions.
"""

from __future__ import annotations

import inspect
import sys
import typing

import pytest
from pydantic import BaseModel

from objectives.loops import LOOPS
from objectives.lr_schedules import SCHEDULES
from objectives.problems import BUILTINS
from objectives.weight_schedules import WEIGHT_SCHEDULES
from objectives.weighting import STRATEGIES
from sweep.studyfile.config import StudyFile

ROOTS: list[type[BaseModel]] = [
    StudyFile,
    *(loop.config for loop in LOOPS.values()),
    *(b.options for b in BUILTINS.values()),
    *(m.Config for registry in (STRATEGIES, SCHEDULES, WEIGHT_SCHEDULES) for m in registry.values()),
]


def _models_in(tp: object) -> list[type[BaseModel]]:
    """The pydantic models a type annotation holds, at any depth (``Annotated``, unions, containers)."""
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [tp]
    return [m for arg in typing.get_args(tp) for m in _models_in(arg)]


def schema_models() -> dict[str, type[BaseModel]]:
    """Every model reachable from :data:`ROOTS` through its fields' types, by qualified name."""
    found: dict[str, type[BaseModel]] = {}
    todo = list(ROOTS)
    while todo:
        model = todo.pop()
        name = f"{model.__module__}.{model.__qualname__}"
        if name not in found:
            found[name] = model
            for info in model.model_fields.values():
                todo += _models_in(info.annotation)
    return found


MODELS = schema_models()


def test_the_walk_reaches_every_model_the_schema_modules_define() -> None:
    """Each pydantic model defined in a module whose models the walk met (the study-file sections, samplers and
    pruners, search space, loop configs, registries' ``Config``) is reached, so none escapes the check below."""
    modules = {m.__module__ for m in MODELS.values()}
    defined = {
        f"{obj.__module__}.{obj.__qualname__}"
        for module in modules
        for obj in vars(sys.modules[module]).values()
        if inspect.isclass(obj) and issubclass(obj, BaseModel) and obj.__module__ == module
    }
    assert defined - set(MODELS) == set(), "models the walk does not reach"
    assert {"sweep.studyfile.samplers", "sweep.studyfile.space", "objectives.config"} <= modules


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_field_has_a_description(name: str) -> None:
    model = MODELS[name]
    missing = [key for key, info in model.model_fields.items() if not (info.description or "").strip()]
    assert not missing, f"{name}: no Field(description=...) for {', '.join(missing)}"


@pytest.mark.parametrize("name", sorted(MODELS))
def test_the_descriptions_are_in_the_json_schema(name: str) -> None:
    """``model_json_schema()`` carries them too (what an editor reads for a YAML schema)."""
    properties = MODELS[name].model_json_schema()["properties"]
    assert {key for key, p in properties.items() if not p.get("description")} == set()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_no_docstring_keeps_a_second_copy(name: str) -> None:
    """A model's docstring keeps no ``Attributes:`` section: the field descriptions are the one copy."""
    assert "Attributes:" not in (MODELS[name].__doc__ or "")
