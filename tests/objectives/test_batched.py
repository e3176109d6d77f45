"""Vectorized trials (objectives.batched): each member of a group trains exactly as its standalone run.

Exactness is checked member by member against :func:`objectives.dual_loss.train` (which uses
``torch.optim``'s own optimizers and schedulers): every epoch's metrics and parameters, to 1e-12 in
float64 and to float32 round-off in float32.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any

import pytest
import torch

from objectives.batched import VARIES, group_key
from objectives.batched.optim import BatchedOptimizer
from objectives.config import AlternatingConfig, DualLossConfig, OptimizerConfig
from objectives.dual_loss import train
from objectives.helpers import NonFiniteLossError
from objectives.loops import train_group, why_not
from objectives.problems import Problem, build_problem

DIGITS = {"n_a": 96, "n_b": 40, "n_val": 50, "hidden": 8}
F64 = {"rtol": 1e-12, "atol": 1e-12}
F32 = {"rtol": 1e-5, "atol": 1e-6}  # float32: batched and unbatched matrix products round differently


def problem(dtype: torch.dtype = torch.float64, name: str = "digits_pair", options: dict | None = None) -> Problem:
    """A small built-in problem with its data and model in ``dtype``."""
    built = build_problem(name, options or DIGITS, 0, "dual_loss", Problem)

    def cast(task: Any) -> Any:
        x, y = task.train
        xv, yv = task.val
        cast_y = (lambda t: t.to(dtype)) if y.is_floating_point() else (lambda t: t)
        return dataclasses.replace(task, train=(x.to(dtype), cast_y(y)), val=(xv.to(dtype), cast_y(yv)))

    make = built.make_model
    return dataclasses.replace(built, make_model=lambda: make().to(dtype), a=cast(built.a), b=cast(built.b))


def cfg(**kw: Any) -> DualLossConfig:
    fields: dict[str, Any] = {
        "problem": {"name": "digits_pair", "options": DIGITS},
        "seed": 0,
        "data_seed": 0,
        "device": "cpu",
        "epochs": 3,
        "batch_size": 16,
    }
    fields.update(kw)
    return DualLossConfig(**fields)


def members(kind: str) -> list[DualLossConfig]:
    """Three members differing in everything VARIES lists, with schedules of one type."""
    extra = [
        {"momentum": 0.9, "betas": (0.9, 0.999)},
        {"momentum": 0.5, "betas": (0.8, 0.99)},
        {"momentum": 0.0, "betas": (0.95, 0.9)},
    ]
    lrs = (0.05, 0.2, 0.1) if kind == "sgd" else (0.01, 0.003, 0.02)
    out = []
    for i, (lr, more) in enumerate(zip(lrs, extra, strict=True)):
        opt = {"type": kind, "lr": lr, "weight_decay": (0.0, 0.01, 0.1)[i], **more}
        opt["schedule"] = {"type": "cosine", "min_lr_ratio": (0.0, 0.1, 0.5)[i]}
        out.append(
            cfg(
                optimizer=opt,
                weights=((0.5, 0.5), (0.9, 0.1), (0.2, 1.3))[i],
                seed=10 + i,
                grad_clip=(None, 1.0, 0.05)[i],
                weight_schedule={"type": "linear", "target": "b", "start": (0.0, 0.5, 1.0)[i]},
            )
        )
    return out


class Recorder:
    """Every epoch's metrics and parameters of one training."""

    def __init__(self, stop_at: int | None = None) -> None:
        self.metrics: list[dict[str, float]] = []
        self.params: list[dict[str, torch.Tensor]] = []
        self.stop_at = stop_at

    def checkpoint(self, epoch: int, metrics: Any, models: Any) -> None:
        self.params.append({k: v.detach().clone() for k, v in models["model"].state_dict().items()})

    def report(self, epoch: int, metrics: Any) -> None:
        self.metrics.append(dict(metrics))
        if self.stop_at == epoch:
            raise Stop(f"stopped at epoch {epoch}")


class Stop(Exception):
    pass


