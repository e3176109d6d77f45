"""Vectorized trials of the alternating loop: each member equals its standalone run (objectives.alternating)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest
import torch

from objectives.alternating import train
from objectives.batched import group_key
from objectives.config import AlternatingConfig
from objectives.helpers import NonFiniteLossError
from objectives.loops import train_group, why_not
from objectives.problems import CoupledProblem, build_problem

OPTIONS = {"n_train": 120, "code_dim": 4, "hidden": 8}
F64 = {"rtol": 1e-12, "atol": 1e-12}


def problem64() -> CoupledProblem:
    p = build_problem("digits_codes", OPTIONS, 0, "alternating", CoupledProblem)
    x, y, t = p.train
    xv, yv, tv = p.val
    ma, mb = p.make_model_a, p.make_model_b
    return dataclasses.replace(
        p,
        train=(x.double(), y, t.double()),
        val=(xv.double(), yv, tv.double()),
        make_model_a=lambda: ma().double(),
        make_model_b=lambda: mb().double(),
    )


def members(mode: str, kind: str, n_weights: int = 2, **kw: Any) -> list[AlternatingConfig]:
    out = []
    for i in range(3):

        def opt(lr: float, wd: float, i: int = i) -> dict[str, Any]:
            return {
                "type": kind,
                "lr": lr,
                "weight_decay": wd,
                "momentum": (0.9, 0.5, 0.0)[i],
                "betas": ((0.9, 0.999), (0.8, 0.99), (0.95, 0.9))[i],
                "schedule": {"type": "cosine", "min_lr_ratio": (0.0, 0.1, 0.5)[i]},
            }

        scale = 0.1 if kind == "sgd" else 0.01
        weights = ((0.5, 0.5, 0.2), (0.9, 0.1, 1.0), (0.2, 1.3, 0.0))[i][:n_weights]
        out.append(
            AlternatingConfig(
                problem={"name": "digits_codes", "options": OPTIONS},
                seed=20 + i,
                data_seed=0,
                device="cpu",
                epochs=3,
                batch_size=32,
                mode=mode,
                weights=weights,
                model_a={"optimizer": opt(scale * (1 + i), 0.01 * i), "grad_clip": (None, 1.0, 0.1)[i]},
                model_b={"optimizer": opt(scale * (3 - i), 0.0), "grad_clip": (0.5, None, None)[i]},
                **kw,
            )
        )
    return out


class Recorder:
    def __init__(self) -> None:
        self.metrics: list[dict[str, float]] = []
        self.params: list[dict[str, torch.Tensor]] = []

    def checkpoint(self, epoch: int, metrics: Any, models: Any) -> None:
        self.params.append(
            {f"{n}.{k}": v.detach().clone() for n, m in models.items() for k, v in m.state_dict().items()}
        )

    def report(self, epoch: int, metrics: Any) -> None:
        self.metrics.append(dict(metrics))


def check(cs: list[AlternatingConfig], p: CoupledProblem) -> list:
    recs = [Recorder() for _ in cs]
    results = train_group(cs, [r.report for r in recs], problem=p, checkpoints=[r.checkpoint for r in recs])
    for c, rec in zip(cs, recs, strict=True):
        ref = Recorder()
        train(c, ref.report, problem=p, checkpoint=ref.checkpoint)
        assert len(ref.metrics) == len(rec.metrics) == c.epochs
        for ma, mb in zip(ref.metrics, rec.metrics, strict=True):
            assert set(ma) == set(mb)
            for key in ma:
                if key != "peak_memory_mb":
                    assert math.isclose(ma[key], mb[key], rel_tol=1e-12, abs_tol=1e-12), (key, ma[key], mb[key])
        for pa, pb in zip(ref.params, rec.params, strict=True):
            for key in pa:
                torch.testing.assert_close(pa[key], pb[key], **F64)
    return results


@pytest.mark.parametrize("mode", ["alternate", "b_on_detached", "joint"])
@pytest.mark.parametrize("kind", ["sgd", "adam", "adamw"])
def test_each_member_equals_its_standalone_run(mode: str, kind: str) -> None:
    check(members(mode, kind), problem64())


@pytest.mark.parametrize("mode", ["alternate", "joint"])
def test_consistency_term_model_steps_and_steps_per_cycle(mode: str) -> None:
    extra = {"steps_a": 2, "steps_b": 1, "epoch": "model_steps"} if mode == "alternate" else {}
    check(members(mode, "adam", n_weights=3, **extra), problem64())


@pytest.mark.parametrize("weighting", [{"type": "dwa"}, {"type": "rlw"}])
def test_dynamic_weights_known_before_the_step(weighting: dict) -> None:
    cs = [
        AlternatingConfig.model_validate({**c.model_dump(), "weighting": weighting})
        for c in members("alternate", "sgd")
    ]
    check(cs, problem64())


def test_every_member_stopped_at_once_ends_the_group() -> None:
    """A whole group pruned at the same epoch leaves no member: each gets its reason, nothing else fails."""

    class Stop(Exception):
        pass

    def stop(_epoch: int, _metrics: Any) -> None:
        raise Stop

    cs = members("alternate", "adam")
    results = train_group(cs, [stop] * len(cs), problem=problem64())
    assert all(isinstance(r, Stop) for r in results)


def test_a_diverging_member_fails_alone() -> None:
    p = problem64()
    cs = members("joint", "sgd")
    bad = cs[1].model_dump()
    bad["model_a"]["optimizer"]["lr"] = 1e8
    bad["model_a"]["grad_clip"] = None
    cs[1] = AlternatingConfig.model_validate(bad)
    results = train_group(cs, [None] * 3, problem=p)
    assert isinstance(results[1], NonFiniteLossError)
    for i in (0, 2):
        assert results[i] == {k: v for k, v in train(cs[i], problem=p).items()} | {
            "peak_memory_mb": results[i]["peak_memory_mb"]
        }


def test_grouping_keeps_what_must_be_equal() -> None:
    a, b, _ = members("alternate", "adam")
    assert group_key(a) == group_key(b)
    assert group_key(a) != group_key(a.model_copy(update={"mode": "joint"}))
    assert group_key(a) != group_key(members("alternate", "adam", n_weights=3)[0])
    p = build_problem("digits_codes", OPTIONS, 0, "alternating", CoupledProblem)
    assert why_not([a, b], p) == ""
    three = members("alternate", "adam", n_weights=3)
    own = dataclasses.replace(p, consistency=lambda z, out, y, t, model_b: torch.mean((out - model_b(t)) ** 2))
    assert why_not(three, own) == ""  # the problem's own term is vectorized (it runs under vmap)
    noisy = dataclasses.replace(p, consistency=lambda z, out, y, t, model_b: torch.mean(out * torch.randn_like(out)))
    assert why_not(three, noisy).startswith("the problem's own consistency function does not run under torch.vmap")
    assert "random" in why_not(three, noisy)  # its own draws would differ from each member's standalone run


def two_views(
    z: torch.Tensor,
    y_hat: torch.Tensor,
    y: torch.Tensor,
    t_a: torch.Tensor,
    model_b: Any,
    *,
    x: torch.Tensor,
    model_a: Any,
) -> torch.Tensor:
    """B on A's code of a second view of x (reversed pixels, dimmed) against B's answer on the batch."""
    return torch.mean((model_b(model_a(0.5 * x.flip(-1))) - y_hat) ** 2)


def five_arguments(
    z: torch.Tensor, y_hat: torch.Tensor, y: torch.Tensor, t_a: torch.Tensor, model_b: Any
) -> torch.Tensor:
    """An old-style term: KL(B(t_a) ‖ B(z)) of B's class distributions, batch mean."""
    target = torch.log_softmax(model_b(t_a), -1)
    return (target.exp() * (target - torch.log_softmax(y_hat, -1))).sum(-1).mean()


