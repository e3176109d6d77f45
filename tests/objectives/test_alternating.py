"""The alternating loop against independent autograd references (objectives.alternating).

The references below never call the loop's helpers: they rebuild the objective
``L = w_a·mse(A(x), t) + w_b·mse(B(A(x)), y) [+ w_c·mean((B(A(x)) − B(t))²)]`` on fresh copies of the
initial models and apply ``p -= lr·g`` by hand with gradients from ``torch.autograd.grad``.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from objectives import alternating
from objectives.alternating import train
from objectives.config import AlternatingConfig
from objectives.helpers import NonFiniteLossError
from objectives.problems import CoupledProblem, build_problem

N = 16  # synthetic training rows; batch_size = N makes every step full-batch (order irrelevant)
N_VAL = 12
LR_A, LR_B = 0.1, 0.3  # different on purpose: swapped parameter groups would show
DIGITS = {"n_train": 200, "code_dim": 4, "hidden": 16}
W2 = (0.3, 0.7)
W3 = (0.3, 0.7, 0.5)
TOL = {"rtol": 1e-5, "atol": 1e-6}


# --- helpers --------------------------------------------------------------------------------------


def mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return nn.functional.mse_loss(pred, target)


def synthetic_problem(**options: Any) -> CoupledProblem:
    """x: (n, 4); A = Linear(4,3)+Tanh+Linear(3,3) (two layers); B = Linear(3,2); mse for both losses.
    ``options``: further CoupledProblem fields (a user consistency loss, metrics on A's output)."""
    g = torch.Generator().manual_seed(123)

    def split(rows: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = torch.randn(rows, 4, generator=g)
        t = torch.tanh(x[:, :3]) + 0.3 * torch.randn(rows, 3, generator=g)
        y = torch.randn(rows, 2, generator=g)
        return x, y, t

    return CoupledProblem(
        make_model_a=lambda: nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 3)),
        make_model_b=lambda: nn.Linear(3, 2),
        train=split(N),
        val=split(N_VAL),
        loss_a=mse,
        loss_b=mse,
        **options,
    )


def sgd(lr: float, **kw: Any) -> dict[str, Any]:
    """A ModelConfig dict for plain SGD (no momentum, no weight decay) unless overridden."""
    return {"optimizer": {"type": "sgd", "lr": lr, "momentum": 0.0, "weight_decay": 0.0}, **kw}


def make_cfg(**kw: Any) -> AlternatingConfig:
    """A resolved CPU config of a small digits_codes; keyword arguments override fields."""
    fields: dict[str, Any] = {
        "problem": {"name": "digits_codes", "options": DIGITS},
        "seed": 0,
        "data_seed": 0,
        "device": "cpu",
        "epochs": 2,
        "batch_size": 64,
    }
    fields.update(kw)
    return AlternatingConfig(**fields)


def synthetic_cfg(mode: str, weights: tuple[float, ...], epochs: int, **kw: Any) -> AlternatingConfig:
    """Full-batch SGD on the synthetic problem: one epoch = one optimizer step."""
    fields: dict[str, Any] = {
        "mode": mode,
        "weights": weights,
        "epochs": epochs,
        "batch_size": N,
        "eval_batch_size": 5,  # uneven chunks: validation means must not depend on chunking
        "model_a": sgd(LR_A),
        "model_b": sgd(LR_B),
    }
    fields.update(kw)
    return make_cfg(**fields)


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class Capture:
    """Wraps a problem's ``make_model_a``/``make_model_b`` to keep the models the loop trains."""

    def __init__(self, problem: CoupledProblem) -> None:
        self.models: dict[str, list[nn.Module]] = {"a": [], "b": []}
        self.initial: dict[str, list[dict[str, torch.Tensor]]] = {"a": [], "b": []}
        self._inner = {"a": problem.make_model_a, "b": problem.make_model_b}
        self.problem = dataclasses.replace(
            problem, make_model_a=lambda: self._make("a"), make_model_b=lambda: self._make("b")
        )

    def _make(self, which: str) -> nn.Module:
        model = self._inner[which]()
        self.models[which].append(model)
        self.initial[which].append(_state(model))
        return model

    def model(self, which: str) -> nn.Module:
        assert len(self.models[which]) == 1, f"the loop should build exactly one model {which}"
        return self.models[which][0]

    def fresh(self, which: str) -> nn.Module:
        """A new module holding the captured model's initial parameters."""
        model = copy.deepcopy(self.model(which))
        model.load_state_dict(self.initial[which][0])
        return model