def standalone(c: DualLossConfig, p: Problem) -> Recorder:
    rec = Recorder()
    train(c, rec.report, problem=p, checkpoint=rec.checkpoint)
    return rec


def grouped(cs: list[DualLossConfig], p: Problem, stops: dict[int, int] | None = None) -> tuple[list[Recorder], list]:
    recs = [Recorder((stops or {}).get(i)) for i in range(len(cs))]
    results = train_group(cs, [r.report for r in recs], problem=p, checkpoints=[r.checkpoint for r in recs])
    return recs, results


def assert_same(a: Recorder, b: Recorder, tol: dict[str, float]) -> None:
    assert len(a.metrics) == len(b.metrics) > 0
    for ma, mb in zip(a.metrics, b.metrics, strict=True):
        assert set(ma) == set(mb)
        for key in ma:
            if key != "peak_memory_mb":
                assert math.isclose(ma[key], mb[key], rel_tol=tol["rtol"], abs_tol=tol["atol"]), (key, ma[key], mb[key])
    for pa, pb in zip(a.params, b.params, strict=True):
        for key in pa:
            torch.testing.assert_close(pa[key], pb[key], **tol)


@pytest.mark.parametrize("kind", ["sgd", "adam", "adamw"])
@pytest.mark.parametrize("mixing", ["cycle", "zip", "accumulate"])
def test_each_member_equals_its_standalone_run_in_float64(kind: str, mixing: str) -> None:
    p = problem(torch.float64)
    cs = [c.model_copy(update={"mixing": mixing}) for c in members(kind)]
    recs, results = grouped(cs, p)
    for c, rec, result in zip(cs, recs, results, strict=True):
        assert_same(standalone(c, p), rec, F64)
        assert result == rec.metrics[-1]


@pytest.mark.parametrize("weighting", [{"type": "dwa", "temperature": 1.5}, {"type": "rlw"}])
@pytest.mark.parametrize("mixing", ["cycle", "accumulate"])
def test_dynamic_weights_known_before_the_step_are_each_members_own(weighting: dict, mixing: str) -> None:
    p = problem(torch.float64)
    cs = [
        DualLossConfig.model_validate({**c.model_dump(), "weighting": weighting, "mixing": mixing})
        for c in members("adam")
    ]
    recs, _ = grouped(cs, p)
    for c, rec in zip(cs, recs, strict=True):
        assert_same(standalone(c, p), rec, F64)
    assert len({rec.metrics[-1]["weight_a"] for rec in recs}) == 3  # each its own weights


@pytest.mark.parametrize("kind", ["sgd", "adamw"])
@pytest.mark.parametrize("mixing", ["cycle", "accumulate"])
def test_gradient_accumulation_groups_equal_the_standalone_run(kind: str, mixing: str) -> None:
    p = problem(torch.float64)
    cs = [c.model_copy(update={"mixing": mixing, "grad_accum_steps": 3}) for c in members(kind)]
    cs = [DualLossConfig.model_validate(c.model_dump()) for c in cs]
    recs, _ = grouped(cs, p)
    for c, rec in zip(cs, recs, strict=True):
        assert_same(standalone(c, p), rec, F64)


@pytest.mark.parametrize("kind", ["sgd", "adam", "adamw"])
def test_each_member_equals_its_standalone_run_in_float32(kind: str) -> None:
    p = problem(torch.float32)
    cs = members(kind)
    recs, _ = grouped(cs, p)
    for c, rec in zip(cs, recs, strict=True):
        assert_same(standalone(c, p), rec, F32)


@pytest.mark.parametrize("schedule", [{"type": "step", "every_epochs": 1, "gamma": 0.5}, {"type": "plateau"}])
def test_lr_schedules_are_each_members_own(schedule: dict) -> None:
    p = problem(torch.float64)
    cs = [
        DualLossConfig.model_validate(
            {**c.model_dump(), "optimizer": {**c.optimizer.model_dump(), "schedule": schedule}}
        )
        for c in members("adam")
    ]
    recs, _ = grouped(cs, p)
    for c, rec in zip(cs, recs, strict=True):
        assert_same(standalone(c, p), rec, F64)