@pytest.mark.parametrize("mode", ["alternate", "b_on_detached", "joint"])
def test_own_consistency_with_x_and_model_a_equals_the_standalone_run(mode: str) -> None:
    """A term using x and model A (keywords) trains every member as its standalone run does, and each
    member's logged val_consistency_loss is the term computed directly on its trained models."""
    p = dataclasses.replace(problem64(), consistency=two_views)
    cs = members(mode, "adam", n_weights=3)
    recs = [Recorder() for _ in cs]
    train_group(cs, [r.report for r in recs], problem=p, checkpoints=[r.checkpoint for r in recs])
    check(cs, p)
    xv, yv, tv = p.val
    for rec in recs:
        a, b = p.make_model_a(), p.make_model_b()
        a.load_state_dict({k[len("model_a.") :]: v for k, v in rec.params[-1].items() if k.startswith("model_a.")})
        b.load_state_dict({k[len("model_b.") :]: v for k, v in rec.params[-1].items() if k.startswith("model_b.")})
        with torch.no_grad():
            zv = a(xv)
            want = two_views(zv, b(zv), yv, tv, b, x=xv, model_a=a)
        assert math.isclose(rec.metrics[-1]["val_consistency_loss"], want.item(), rel_tol=1e-6)  # logged as float32


def test_own_five_argument_consistency_equals_the_standalone_run() -> None:
    """An old-style five-argument term is vectorized too (it used to make the group train one by one)."""
    p = dataclasses.replace(problem64(), consistency=five_arguments)
    assert why_not(members("joint", "sgd", n_weights=3), p) == ""
    check(members("joint", "sgd", n_weights=3), p)