class Recorder:
    """A reporter that keeps every call and, if given a Capture, a snapshot of both models."""

    def __init__(self, cap: Capture | None = None) -> None:
        self.cap = cap
        self.calls: list[tuple[int, dict[str, float]]] = []
        self.params: list[dict[str, dict[str, torch.Tensor]]] = []
        self.grads: list[dict[str, list[torch.Tensor | None]]] = []

    def __call__(self, epoch: int, metrics: Any) -> None:
        self.calls.append((epoch, dict(metrics)))
        if self.cap is not None:
            self.params.append({w: _state(self.cap.model(w)) for w in "ab"})
            self.grads.append(
                {w: [None if p.grad is None else p.grad.clone() for p in self.cap.model(w).parameters()] for w in "ab"}
            )


def objective(a, b, x, y, t, weights, z=None) -> torch.Tensor:
    """L written out directly; ``z`` replaces A(x) when given (e.g. a detached code)."""
    z = a(x) if z is None else z
    out = b(z)
    total = weights[0] * mse(z, t) + weights[1] * mse(out, y)
    if len(weights) == 3:
        total = total + weights[2] * ((out - b(t)) ** 2).mean()
    return total


def _descend(params: list[torch.Tensor], grads: tuple[torch.Tensor, ...], lr: float) -> None:
    with torch.no_grad():
        for p, g in zip(params, grads, strict=True):
            p -= lr * g


def reference(
    cap: Capture,
    problem: CoupledProblem,
    mode: str,
    weights: tuple[float, ...],
    n_steps: int,
    steps_a: int = 1,
    steps_b: int = 1,
    variant: str | None = None,
) -> tuple[nn.Module, nn.Module, list[float]]:
    """Full-batch SGD by hand from the captured initial models.

    Returns the final A, B and the unweighted loss terms at the parameters before the last step.
    ``variant`` gives deliberately wrong rules (negative controls) for ``alternate``:
    ``leak``: B steps also update A through z; ``stale``: every step of a cycle uses gradients of one
    graph built at the cycle's start (the ``retain_graph=True`` pattern).
    """
    a, b = cap.fresh("a"), cap.fresh("b")
    pa, pb = list(a.parameters()), list(b.parameters())
    x, y, t = problem.train
    cycle = steps_a + steps_b
    stale: dict[str, tuple[torch.Tensor, ...]] = {}
    terms: list[float] = []
    for k in range(n_steps):
        with torch.no_grad():
            z, out = a(x), b(a(x))
            terms = [mse(z, t).item(), mse(out, y).item()]
            if len(weights) == 3:
                terms.append(((out - b(t)) ** 2).mean().item())
        if mode == "alternate":
            if variant == "stale" and k % cycle == 0:
                grads = torch.autograd.grad(objective(a, b, x, y, t, weights), pa + pb)
                stale = {"a": grads[: len(pa)], "b": grads[len(pa) :]}
            if k % cycle < steps_a:
                g = stale["a"] if variant == "stale" else torch.autograd.grad(objective(a, b, x, y, t, weights), pa)
                _descend(pa, g, LR_A)
            elif variant == "stale":
                _descend(pb, stale["b"], LR_B)
            elif variant == "leak":
                grads = torch.autograd.grad(objective(a, b, x, y, t, weights), pa + pb)
                _descend(pa, grads[: len(pa)], LR_A)
                _descend(pb, grads[len(pa) :], LR_B)
            else:
                code = a(x).detach()
                _descend(pb, torch.autograd.grad(objective(a, b, x, y, t, weights, z=code), pb), LR_B)
        elif mode == "b_on_detached":
            z = a(x)
            ga = torch.autograd.grad(weights[0] * mse(z, t), pa)
            gb = torch.autograd.grad(objective(a, b, x, y, t, weights, z=z.detach()), pb)
            _descend(pa, ga, LR_A)
            _descend(pb, gb, LR_B)
        else:  # joint
            grads = torch.autograd.grad(objective(a, b, x, y, t, weights), pa + pb)
            _descend(pa, grads[: len(pa)], LR_A)
            _descend(pb, grads[len(pa) :], LR_B)
    return a, b, terms