def test_a_stopped_member_leaves_the_others_as_a_group_without_it() -> None:
    p = problem(torch.float64)
    cs = members("adam")
    recs, results = grouped(cs, p, stops={1: 0})
    assert isinstance(results[1], Stop) and len(recs[1].metrics) == 1
    without, _ = grouped([cs[0], cs[2]], p)
    for rec, ref in zip([recs[0], recs[2]], without, strict=True):
        drop = [{k: v for k, v in m.items() if k != "peak_memory_mb"} for m in (*rec.metrics, *ref.metrics)]
        assert drop[: len(rec.metrics)] == drop[len(rec.metrics) :]  # bit-identical
        for pa, pb in zip(rec.params, ref.params, strict=True):
            assert all(torch.equal(pa[k], pb[k]) for k in pa)


@pytest.mark.parametrize("epoch", [0, 1])
def test_every_member_stopped_at_once_ends_the_group(epoch: int) -> None:
    """A whole group pruned at the same epoch leaves no member: each gets its reason, nothing else fails (the
    rows kept were an empty float tensor, which cannot index)."""
    p = problem(torch.float64)
    cs = members("adam")
    recs, results = grouped(cs, p, stops=dict.fromkeys(range(len(cs)), epoch))
    assert all(isinstance(r, Stop) for r in results)
    assert [len(r.metrics) for r in recs] == [epoch + 1] * len(cs)


def test_a_diverging_member_fails_alone() -> None:
    p = problem(torch.float64)
    cs = members("sgd")
    cs[1] = cs[1].model_copy(update={"optimizer": cs[1].optimizer.model_copy(update={"lr": 1e6}), "grad_clip": None})
    recs, results = grouped(cs, p)
    assert isinstance(results[1], NonFiniteLossError)
    for i in (0, 2):
        assert_same(standalone(cs[i], p), recs[i], F64)
    with pytest.raises(NonFiniteLossError) as alone:
        standalone(cs[1], p)
    assert str(alone.value) == str(results[1])  # the same epoch and step as its standalone run


def test_batched_optimizer_matches_torch_optim_member_by_member() -> None:
    torch.manual_seed(0)
    cfgs = [
        OptimizerConfig(type="adamw", lr=0.01, weight_decay=0.1, betas=(0.9, 0.99)),
        OptimizerConfig(type="adamw", lr=0.002, weight_decay=0.0, betas=(0.5, 0.9)),
    ]
    start = torch.randn(2, 3, 4, dtype=torch.float64)
    params = {"w": start.clone()}
    opt = BatchedOptimizer(cfgs, params)
    refs = [torch.nn.Parameter(start[k].clone()) for k in range(2)]
    torch_opts = [
        torch.optim.AdamW([r], lr=c.lr, weight_decay=c.weight_decay, betas=c.betas)
        for r, c in zip(refs, cfgs, strict=True)
    ]
    for _ in range(5):
        grads = torch.randn(2, 3, 4, dtype=torch.float64)
        opt.step({"w": grads}, {k: v[0] for k, v in opt.tables([[c.lr for c in cfgs]], torch.device("cpu")).items()})
        for k, (r, o) in enumerate(zip(refs, torch_opts, strict=True)):
            r.grad = grads[k].clone()
            o.step()
    for k in range(2):
        torch.testing.assert_close(params["w"][k], refs[k].detach(), rtol=0, atol=1e-15)


def _leaves(tree: dict[str, Any], prefix: str = "") -> list[str]:
    """The dotted paths of every value in a config dump that is not itself a mapping (lists are values)."""
    paths = []
    for key, value in tree.items():
        path = f"{prefix}{key}"
        paths += _leaves(value, path + ".") if isinstance(value, dict) else [path]
    return paths


