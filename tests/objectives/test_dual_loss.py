"""The dual-loss loop against closed forms and autograd references (objectives.dual_loss)."""

from __future__ import annotations

import copy
import dataclasses
import math
import warnings
from typing import Any

import pytest
import torch

from objectives.config import DualLossConfig
from objectives.dual_loss import _output, evaluate, train
from objectives.helpers import NonFiniteLossError
from objectives.problems import Problem, build_problem, linear_pair

LINEAR = {"dim": 4, "n_a": 64, "n_b": 256, "n_val": 64, "scale": 30.0, "noise": 0.1}
DIGITS = {"n_a": 64, "n_b": 32, "n_val": 50, "hidden": 8}
OPTIONS = {"linear_pair": LINEAR, "digits_pair": DIGITS}


def make_cfg(name: str = "linear_pair", options: dict[str, Any] | None = None, **kw: Any) -> DualLossConfig:
    """A resolved CPU config of a small problem; keyword arguments override fields."""
    fields: dict[str, Any] = {
        "problem": {"name": name, "options": OPTIONS[name] if options is None else options},
        "seed": 0,
        "data_seed": 0,
        "device": "cpu",
        "epochs": 2,
        "batch_size": 16,
    }
    fields.update(kw)
    return DualLossConfig(**fields)


class Capture:
    """Wraps a problem's ``make_model`` to keep the model the loop trains and its initial state."""

    def __init__(self, problem: Problem) -> None:
        self.models: list[torch.nn.Module] = []
        self.initial: list[dict[str, torch.Tensor]] = []
        self.problem = dataclasses.replace(problem, make_model=self._make)
        self._inner = problem.make_model

    def _make(self) -> torch.nn.Module:
        model = self._inner()
        self.models.append(model)
        self.initial.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return model

    @property
    def model(self) -> torch.nn.Module:
        assert len(self.models) == 1, "the loop should build exactly one model"
        return self.models[0]