def assert_same_params(model: nn.Module, ref: nn.Module, label: str) -> None:
    for (name, p), q in zip(model.named_parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p.detach(), q.detach(), **TOL, msg=f"{label}.{name}")


def max_param_diff(model: nn.Module, ref: nn.Module) -> float:
    return max(
        (p.detach() - q.detach()).abs().max().item() for p, q in zip(model.parameters(), ref.parameters(), strict=True)
    )


def flat(state: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([v.flatten() for v in state.values()])


# --- exact updates against an autograd reference --------------------------------------------------

CASES = [
    *[("alternate", sa, sb) for sa, sb in [(1, 1), (2, 1), (1, 3)]],
    ("b_on_detached", 1, 1),
    ("joint", 1, 1),
]


@pytest.mark.parametrize("weights", [W2, W3], ids=["2w", "3w"])
@pytest.mark.parametrize(("mode", "steps_a", "steps_b"), CASES)
def test_one_cycle_matches_reference(mode, steps_a, steps_b, weights):
    """One cycle of full-batch SGD equals the mode's rule applied by hand (params, train and val losses)."""
    problem = synthetic_problem()
    cap = Capture(problem)
    n_steps = steps_a + steps_b if mode == "alternate" else 1
    cfg = synthetic_cfg(mode, weights, epochs=n_steps, steps_a=steps_a, steps_b=steps_b)
    metrics = train(cfg, problem=cap.problem)

    ref_a, ref_b, terms = reference(cap, problem, mode, weights, n_steps, steps_a, steps_b)
    assert_same_params(cap.model("a"), ref_a, "A")
    assert_same_params(cap.model("b"), ref_b, "B")
    # Both models actually moved (a no-op loop would otherwise match a no-op reference).
    for w in "ab":
        assert not torch.allclose(flat(_state(cap.model(w))), flat(cap.initial[w][0]), atol=1e-4), w

    # One step per epoch: the train losses are those at the parameters before the last step.
    names = ["train_a_loss", "train_b_loss", "train_consistency_loss"][: len(weights)]
    assert [metrics[k] for k in names] == pytest.approx(terms, rel=1e-5)
    # The validation losses are those of the final models (chunked by 5 over 12 rows).
    xv, yv, tv = problem.val
    with torch.no_grad():
        zv, out = ref_a(xv), ref_b(ref_a(xv))
        assert metrics["val_a_loss"] == pytest.approx(mse(zv, tv).item(), rel=1e-5)
        assert metrics["val_b_loss"] == pytest.approx(mse(out, yv).item(), rel=1e-5)
        if len(weights) == 3:
            assert metrics["val_consistency_loss"] == pytest.approx(((out - ref_b(tv)) ** 2).mean().item(), rel=1e-5)


@pytest.mark.parametrize("variant", ["leak", "stale", "joint", "b_on_detached"])
def test_reference_discriminates_wrong_alternation(variant):
    """Alternate (2, 1) is far from wrong rules: A learning in B steps, retain_graph-stale grads, other modes."""
    problem = synthetic_problem()
    cap = Capture(problem)
    cfg = synthetic_cfg("alternate", W3, epochs=3, steps_a=2, steps_b=1)
    train(cfg, problem=cap.problem)
    if variant in ("leak", "stale"):
        wrong_a, wrong_b, _ = reference(cap, problem, "alternate", W3, 3, 2, 1, variant=variant)
    else:
        wrong_a, wrong_b, _ = reference(cap, problem, variant, W3, 3)
    diff = max(max_param_diff(cap.model("a"), wrong_a), max_param_diff(cap.model("b"), wrong_b))
    assert diff > 1e-4  # far above the 1e-6 tolerance of the reference test


# --- no stale gradients, no cross-updates ---------------------------------------------------------


def test_alternate_steps_touch_only_their_model():
    """An A step leaves B's params and .grad (None) alone; the following B step leaves A's params and .grad alone."""
    problem = synthetic_problem()
    cap = Capture(problem)
    rec = Recorder(cap)
    train(synthetic_cfg("alternate", W3, epochs=2), report=rec, problem=cap.problem)
    (after_a_step, after_b_step), (grads_a_step, grads_b_step) = rec.params, rec.grads

    # Epoch 0 = the A step: A moved, B did not, and B's gradients were never filled.
    assert not torch.equal(flat(after_a_step["a"]), flat(cap.initial["a"][0]))
    assert torch.equal(flat(after_a_step["b"]), flat(cap.initial["b"][0]))
    assert grads_a_step["b"] == [None] * len(grads_a_step["b"])
    assert all(g is not None for g in grads_a_step["a"])
    # Epoch 1 = the B step: B moved, A kept exactly its post-A-step values and gradients.
    assert not torch.equal(flat(after_b_step["b"]), flat(after_a_step["b"]))
    assert torch.equal(flat(after_b_step["a"]), flat(after_a_step["a"]))
    for before, after in zip(grads_a_step["a"], grads_b_step["a"], strict=True):
        assert torch.equal(before, after)
    # B's parameters still require grad after the A step's freeze (the loop restores the flags).
    assert all(p.requires_grad for p in cap.model("b").parameters())


# --- several cycles with Adam: step counts, optimizers, parameter groups --------------------------


def _count_steps(monkeypatch) -> list[tuple[torch.optim.Optimizer, dict[str, int]]]:
    """Wrap the loop's build_optimizer so every optimizer built counts its own step() calls."""
    built: list[tuple[torch.optim.Optimizer, dict[str, int]]] = []
    inner = alternating.build_optimizer

    def wrapped(params, cfg):
        opt = inner(params, cfg)
        count = {"steps": 0}

        def hook(_opt, _args, _kwargs):
            count["steps"] += 1

        opt.register_step_post_hook(hook)
        built.append((opt, count))
        return opt

    monkeypatch.setattr(alternating, "build_optimizer", wrapped)
    return built


def _ids(params) -> list[int]:
    return [id(p) for p in params]


def _expected_split(total: int, steps_a: int, steps_b: int) -> tuple[int, int]:
    a = sum(1 for s in range(total) if s % (steps_a + steps_b) < steps_a)
    return a, total - a


def test_alternate_adam_counts_steps_across_epochs(monkeypatch):
    """Alternate (2, 3) with Adam/AdamW over 4 epochs of 4 batches: the cycle runs on across epochs, counts match."""
    built = _count_steps(monkeypatch)
    problem = build_problem("digits_codes", DIGITS, 0, "alternating")
    cap = Capture(problem)
    rec = Recorder()
    epochs, batch = 4, 64
    cfg = make_cfg(
        mode="alternate",
        steps_a=2,
        steps_b=3,
        weights=W3,
        epochs=epochs,
        batch_size=batch,
        model_a={"optimizer": {"type": "adam", "lr": 1e-2}, "grad_clip": 1.0},
        model_b={"optimizer": {"type": "adamw", "lr": 3e-3, "weight_decay": 0.01}},
    )
    metrics = train(cfg, report=rec, problem=cap.problem)

    per_epoch = math.ceil(DIGITS["n_train"] / batch)
    assert per_epoch == 4  # 4 steps per epoch, cycle of 5: a per-epoch counter reset would give 8/8
    total = epochs * per_epoch
    exp_a, exp_b = _expected_split(total, 2, 3)
    assert (exp_a, exp_b) == (7, 9)

    assert len(built) == 2
    (opt_a, count_a), (opt_b, count_b) = built
    assert type(opt_a) is torch.optim.Adam and type(opt_b) is torch.optim.AdamW
    assert _ids(opt_a.param_groups[0]["params"]) == _ids(cap.model("a").parameters())
    assert _ids(opt_b.param_groups[0]["params"]) == _ids(cap.model("b").parameters())
    assert (count_a["steps"], count_b["steps"]) == (exp_a, exp_b)
    assert (metrics["opt_steps_a"], metrics["opt_steps_b"]) == (exp_a, exp_b)
    # Cumulative counts after every epoch.
    for epoch, m in rec.calls:
        assert (m["opt_steps_a"], m["opt_steps_b"]) == _expected_split((epoch + 1) * per_epoch, 2, 3)
    assert all(math.isfinite(v) for v in metrics.values())
    assert (metrics["lr_a"], metrics["lr_b"]) == (1e-2, 3e-3)


def test_b_on_detached_steps_both_every_batch(monkeypatch):
    """b_on_detached: two optimizers, each steps once per batch."""
    built = _count_steps(monkeypatch)
    cfg = make_cfg(mode="b_on_detached", epochs=2, batch_size=64)
    metrics = train(cfg)
    total = 2 * math.ceil(DIGITS["n_train"] / 64)
    assert [count["steps"] for _, count in built] == [total, total]
    assert (metrics["opt_steps_a"], metrics["opt_steps_b"]) == (total, total)


def test_joint_one_optimizer_two_groups(monkeypatch):
    """Joint: one optimizer, one step per batch, group 0 = A's params/lr/wd/betas, group 1 = B's."""
    built = _count_steps(monkeypatch)
    problem = build_problem("digits_codes", DIGITS, 0, "alternating")
    cap = Capture(problem)
    cfg = make_cfg(
        mode="joint",
        epochs=2,
        batch_size=64,
        model_a={"optimizer": {"type": "adam", "lr": 1e-2, "weight_decay": 0.0, "betas": (0.8, 0.99)}},
        model_b={"optimizer": {"type": "adam", "lr": 3e-3, "weight_decay": 0.05, "betas": (0.5, 0.9)}},
    )
    metrics = train(cfg, problem=cap.problem)
    total = 2 * math.ceil(DIGITS["n_train"] / 64)

    assert len(built) == 1
    opt, count = built[0]
    assert count["steps"] == total
    assert (metrics["opt_steps_a"], metrics["opt_steps_b"]) == (total, total)
    group_a, group_b = opt.param_groups
    assert _ids(group_a["params"]) == _ids(cap.model("a").parameters())
    assert _ids(group_b["params"]) == _ids(cap.model("b").parameters())
    assert (group_a["lr"], group_a["weight_decay"], tuple(group_a["betas"])) == (1e-2, 0.0, (0.8, 0.99))
    assert (group_b["lr"], group_b["weight_decay"], tuple(group_b["betas"])) == (3e-3, 0.05, (0.5, 0.9))
    assert (metrics["lr_a"], metrics["lr_b"]) == (1e-2, 3e-3)


def test_joint_sgd_groups_keep_own_momentum(monkeypatch):
    """Joint with SGD: each parameter group keeps its own model's momentum."""
    built = _count_steps(monkeypatch)
    cfg = make_cfg(
        mode="joint",
        epochs=1,
        model_a={"optimizer": {"type": "sgd", "lr": 0.1, "momentum": 0.0}},
        model_b={"optimizer": {"type": "sgd", "lr": 0.05, "momentum": 0.9}},
    )
    train(cfg)
    group_a, group_b = built[0][0].param_groups
    assert (group_a["lr"], group_a["momentum"]) == (0.1, 0.0)
    assert (group_b["lr"], group_b["momentum"]) == (0.05, 0.9)


# --- gradient clipping ----------------------------------------------------------------------------


@pytest.mark.parametrize(("mode", "epochs"), [("joint", 1), ("b_on_detached", 1), ("alternate", 2)])
def test_grad_clip_applies_to_its_model_only(mode, epochs):
    """grad_clip 1e-3 on A with SGD lr 1: A moves by at most 1e-3, B (unclipped) by much more."""
    problem = synthetic_problem()
    cap = Capture(problem)
    cfg = synthetic_cfg(mode, W3, epochs=epochs, model_a=sgd(1.0, grad_clip=1e-3), model_b=sgd(1.0))
    train(cfg, problem=cap.problem)
    moved = {w: (flat(_state(cap.model(w))) - flat(cap.initial[w][0])).norm().item() for w in "ab"}
    assert 0 < moved["a"] <= 1e-3 * (1 + 1e-4)
    assert moved["b"] > 1e-2


# --- reporter and metrics -------------------------------------------------------------------------

BASE_KEYS = {
    "train_a_loss",
    "train_b_loss",
    "train_weighted_loss",
    "val_a_loss",
    "val_b_loss",
    "val_total_loss",
    "val_b_acc",
    "weight_a",
    "weight_b",
    "lr_a",
    "lr_b",
    "opt_steps_a",
    "opt_steps_b",
    "peak_memory_mb",
}
CONSISTENCY_KEYS = {"train_consistency_loss", "val_consistency_loss", "weight_consistency"}


@pytest.mark.parametrize("mode", ["alternate", "b_on_detached", "joint"])
@pytest.mark.parametrize("weights", [(0.2, 0.8), (0.2, 0.5, 0.3)], ids=["2w", "3w"])
def test_metrics_and_reporter(mode, weights):
    """Exact metric keys (consistency keys iff 3 weights), totals, weights, one report per epoch."""
    rec = Recorder()
    cfg = make_cfg(mode=mode, weights=weights, epochs=2)
    metrics = train(cfg, report=rec)

    expected_keys = BASE_KEYS | (CONSISTENCY_KEYS if len(weights) == 3 else set())
    assert set(metrics) == expected_keys
    assert [epoch for epoch, _ in rec.calls] == [0, 1]
    assert rec.calls[-1][1] == metrics
    assert all(set(m) == expected_keys for _, m in rec.calls)
    assert metrics["val_total_loss"] == pytest.approx(metrics["val_a_loss"] + metrics["val_b_loss"], rel=1e-6)
    names = ["a", "b", "consistency"][: len(weights)]
    weighted = sum(w * metrics[f"train_{n}_loss"] for w, n in zip(weights, names, strict=True))
    assert metrics["train_weighted_loss"] == pytest.approx(weighted, rel=1e-6)
    assert tuple(metrics[f"weight_{n}"] for n in names) == pytest.approx(weights, rel=1e-6)  # epoch means in float32
    assert 0.0 <= metrics["val_b_acc"] <= 1.0
    assert all(math.isfinite(v) for v in metrics.values())


def test_same_config_replays_exactly():
    """The same resolved config twice gives identical init and metrics; another seed changes both."""
    problem = build_problem("digits_codes", DIGITS, 0, "alternating")
    cfg = make_cfg(mode="alternate", steps_a=2, steps_b=1, weights=W3, epochs=2)
    caps = [Capture(problem) for _ in range(3)]
    first, second = train(cfg, problem=caps[0].problem), train(cfg, problem=caps[1].problem)
    first.pop("peak_memory_mb"), second.pop("peak_memory_mb")  # a measurement of the process, not a result
    assert first == second
    other = train(cfg.model_copy(update={"seed": 1}), problem=caps[2].problem)
    assert other["val_total_loss"] != first["val_total_loss"]
    for w in "ab":
        assert torch.equal(flat(caps[0].initial[w][0]), flat(caps[1].initial[w][0]))
        assert not torch.equal(flat(caps[0].initial[w][0]), flat(caps[2].initial[w][0]))


@pytest.mark.parametrize("mode", ["alternate", "b_on_detached", "joint"])
def test_train_losses_are_epoch_means(mode):
    """With 4 equal batches and a negligible LR, train losses are the means over the epoch (= full-set losses)."""
    problem = synthetic_problem()
    cap = Capture(problem)
    cfg = synthetic_cfg(mode, W3, epochs=1, batch_size=N // 4, model_a=sgd(1e-12), model_b=sgd(1e-12))
    metrics = train(cfg, problem=cap.problem)
    a, b = cap.fresh("a"), cap.fresh("b")
    x, y, t = problem.train
    with torch.no_grad():
        z, out = a(x), b(a(x))
        expected = [mse(z, t).item(), mse(out, y).item(), ((out - b(t)) ** 2).mean().item()]
    names = ["train_a_loss", "train_b_loss", "train_consistency_loss"]
    assert [metrics[k] for k in names] == pytest.approx(expected, rel=1e-5)


# --- refusals -------------------------------------------------------------------------------------


@pytest.mark.parametrize("update", [{"seed": None}, {"data_seed": None}, {"device": "auto"}])
def test_unresolved_config_is_refused(update):
    """train() raises ValueError for a config with an unset seed/data_seed or device auto."""
    with pytest.raises(ValueError, match="resolved"):
        train(make_cfg().model_copy(update=update))


@pytest.mark.parametrize("mode", ["alternate", "b_on_detached", "joint"])
def test_huge_lr_raises_non_finite(mode):
    """SGD with lr 1e30 blows the losses up: NonFiniteLossError, not silent NaN metrics."""
    cfg = make_cfg(mode=mode, epochs=3, model_a=sgd(1e30), model_b=sgd(1e30))
    with pytest.raises(NonFiniteLossError):
        train(cfg)


def test_joint_needs_one_optimizer_type():
    """Joint mode with Adam for A and SGD for B is a ValidationError saying the types must match."""
    with pytest.raises(ValidationError, match="must match"):
        make_cfg(mode="joint", model_a={"optimizer": {"type": "adam"}}, model_b={"optimizer": {"type": "sgd"}})
    # The same pair is fine when each model has its own optimizer.
    make_cfg(mode="alternate", model_a={"optimizer": {"type": "adam"}}, model_b={"optimizer": {"type": "sgd"}})


@pytest.mark.parametrize("weights", [(1.0,), (0.25, 0.25, 0.25, 0.25), (0.0, 0.0), (-0.5, 1.0)])
def test_bad_weights_are_refused(weights):
    """One or four weights, all-zero or negative weights are ValidationErrors."""
    with pytest.raises(ValidationError):
        make_cfg(weights=weights)


# --- behaviour on digits_codes --------------------------------------------------------------------


def test_weights_change_what_is_learned():
    """Joint training on digits_codes: weight (0.01, 0.99) leaves A's code far worse than (0.9, 0.1)."""
    common = {
        "mode": "joint",
        "epochs": 8,
        "batch_size": 32,
        "model_a": {"optimizer": {"type": "adam", "lr": 1e-2}},
        "model_b": {"optimizer": {"type": "adam", "lr": 1e-2}},
    }
    favour_a = train(make_cfg(weights=(0.9, 0.1), **common))
    favour_b = train(make_cfg(weights=(0.01, 0.99), **common))
    assert favour_b["val_a_loss"] > 2 * favour_a["val_a_loss"]


def test_mode_changes_what_a_learns():
    """With B's loss dominating, b_on_detached (A on its own target only) keeps A's code closer than joint."""
    common = {
        "weights": (0.01, 0.99),
        "epochs": 8,
        "batch_size": 32,
        "model_a": {"optimizer": {"type": "adam", "lr": 1e-2}},
        "model_b": {"optimizer": {"type": "adam", "lr": 1e-2}},
    }
    detached = train(make_cfg(mode="b_on_detached", **common))
    joint = train(make_cfg(mode="joint", **common))
    assert joint["val_a_loss"] > 2 * detached["val_a_loss"]


@pytest.mark.parametrize(("steps_a", "steps_b"), [(1, 1), (2, 3)])
def test_model_steps_epochs_give_each_model_a_pass_of_steps(steps_a, steps_b):
    """epoch: model_steps in alternate mode: the model with fewer steps per cycle gets at least one pass's
    worth of optimizer steps per epoch, as joint gives both (the default epoch: only its share)."""
    problem = build_problem("digits_codes", DIGITS, 0, "alternating")
    common = {"weights": W3, "epochs": 2, "batch_size": 64, "steps_a": steps_a, "steps_b": steps_b}
    per_pass = math.ceil(DIGITS["n_train"] / 64)
    joint = train(make_cfg(mode="joint", **common), problem=problem)
    assert joint["opt_steps_a"] == joint["opt_steps_b"] == 2 * per_pass
    passes = train(make_cfg(mode="alternate", **common), problem=problem)
    assert passes["opt_steps_a"] + passes["opt_steps_b"] == 2 * per_pass  # one batch a step: shares of a pass
    equal = train(make_cfg(mode="alternate", epoch="model_steps", **common), problem=problem)
    fewer = min(equal["opt_steps_a"], equal["opt_steps_b"])
    assert 2 * per_pass <= fewer < 2 * per_pass + max(steps_a, steps_b)
    assert equal["opt_steps_a"] + equal["opt_steps_b"] == 2 * math.ceil(
        per_pass * (steps_a + steps_b) / min(steps_a, steps_b)
    )
