"""Field coverage of vectorized groups: every field of every loop config is either trained exactly in a
group (a case of :mod:`tests.objectives.group_cases` sets it, and each member equals its standalone run)
or refused for grouping by :func:`objectives.loops.why_not` with a reason, so the next field cannot drift."""

from __future__ import annotations

import math
import types
import typing
from collections.abc import Iterator
from typing import Any, Literal, Union, get_args, get_origin

import pytest
import torch
from pydantic import BaseModel

from objectives.config import LoopCommon
from objectives.loops import LOOPS, train_group, why_not
from objectives.weighting import names_with
from tests.objectives.group_cases import Recorder, cases, problem_for

CASES = cases()
F64 = {"rtol": 1e-12, "atol": 1e-12}

# Refused for grouping, by key prefix (see _checks), with the change that shows it: every key starting
# with one is accounted for by the refusal.
REFUSED: dict[str, dict[str, Any]] = {
    **{
        f"weighting[{t}]": {"weighting": {"type": t}}
        for t in names_with(weights_before_step=False)  # every strategy whose gradient is not Σ w_i ∇L_i
    },
    "precision='bf16'": {"precision": "bf16"},
    "precision='fp16'": {"precision": "fp16", "device": "cuda"},
    "compile=True": {"compile": True},
    "compile.": {"compile": {"mode": "default"}},
    "repeats": {"repeats": 2},  # a trial's own seeds are its group (objectives.repeats)
}


# --- the walk over a config class's fields --------------------------------------------------------


class Check(typing.NamedTuple):
    """One thing a group must cover: a field set away from its default, or a literal field at one value.

    ``key`` is ``path`` or ``path=value``; a path names a discriminated union's variant in brackets
    (``optimizer.schedule[warmup].decay``).
    """

    key: str
    steps: tuple[tuple[str, str | None], ...]  # (field, the variant's ``type`` or None)
    value: Any  # the literal value, or _DEFAULT: any value but the default
    default: Any


_DEFAULT = object()
_REQUIRED = object()


def _unwrap(ann: Any) -> list[Any]:
    """The alternatives of an annotation (Annotated, Union and Optional taken apart; None dropped)."""
    if get_origin(ann) is typing.Annotated:
        return _unwrap(get_args(ann)[0])
    if get_origin(ann) in (Union, types.UnionType):
        return [a for arg in get_args(ann) for a in _unwrap(arg)]
    return [] if ann is type(None) else [ann]


def _checks(model: type[BaseModel], steps: tuple[tuple[str, str | None], ...] = ()) -> Iterator[Check]:
    prefix = ".".join(f"{n}[{v}]" if v else n for n, v in steps)
    for name, field in model.model_fields.items():
        if not steps and name == "loop":
            continue  # the record's name: another loop is another config type
        alts = _unwrap(field.annotation)
        models = [a for a in alts if isinstance(a, type) and issubclass(a, BaseModel)]
        plain = [a for a in alts if a not in models]
        path = f"{prefix}.{name}" if prefix else name
        default = _REQUIRED if field.is_required() else field.get_default(call_default_factory=True)
        if plain:
            literals = [v for a in plain for v in (get_args(a) if get_origin(a) is Literal else ())]
            literals += [True, False] if bool in plain else []
            for value in literals or [_DEFAULT]:
                key = path if value is _DEFAULT else f"{path}={value!r}"
                yield Check(key, (*steps, (name, None)), value, default)
        for sub in models:
            variant = typing.cast(Any, sub.model_fields["type"].default) if len(models) > 1 else None
            yield from _checks(sub, (*steps, (name, variant)))


def _covers(cfg: LoopCommon, check: Check) -> bool:
    node: Any = cfg
    for name, variant in check.steps[:-1]:
        node = getattr(node, name)
        if not isinstance(node, BaseModel) or (variant is not None and node.type != variant):  # type: ignore[attr-defined]
            return False
    name, _ = check.steps[-1]
    if not isinstance(node, BaseModel) or name not in type(node).model_fields:
        return False
    value = getattr(node, name)
    if check.value is not _DEFAULT:
        return type(value) is type(check.value) and value == check.value
    return check.default is _REQUIRED or value != check.default


def _refusal(key: str) -> str | None:
    return next((prefix for prefix in REFUSED if key == prefix or key.startswith(prefix)), None)


# --- the tests ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(LOOPS))
def test_every_field_is_trained_exactly_in_a_group_or_refused_with_a_reason(name: str) -> None:
    """Walk every field of the loop's config (each variant of a union, each value of a literal): some
    exactness case sets it away from its default, or :func:`why_not` refuses it (:data:`REFUSED`)."""
    loop = LOOPS[name]
    assert loop.train_group is not None
    members = [cfg for case, cfgs in CASES.items() if case.startswith(name + "/") for cfg in cfgs]
    checks = list(_checks(loop.config))
    assert len(checks) > 40  # the walk reaches the nested sections
    missing = [c.key for c in checks if not any(_covers(m, c) for m in members) and _refusal(c.key) is None]
    assert not missing, (
        f"loop {name}: neither set by a batched exactness case (tests/objectives/group_cases.py) nor refused "
        f"by objectives.loops.why_not (REFUSED): {missing}"
    )
    used = {_refusal(c.key) for c in checks} - {None}
    assert used == set(REFUSED)  # every refusal names fields this loop has


@pytest.mark.parametrize("name", sorted(LOOPS))
@pytest.mark.parametrize("refused", sorted(REFUSED))
def test_each_refusal_is_a_reason_from_why_not(name: str, refused: str) -> None:
    first, second = next(cfgs for case, cfgs in CASES.items() if case.startswith(name + "/"))
    change = REFUSED[refused]
    cfgs = [type(c).model_validate({**c.model_dump(mode="json"), **change}) for c in (first, second)]
    p = problem_for(name)
    assert why_not([first, second], p) == ""
    reason = why_not(cfgs, p)
    assert len(reason) > 20, reason
    if "device" not in change or torch.cuda.is_available():  # the group moves the problem to the device first
        with pytest.raises(ValueError, match=reason.split()[0]):
            train_group(cfgs, [None, None], problem=p)


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_member_of_a_case_equals_its_standalone_run(case: str) -> None:
    """Every epoch's metrics and parameters, to 1e-12 in float64."""
    cfgs = CASES[case]
    loop = LOOPS[cfgs[0].loop]  # type: ignore[attr-defined]
    p = problem_for(loop.name)
    assert why_not(cfgs, p) == ""
    grouped = [Recorder() for _ in cfgs]
    results = train_group(cfgs, [r.report for r in grouped], problem=p, checkpoints=[r.checkpoint for r in grouped])
    for cfg, rec, result in zip(cfgs, grouped, results, strict=True):
        alone = Recorder()
        loop.train(cfg, alone.report, problem=p, checkpoint=alone.checkpoint)
        assert len(alone.metrics) == len(rec.metrics) == cfg.epochs
        assert result == rec.metrics[-1]
        for want, got in zip(alone.metrics, rec.metrics, strict=True):
            assert set(want) == set(got)
            for key in want.keys() - {"peak_memory_mb"}:
                assert math.isclose(want[key], got[key], rel_tol=1e-12, abs_tol=1e-12), (key, want[key], got[key])
        for want, got in zip(alone.params, rec.params, strict=True):
            for key in want:
                torch.testing.assert_close(want[key], got[key], **F64)