class Recorder:
    """A reporter that keeps a copy of every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, dict[str, float]]] = []

    def __call__(self, epoch: int, metrics: Any) -> None:
        self.calls.append((epoch, dict(metrics)))


# --- closed form ----------------------------------------------------------------------------------


@pytest.mark.parametrize("w", [0.3, 0.9])
def test_full_batch_training_reaches_closed_form_optimum(w):
    """Full-batch SGD on w·L_a + (1-w)·L_b converges to linear_pair.optimum(w), not optimum(1-w)."""
    problem = build_problem("linear_pair", LINEAR, 0)
    cap = Capture(problem)
    cfg = make_cfg(
        weights=(w, 1 - w),
        mixing="cycle",
        batch_size=LINEAR["n_a"],
        batch_size_b=LINEAR["n_b"],
        optimizer={"type": "sgd", "lr": 0.3, "momentum": 0.9},
        epochs=200,
    )
    train(cfg, problem=cap.problem)
    theta = cap.model.weight.detach().double().squeeze(0)
    target = linear_pair.optimum(problem, w)
    swapped = linear_pair.optimum(problem, 1 - w)
    scale = target.norm().item()
    assert (theta - target).abs().max().item() / scale < 1e-3
    # The two candidate optima are far apart, so ignoring or swapping the weights would fail above.
    assert (theta - swapped).abs().max().item() / scale > 0.1


def test_closed_form_optima_depend_on_weight():
    """θ(0.3) and θ(0.9) differ substantially (the closed-form test is discriminative)."""
    problem = build_problem("linear_pair", LINEAR, 0)
    a, b = linear_pair.optimum(problem, 0.3), linear_pair.optimum(problem, 0.9)
    assert (a - b).norm() > 0.3 * a.norm()


# --- one optimizer step = weighted sum of autograd gradients --------------------------------------


def _reference_grads(cap: Capture, problem: Problem, weights: tuple[float, float]) -> dict[str, torch.Tensor]:
    """w_a·∇L_a(full set a) + w_b·∇L_b(full set b) at the initial parameters, by torch.autograd.grad."""
    ref = copy.deepcopy(cap.model)
    ref.load_state_dict(cap.initial[0])
    names, params = zip(*ref.named_parameters(), strict=True)
    total = {n: torch.zeros_like(p) for n, p in zip(names, params, strict=True)}
    for w, task in zip(weights, (problem.a, problem.b), strict=True):
        x, y = task.train
        loss = task.loss(_output(ref, task, x), y)
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        for n, g in zip(names, grads, strict=True):
            if g is not None:
                total[n] += w * g
    return total


@pytest.mark.parametrize("mixing", ["accumulate", "cycle", "zip"])
@pytest.mark.parametrize("name", ["linear_pair", "digits_pair"])
def test_one_step_gradient_is_weighted_sum(name, mixing):
    """One SGD step (lr 1) moves the parameters by exactly w_a·∇L_a + w_b·∇L_b, for every mixing."""
    opts = OPTIONS[name]
    problem = build_problem(name, opts, 0)
    cap = Capture(problem)
    weights = (0.25, 0.75)
    cfg = make_cfg(
        name,
        weights=weights,
        mixing=mixing,
        batch_size=opts["n_a"],
        batch_size_b=opts["n_b"],
        optimizer={"type": "sgd", "lr": 1.0, "momentum": 0.0, "weight_decay": 0.0},
        epochs=1,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one full batch each: zip sees everything, so no warning
        metrics = train(cfg, problem=cap.problem)

    expected = _reference_grads(cap, problem, weights)
    swapped = _reference_grads(cap, problem, weights[::-1])
    after = dict(cap.model.named_parameters())
    for n, g in expected.items():
        step = cap.initial[0][n] - after[n].detach()
        torch.testing.assert_close(step, g, rtol=1e-5, atol=1e-5, msg=f"parameter {n}")
    # The reference can tell the weights apart, so a swapped weighting would have failed above.
    assert any(not torch.allclose(expected[n], swapped[n], rtol=1e-3, atol=1e-3) for n in expected)

    # With one step per epoch, the train losses are those of the initial model on the full sets.
    init = copy.deepcopy(cap.model)
    init.load_state_dict(cap.initial[0])
    with torch.no_grad():
        for key, task in (("train_a_loss", problem.a), ("train_b_loss", problem.b)):
            x, y = task.train
            assert metrics[key] == pytest.approx(task.loss(_output(init, task, x), y).item(), rel=1e-5)
        # And the validation losses are those of the stepped model on the validation sets.
        for key, task in (("val_a_loss", problem.a), ("val_b_loss", problem.b)):
            x, y = task.val
            ref = task.loss(_output(cap.model, task, x), y).item()
            assert metrics[key] == pytest.approx(ref, rel=1e-5)


# --- weights matter -------------------------------------------------------------------------------


def test_heavier_weight_lowers_that_tasks_validation_loss():
    """Weights (0.9, 0.1) give lower val_a_loss and higher val_b_loss than (0.1, 0.9)."""
    common = {
        "batch_size": LINEAR["n_a"],
        "batch_size_b": LINEAR["n_b"],
        "optimizer": {"type": "sgd", "lr": 0.3, "momentum": 0.9},
        "epochs": 100,
    }
    favour_a = train(make_cfg(weights=(0.9, 0.1), **common))
    favour_b = train(make_cfg(weights=(0.1, 0.9), **common))
    assert favour_a["val_a_loss"] < 0.5 * favour_b["val_a_loss"]
    assert favour_b["val_b_loss"] < 0.5 * favour_a["val_b_loss"]


# --- determinism ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["linear_pair", "digits_pair"])
def test_same_config_replays_exactly(name):
    """The same resolved config twice gives identical metrics; another seed gives different ones."""
    cfg = make_cfg(name, epochs=2, batch_size=16)
    first, second = train(cfg), train(cfg)
    first.pop("peak_memory_mb"), second.pop("peak_memory_mb")  # a measurement of the process, not a result
    assert first == second
    other = train(cfg.model_copy(update={"seed": 1}))
    assert other != first
    assert other["val_total_loss"] != first["val_total_loss"]


def test_data_seed_changes_data():
    """A different data_seed trains on different data, so the metrics differ."""
    cfg = make_cfg(epochs=1)
    assert train(cfg)["val_total_loss"] != train(cfg.model_copy(update={"data_seed": 1}))["val_total_loss"]


# --- reporter -------------------------------------------------------------------------------------

BASE_KEYS = {
    "train_a_loss",
    "train_b_loss",
    "train_weighted_loss",
    "val_a_loss",
    "val_b_loss",
    "val_total_loss",
    "weight_a",
    "weight_b",
    "lr",
    "peak_memory_mb",
}


@pytest.mark.parametrize(("name", "extra"), [("linear_pair", set()), ("digits_pair", {"val_a_acc", "val_b_acc"})])
def test_reporter_called_every_epoch_with_consistent_metrics(name, extra):
    """Reporter gets epochs 0..E-1, the documented keys, and sums/weights that add up."""
    weights = (0.3, 0.7)
    rec = Recorder()
    cfg = make_cfg(name, epochs=3, weights=weights, optimizer={"type": "adam", "lr": 0.01})
    final = train(cfg, report=rec)
    assert [e for e, _ in rec.calls] == [0, 1, 2]
    for _, m in rec.calls:
        assert set(m) == BASE_KEYS | extra
        assert all(isinstance(v, float) and math.isfinite(v) for v in m.values())
        assert m["val_total_loss"] == pytest.approx(m["val_a_loss"] + m["val_b_loss"], rel=1e-6)
        assert m["train_weighted_loss"] == pytest.approx(
            weights[0] * m["train_a_loss"] + weights[1] * m["train_b_loss"], rel=1e-6
        )  # float32 on the device: Σ_steps w·L / steps equals w·mean(L) to rounding
        assert (m["weight_a"], m["weight_b"]) == pytest.approx(weights, rel=1e-6)
        assert m["lr"] == 0.01
        assert m["peak_memory_mb"] > 0  # host RSS here (CPU)
        for key in extra:
            assert 0.0 <= m[key] <= 1.0
    assert final == rec.calls[-1][1]
    # Training happened: the model changed between epochs.
    assert rec.calls[0][1]["val_total_loss"] != rec.calls[-1][1]["val_total_loss"]


def test_reporter_exception_stops_training():
    """A reporter that raises (pruning) stops the loop: the exception propagates after one call."""

    class Prune(Exception):
        pass

    calls: list[int] = []

    def report(epoch: int, metrics: Any) -> None:
        calls.append(epoch)
        raise Prune

    with pytest.raises(Prune):
        train(make_cfg(epochs=5), report=report)
    assert calls == [0]


# --- non-finite losses ----------------------------------------------------------------------------


def test_huge_learning_rate_raises_non_finite():
    """SGD with lr 1e30 overflows at once: NonFiniteLossError, reporter never sees a non-finite loss."""
    rec = Recorder()
    cfg = make_cfg(optimizer={"type": "sgd", "lr": 1e30, "momentum": 0.0}, epochs=3)
    with pytest.raises(NonFiniteLossError, match=r"_loss is (nan|inf|-inf) at epoch 0"):
        train(cfg, report=rec)
    assert rec.calls == []


def test_divergence_stops_before_reporting_non_finite():
    """A slowly diverging run reports finite epochs, then raises without reporting the bad one."""
    rec = Recorder()
    cfg = make_cfg(
        batch_size=LINEAR["n_a"],
        batch_size_b=LINEAR["n_b"],
        optimizer={"type": "sgd", "lr": 5.0, "momentum": 0.0},
        epochs=200,
    )
    with pytest.raises(NonFiniteLossError) as info:
        train(cfg, report=rec)
    assert len(rec.calls) >= 2
    assert [e for e, _ in rec.calls] == list(range(len(rec.calls)))
    assert f"at epoch {len(rec.calls)}" in str(info.value)
    for _, m in rec.calls:
        assert all(math.isfinite(v) for k, v in m.items() if k.endswith("_loss"))
    # It was diverging, not stuck.
    assert rec.calls[-1][1]["val_total_loss"] > 1e6 * rec.calls[0][1]["val_total_loss"]


# --- zip warning ----------------------------------------------------------------------------------

UNEQUAL = {"dim": 4, "n_a": 100, "n_b": 1000, "n_val": 32}


def test_zip_warns_when_most_of_longer_set_is_dropped():
    """zip with sizes 100 vs 1000 (batch 10) sees 10% of set b: a UserWarning naming zip."""
    cfg = make_cfg(options=UNEQUAL, mixing="zip", batch_size=10, epochs=1)
    with pytest.warns(UserWarning, match="zip"):
        train(cfg)


@pytest.mark.parametrize("mixing", ["cycle", "accumulate"])
def test_cycle_does_not_warn(mixing):
    """cycle/accumulate on the same unequal sizes see all data: no warning."""
    cfg = make_cfg(options=UNEQUAL, mixing=mixing, batch_size=10, epochs=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train(cfg)


# --- evaluate -------------------------------------------------------------------------------------


def test_evaluate_is_chunk_invariant_and_matches_full_batch():
    """evaluate() with chunk 7 (50 = 7·7 + 1 rows) equals chunk 4096 and a direct full-batch computation."""
    problem = build_problem("digits_pair", DIGITS, 0)
    torch.manual_seed(0)
    model = problem.make_model()
    tasks = {"a": problem.a, "b": problem.b}
    cpu = torch.device("cpu")
    small = evaluate(model, tasks, DualLossConfig(problem="digits_pair", eval_batch_size=7), cpu)
    big = evaluate(model, tasks, DualLossConfig(problem="digits_pair", eval_batch_size=4096), cpu)
    assert (
        set(small)
        == set(big)
        == {
            "val_a_loss",
            "val_b_loss",
            "val_a_acc",
            "val_b_acc",
            "val_total_loss",
        }
    )
    for key in small:
        assert small[key].dim() == 0
        torch.testing.assert_close(small[key], big[key], rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        for name, task in tasks.items():
            out = _output(model, task, task.val[0])
            torch.testing.assert_close(big[f"val_{name}_loss"], task.loss(out, task.val[1]))
            torch.testing.assert_close(big[f"val_{name}_acc"], task.metrics["acc"](out, task.val[1]))
    assert model.training  # evaluate() puts the model back in training mode


def test_train_eval_batch_size_does_not_change_metrics():
    """Training with eval_batch_size 7 vs 4096 reports the same validation metrics."""
    cfg = make_cfg("digits_pair", epochs=1)
    small = train(cfg.model_copy(update={"eval_batch_size": 7}))
    big = train(cfg.model_copy(update={"eval_batch_size": 4096}))
    assert small.keys() == big.keys()
    for key in small:
        assert small[key] == pytest.approx(big[key], rel=1e-5, abs=1e-6), key


# --- resolved config ------------------------------------------------------------------------------


@pytest.mark.parametrize("update", [{"seed": None}, {"data_seed": None}, {"device": "auto"}])
def test_train_refuses_unresolved_config(update):
    """train() raises ValueError on a config whose seed/data_seed/device is left to the runner."""
    cfg = make_cfg().model_copy(update=update)
    with pytest.raises(ValueError, match="resolved"):
        train(cfg)


# --- each sample once per epoch -------------------------------------------------------------------


def test_longer_set_batches_partition_it_each_epoch():
    """cycle with n_b=10, batch 4: task b's training batches have sizes [4, 4, 2] each epoch."""
    sizes: list[int] = []
    problem = build_problem("linear_pair", {"dim": 2, "n_a": 4, "n_b": 10, "n_val": 8}, 0)

    def loss_b(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():  # training batches only, not evaluate()
            sizes.append(len(target))
        return linear_pair.mse(pred, target)

    problem = dataclasses.replace(problem, b=dataclasses.replace(problem.b, loss=loss_b))
    train(make_cfg(batch_size=4, mixing="cycle", epochs=1), problem=problem)
    assert sizes == [4, 4, 2]


# --- train losses are means over the epoch's steps ------------------------------------------------


@pytest.mark.parametrize("mixing", ["cycle", "accumulate"])
def test_train_losses_are_means_of_the_epochs_batch_losses(mixing):
    """train_<t>_loss is the mean of that task's batch losses over the epoch's steps (16 here)."""
    seen: dict[str, list[float]] = {"a": [], "b": []}
    problem = build_problem("linear_pair", LINEAR, 0)

    def recording(task: str):
        def loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            value = linear_pair.mse(pred, target)
            if torch.is_grad_enabled():  # training batches only, not evaluate()
                seen[task].append(value.item())
            return value

        return loss

    problem = dataclasses.replace(
        problem,
        a=dataclasses.replace(problem.a, loss=recording("a")),
        b=dataclasses.replace(problem.b, loss=recording("b")),
    )
    rec = Recorder()
    train(make_cfg(batch_size=16, mixing=mixing, epochs=2), report=rec, problem=problem)
    steps = LINEAR["n_b"] // 16  # the longer set sets the step count
    assert len(seen["a"]) == len(seen["b"]) == 2 * steps
    for epoch, metrics in rec.calls:
        for task in "ab":
            batch_losses = seen[task][epoch * steps : (epoch + 1) * steps]
            assert metrics[f"train_{task}_loss"] == pytest.approx(sum(batch_losses) / steps, rel=1e-5)