def _with(tree: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of a config dump with the value at a dotted path replaced."""
    out = copy.deepcopy(tree)
    *parents, last = path.split(".")
    node = out
    for key in parents:
        node = node[key]
    node[last] = value
    return out


# Both loops' shared fields: a valid other value for each (a key names a value or a whole section).
COMMON_CHANGES: dict[str, Any] = {
    "problem.name": "linear_pair",
    "epochs": 4,
    "batch_size": 24,
    "weighting": {"type": "rlw"},  # another strategy (its options go with it)
    "weighting.temperature": 1.0,
    "weight_schedule.type": "cosine",
    "weight_schedule.start": 0.25,
    "weight_schedule.ramp_fraction": 0.6,
    "eval_batch_size": 7,
    "data.num_workers": 1,
    "data.pin_memory": True,
    "data.persistent_workers": True,
    "data.prefetch_factor": 2,
    "data.drop_last": True,
    "data.steps_per_epoch": 5,
    "precision": "bf16",
    "compile": True,
    "checkpoint": "best",
    "early_stopping.patience": 3,
    "early_stopping.min_delta": 0.01,
    "device": "cuda",
    "seed": 11,
    "data_seed": 1,
    "repeats": 2,
}
OPTIMIZER_CHANGES: dict[str, Any] = {
    "type": "adam",
    "lr": 0.2,
    "weight_decay": 0.05,
    "momentum": 0.3,
    "betas": [0.5, 0.6],
    "schedule.type": "warmup",  # another type that has min_lr_ratio too
    "schedule.min_lr_ratio": 0.3,
}
DUAL_BASE = cfg(
    optimizer={"type": "sgd", "lr": 0.05, "schedule": {"type": "cosine", "min_lr_ratio": 0.1}},
    weighting={"type": "dwa", "temperature": 2.0},
    weight_schedule={"type": "linear", "target": "b", "start": 0.5},
    grad_clip=1.0,
    early_stopping={"patience": 2},
)
DUAL_CHANGES: dict[str, Any] = {
    **COMMON_CHANGES,
    **{f"problem.options.{k}": v + 8 for k, v in DIGITS.items()},
    "weight_schedule.target": "a",
    "batch_size_b": 8,
    "batch_sizes": {"a": 8},
    "tasks": ["b", "a"],  # the same two tasks, weighted in the other order
    "mixing": "zip",
    **{f"optimizer.{k}": v for k, v in OPTIMIZER_CHANGES.items()},
    "grad_accum_steps": 2,
    "grad_clip": 0.5,
    "weights": [0.9, 0.1],
}
# What VARIES says may differ, as the dual loop's paths (a schedule's options: not its type or target).
DUAL_MAY_VARY = {
    "weights", "seed", "grad_clip", "optimizer.lr", "optimizer.weight_decay", "optimizer.momentum", "optimizer.betas",
    "optimizer.schedule.min_lr_ratio", "weight_schedule.start", "weight_schedule.ramp_fraction",
}  # fmt: skip
CODES = {"n_train": 96, "code_dim": 4, "hidden": 8}
ALTERNATING_BASE = AlternatingConfig(
    problem={"name": "digits_codes", "options": CODES},
    seed=0,
    data_seed=0,
    device="cpu",
    epochs=3,
    batch_size=16,
    steps_b=2,
    weights=(0.4, 0.4, 0.2),
    weighting={"type": "dwa", "temperature": 2.0},
    weight_schedule={"type": "linear", "target": "consistency", "start": 0.5},
    early_stopping={"patience": 2},
    **{
        f"model_{m}": {
            "optimizer": {"type": "sgd", "lr": lr, "schedule": {"type": "cosine", "min_lr_ratio": 0.1}},
            "grad_clip": 1.0,
        }
        for m, lr in (("a", 0.05), ("b", 0.1))
    },
)
ALTERNATING_CHANGES: dict[str, Any] = {
    **COMMON_CHANGES,
    **{f"problem.options.{k}": v + 8 for k, v in CODES.items()},
    "weight_schedule.target": "b",
    "mode": "joint",
    "epoch": "model_steps",
    "steps_a": 2,
    "steps_b": 3,
    **{f"model_{m}.optimizer.{k}": v for m in "ab" for k, v in OPTIMIZER_CHANGES.items()},
    "model_a.grad_clip": 0.5,
    "model_b.grad_clip": 0.5,
    "weights": [0.1, 0.3, 0.6],
}
ALTERNATING_MAY_VARY = {
    "weights", "seed", "weight_schedule.start", "weight_schedule.ramp_fraction",
    *(f"model_{m}.{k}" for m in "ab" for k in ("grad_clip", "optimizer.lr", "optimizer.weight_decay",
                                                "optimizer.momentum", "optimizer.betas",
                                                "optimizer.schedule.min_lr_ratio")),
}  # fmt: skip


@pytest.mark.parametrize(
    ("base", "changes", "may_vary"),
    [(DUAL_BASE, DUAL_CHANGES, DUAL_MAY_VARY), (ALTERNATING_BASE, ALTERNATING_CHANGES, ALTERNATING_MAY_VARY)],
    ids=["dual_loss", "alternating"],
)
def test_group_key_ignores_exactly_what_varies(base: Any, changes: dict[str, Any], may_vary: set[str]) -> None:
    """Walking every field of a config: changing one that VARIES lists (alone, or all of them at once)
    keeps the group key; changing any other gives another key. ``loop`` is the config's class (another
    loop is another type of config), and the number of loss weights must match too."""
    heads = {entry.split()[0] for entry in VARIES}  # "optimizer.lr (alternating: ...)" → "optimizer.lr"
    if isinstance(base, DualLossConfig):  # VARIES names the dual loop's paths: each is one that may vary here
        assert all(any(p == h or p.startswith(h + ".") for h in heads) for p in may_vary)
        assert all(any(p == h or p.startswith(h + ".") for p in may_vary) for h in heads)
    dump = base.model_dump(mode="json")
    covered = {leaf for leaf in _leaves(dump) if any(leaf == k or leaf.startswith(k + ".") for k in changes)}
    assert covered == set(_leaves(dump)) - {"loop"}  # every field is walked: a new field needs a row above
    assert may_vary <= set(changes)
    key = group_key(base)
    for path, value in changes.items():
        changed = type(base).model_validate(_with(dump, path, value))
        assert changed != base, path
        assert (group_key(changed) == key) == (path in may_vary), path
    everything = dump
    for path in may_vary:
        everything = _with(everything, path, changes[path])
    assert group_key(type(base).model_validate(everything)) == key
    if isinstance(base, AlternatingConfig):
        assert group_key(base.model_copy(update={"weights": (0.5, 0.5)})) != key


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"batch_size": 8}, "differ in batch_size"),
        ({"weighting": {"type": "uncertainty"}}, "weighting uncertainty"),
        ({"weighting": {"type": "famo"}}, "weighting famo"),
        ({"precision": "bf16"}, "precision bf16"),
        ({"compile": True}, "compile"),
    ],
)
def test_why_not_names_what_cannot_be_vectorized(change: dict, says: str) -> None:
    p = problem(torch.float32)
    a, b, _ = members("adam")
    if "batch_size" in change:
        cs = [a, DualLossConfig.model_validate({**b.model_dump(), **change})]
    else:
        cs = [DualLossConfig.model_validate({**c.model_dump(), **change}) for c in (a, b)]
    assert says in why_not(cs, p)
    with pytest.raises(ValueError, match=says.split()[0]):
        train_group(cs, [None, None], problem=p)


def test_why_not_refuses_buffers_and_dropout() -> None:
    p = problem(torch.float32)
    cs = members("adam")[:2]
    assert why_not(cs, p) == ""
    bn = dataclasses.replace(p, make_model=lambda: torch.nn.Sequential(torch.nn.BatchNorm1d(128)))
    assert "buffers" in why_not(cs, bn)
    drop = dataclasses.replace(p, make_model=lambda: torch.nn.Sequential(torch.nn.Dropout(0.1)))
    assert "dropout" in why_not(cs, drop)
