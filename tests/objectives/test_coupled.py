"""A coupled problem's own consistency term and metrics on A's output (objectives.alternating, CoupledProblem).

The references below never call the loop's helpers: they write the objective
``L = w_a·mse(A(x), t) + w_b·mse(B(A(x)), y) + w_c·custom(A(x), B(A(x)), y, t, B)`` out directly on
fresh copies of the initial models and apply ``p -= lr·g`` by hand with ``torch.autograd.grad``.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from examples import coupled_problem
from objectives.alternating import logged_metrics, train
from objectives.config import AlternatingConfig
from objectives.loops import LOOPS
from objectives.problems import CoupledProblem, build_problem
from sweep.core.errors import ConfigError
from sweep.execution.runner import preflight
from sweep.studyfile.config import parse_study
from sweep.studyfile.space import resolve
from sweep.trials.trial import ProblemCache
from tests.objectives.test_alternating import synthetic_problem

N, N_VAL = 16, 12  # batch_size = N: every step is full-batch, one step per epoch
LR_A, LR_B = 0.1, 0.3
W3 = (0.3, 0.7, 0.5)
TOL = {"rtol": 1e-5, "atol": 1e-6}
EXAMPLE = "examples.coupled_problem:make"


# --- helpers --------------------------------------------------------------------------------------


def mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return nn.functional.mse_loss(pred, target)


def custom(
    z: torch.Tensor, y_hat: torch.Tensor, y: torch.Tensor, t_a: torch.Tensor, model_b: nn.Module
) -> torch.Tensor:
    """Uses every argument: log-cosh of B's answers on z and on t_a, plus a term in z, t_a and y."""
    return torch.log(torch.cosh(y_hat - model_b(t_a))).mean() + 0.1 * ((z * t_a).sum(-1) * y[:, 0]).mean()


def default(
    z: torch.Tensor, y_hat: torch.Tensor, y: torch.Tensor, t_a: torch.Tensor, model_b: nn.Module
) -> torch.Tensor:
    """The built-in term written as a user's function."""
    return torch.mean((y_hat - model_b(t_a)) ** 2)


def cos(z: torch.Tensor, t_a: torch.Tensor) -> torch.Tensor:
    return nn.functional.cosine_similarity(z, t_a, dim=-1).mean()


def l1(z: torch.Tensor, t_a: torch.Tensor) -> torch.Tensor:
    return (z - t_a).abs().mean()


def sgd(lr: float) -> dict[str, Any]:
    return {"optimizer": {"type": "sgd", "lr": lr, "momentum": 0.0, "weight_decay": 0.0}}


def cfg_for(mode: str = "joint", weights: tuple[float, ...] = W3, epochs: int = 1, **kw: Any) -> AlternatingConfig:
    """Full-batch SGD on the synthetic problem (the problem itself is passed to train)."""
    fields: dict[str, Any] = {
        "problem": {"name": "digits_codes"},  # unused: train gets the problem
        "seed": 0,
        "data_seed": 0,
        "device": "cpu",
        "mode": mode,
        "weights": weights,
        "epochs": epochs,
        "batch_size": N,
        "eval_batch_size": 5,  # uneven chunks: validation means must not depend on chunking
        "model_a": sgd(LR_A),
        "model_b": sgd(LR_B),
        **kw,
    }
    return AlternatingConfig(**fields)


class Capture:
    """Wraps the model factories to keep the models the loop trains and their initial state."""

    def __init__(self, problem: CoupledProblem) -> None:
        self.models: dict[str, nn.Module] = {}
        self.initial: dict[str, dict[str, torch.Tensor]] = {}
        inner = {"a": problem.make_model_a, "b": problem.make_model_b}

        def make(which: str) -> nn.Module:
            model = inner[which]()
            self.models[which] = model
            self.initial[which] = {k: v.detach().clone() for k, v in model.state_dict().items()}
            return model

        self.problem = dataclasses.replace(problem, make_model_a=lambda: make("a"), make_model_b=lambda: make("b"))

    def fresh(self, which: str) -> nn.Module:
        model = copy.deepcopy(self.models[which])
        model.load_state_dict(self.initial[which])
        return model


def objective(a, b, x, y, t, weights, z=None) -> torch.Tensor:
    """L with the custom consistency, written out; ``z`` replaces A(x) when given."""
    z = a(x) if z is None else z
    out = b(z)
    return weights[0] * mse(z, t) + weights[1] * mse(out, y) + weights[2] * custom(z, out, y, t, b)


def _descend(params: list[torch.Tensor], grads: tuple[torch.Tensor, ...], lr: float) -> None:
    with torch.no_grad():
        for p, g in zip(params, grads, strict=True):
            p -= lr * g


def reference(
    cap: Capture, problem: CoupledProblem, mode: str, n_steps: int
) -> tuple[nn.Module, nn.Module, list[float]]:
    """Full-batch SGD by hand (alternate 1:1: A step, B step, ...); also the terms before the last step."""
    a, b = cap.fresh("a"), cap.fresh("b")
    pa, pb = list(a.parameters()), list(b.parameters())
    x, y, t = problem.train
    terms: list[float] = []
    for k in range(n_steps):
        z = a(x)
        out = b(z)
        terms = [mse(z, t).item(), mse(out, y).item(), custom(z, out, y, t, b).item()]
        if mode == "alternate" and k % 2 == 0:
            _descend(pa, torch.autograd.grad(objective(a, b, x, y, t, W3), pa), LR_A)
        elif mode == "alternate":
            code = a(x).detach()
            _descend(pb, torch.autograd.grad(objective(a, b, x, y, t, W3, z=code), pb), LR_B)
        elif mode == "b_on_detached":
            z = a(x)
            ga = torch.autograd.grad(W3[0] * mse(z, t), pa)
            gb = torch.autograd.grad(objective(a, b, x, y, t, W3, z=z.detach()), pb)
            _descend(pa, ga, LR_A)
            _descend(pb, gb, LR_B)
        else:  # joint
            grads = torch.autograd.grad(objective(a, b, x, y, t, W3), pa + pb)
            _descend(pa, grads[: len(pa)], LR_A)
            _descend(pb, grads[len(pa) :], LR_B)
    return a, b, terms


def flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


# --- the user's consistency term ------------------------------------------------------------------


@pytest.mark.parametrize(("mode", "n_steps"), [("alternate", 2), ("alternate", 3), ("b_on_detached", 1), ("joint", 1)])
def test_custom_consistency_matches_reference(mode, n_steps):
    """Full-batch SGD with the user's consistency equals the mode's rule applied by hand (params and losses)."""
    problem = synthetic_problem(consistency=custom)
    cap = Capture(problem)
    metrics = train(cfg_for(mode, epochs=n_steps), problem=cap.problem)
    ref_a, ref_b, terms = reference(cap, problem, mode, n_steps)

    for which, ref in (("a", ref_a), ("b", ref_b)):
        torch.testing.assert_close(flat(cap.models[which]), flat(ref), **TOL, msg=which)
        assert not torch.allclose(flat(cap.models[which]), flat(cap.fresh(which)), atol=1e-4), f"{which} did not move"
    names = ["train_a_loss", "train_b_loss", "train_consistency_loss"]
    assert [metrics[k] for k in names] == pytest.approx(terms, rel=1e-5)
    xv, yv, tv = problem.val
    with torch.no_grad():
        zv = ref_a(xv)
        assert metrics["val_consistency_loss"] == pytest.approx(custom(zv, ref_b(zv), yv, tv, ref_b).item(), rel=1e-5)


@pytest.mark.parametrize("mode", ["alternate", "b_on_detached", "joint"])
def test_custom_consistency_is_not_the_default(mode):
    """The user's term changes training (the reference test above is not passing by accident)."""
    runs = {}
    for name, fn in (("custom", custom), ("default", None)):
        cap = Capture(synthetic_problem(consistency=fn))
        train(cfg_for(mode, epochs=2), problem=cap.problem)
        runs[name] = torch.cat([flat(cap.models["a"]), flat(cap.models["b"])])
    assert (runs["custom"] - runs["default"]).abs().max() > 1e-4


@pytest.mark.parametrize("mode", ["alternate", "b_on_detached", "joint"])
def test_default_consistency_unchanged(mode):
    """``consistency=None`` and the default written as a user function give identical models and metrics."""
    results = []
    for fn in (None, default):
        cap = Capture(synthetic_problem(consistency=fn))
        metrics = train(cfg_for(mode, epochs=3), problem=cap.problem)
        metrics.pop("peak_memory_mb")
        results.append((metrics, flat(cap.models["a"]), flat(cap.models["b"])))
    (m0, a0, b0), (m1, a1, b1) = results
    assert m0 == m1
    assert torch.equal(a0, a1) and torch.equal(b0, b1)


def test_consistency_weight_scales_the_user_term():
    """w_consistency = 0 leaves the user's term out of training (while still logging it)."""
    runs = {}
    for name, fn in (("custom", custom), ("default", None)):
        cap = Capture(synthetic_problem(consistency=fn))
        metrics = train(cfg_for("joint", weights=(0.3, 0.7, 0.0), epochs=2), problem=cap.problem)
        runs[name] = (metrics, torch.cat([flat(cap.models["a"]), flat(cap.models["b"])]))
    torch.testing.assert_close(runs["custom"][1], runs["default"][1], rtol=0, atol=1e-7)
    assert runs["custom"][0]["val_consistency_loss"] != runs["default"][0]["val_consistency_loss"]


def test_two_weights_never_call_the_consistency():
    """Without a third weight the term is neither computed nor logged."""

    def boom(*_: Any) -> torch.Tensor:
        raise AssertionError("called")

    metrics = train(cfg_for("joint", weights=(0.3, 0.7)), problem=synthetic_problem(consistency=boom))
    assert "val_consistency_loss" not in metrics


@pytest.mark.parametrize("value", [torch.zeros(2), torch.zeros(1), 0.5])
def test_consistency_must_return_a_scalar_tensor(value):
    """A per-sample vector, a 1-element vector or a float is refused with a message, not a stack error."""
    problem = synthetic_problem(consistency=lambda *_: value)
    with pytest.raises(ValueError, match="0-d tensor"):
        train(cfg_for("joint"), problem=problem)


# --- metrics on A's output ------------------------------------------------------------------------


def test_a_metrics_logged_and_equal_direct_computation():
    """val_a_<name> = the metric of the final A's output against t_a over the validation set (chunked by 5)."""
    problem = synthetic_problem(metrics_a={"cos": cos, "l1": l1}, metrics={"l1": l1})
    cap = Capture(problem)
    metrics = train(cfg_for("alternate", epochs=2), problem=cap.problem)
    xv, yv, tv = problem.val
    with torch.no_grad():
        z = cap.models["a"](xv)
        out = cap.models["b"](z)
        assert metrics["val_a_cos"] == pytest.approx(cos(z, tv).item(), rel=1e-5)
        assert metrics["val_a_l1"] == pytest.approx(l1(z, tv).item(), rel=1e-5)
        assert metrics["val_b_l1"] == pytest.approx(l1(out, yv).item(), rel=1e-5)
    assert metrics["val_a_l1"] != metrics["val_b_l1"]


@pytest.mark.parametrize("weights", [(0.4, 0.6), W3], ids=["2w", "3w"])
@pytest.mark.parametrize("metrics_a", [{}, {"cos": cos}, {"cos": cos, "l1": l1}], ids=["none", "one", "two"])
def test_logged_metrics_are_exactly_the_logged_keys(weights, metrics_a):
    """logged_metrics(problem.metric_names(), n) is the set of keys train reports, every epoch."""
    problem = synthetic_problem(metrics_a=metrics_a, metrics={"l1": l1})
    assert problem.metric_names() == {"a": tuple(metrics_a), "b": ("l1",)}
    calls: list[dict[str, float]] = []
    train(cfg_for("joint", weights=weights, epochs=2), report=lambda _e, m: calls.append(dict(m)), problem=problem)
    expected = logged_metrics(problem.metric_names(), len(weights))
    assert len(expected) == len(set(expected))
    assert len(calls) == 2 and all(set(m) == set(expected) for m in calls)


def test_a_metric_is_a_valid_target():
    """A problem's A metrics are targets of the alternating loop; built-ins still declare B's only."""
    loop = LOOPS["alternating"]
    problem = synthetic_problem(metrics_a={"cos": cos}, metrics={"acc": cos})
    targets = loop.targets(problem.metric_names(), 3)
    assert {"val_a_cos", "val_b_acc", "val_consistency_loss", "val_total_loss"} <= set(targets)
    assert targets[0] == "val_total_loss"
    assert CoupledProblem.declared_metric_names(("acc",)) == {"a": (), "b": ("acc",)}
    assert "val_a_acc" not in loop.targets(CoupledProblem.declared_metric_names(("acc",)), 3)


@pytest.mark.parametrize("field", ["metrics_a", "metrics"])
def test_metric_named_loss_is_refused(field):
    """A metric named ``loss`` would silently overwrite val_a_loss / val_b_loss."""
    with pytest.raises(ValueError, match="overwrite val_"):
        synthetic_problem(**{field: {"loss": l1}})


# --- the example and its study --------------------------------------------------------------------


def test_example_builds_and_trains_one_epoch():
    """examples/coupled_problem.py: shapes, the user's consistency and cos metric, one epoch per mode."""
    problem = build_problem(EXAMPLE, {"n": 300, "n_val": 100}, 0, "alternating", CoupledProblem)
    assert problem.consistency is coupled_problem.consistency
    assert problem.metric_names() == {"a": ("cos",), "b": ("acc",)}
    x, y, t = problem.train
    assert x.shape == (300, 64) and y.shape == (300,) and t.shape == (300, 4)
    assert len(y.unique()) > 1
    for mode in ("alternate", "b_on_detached", "joint"):
        cfg = cfg_for(mode, epochs=1, batch_size=64, model_a=sgd(0.05), model_b=sgd(0.05))
        metrics = train(cfg, problem=problem)
        assert set(metrics) == set(logged_metrics(problem.metric_names(), 3))
        assert all(math.isfinite(v) for v in metrics.values())
        assert -1.0 <= metrics["val_a_cos"] <= 1.0 and 0.0 <= metrics["val_b_acc"] <= 1.0
        assert metrics["val_consistency_loss"] >= 0.0  # a KL divergence


def test_example_consistency_is_a_kl_divergence():
    """The example's term is 0 when B answers alike on code and target, positive otherwise."""
    torch.manual_seed(0)
    b = nn.Linear(4, 5)
    t = torch.randn(8, 4)
    assert coupled_problem.consistency(t, b(t), torch.zeros(8), t, b).item() == pytest.approx(0.0, abs=1e-6)
    z = torch.randn(8, 4)
    assert coupled_problem.consistency(z, b(z), torch.zeros(8), t, b).item() > 1e-3


def _study(metric: str, problem: dict[str, Any]) -> dict[str, Any]:
    return {
        "study": {"name": "coupled_t", "metric": metric, "direction": "maximize", "n_trials": 1},
        "objective": {"loop": "alternating", "problem": problem, "epochs": 1, "weights": [0.4, 0.4, 0.2]},
        "search": {"weights": {"parametrization": "log_ratio", "low": -1, "high": 1}},
    }


def test_study_targeting_an_a_metric_validates(tmp_path: Path):
    """val_a_cos of the user problem passes the load-time check and the preflight (problem built): the
    study targets that metric in the direction given (``_cos`` names no direction, so without one the
    file is refused), the built problem's loop logs it as a validation target, and the preflight's one
    batch ran to the end."""
    path = tmp_path / "coupled.yaml"
    problem = {"name": EXAMPLE, "options": {"n": 200, "n_val": 50}}
    sf = parse_study(_study("val_a_cos", problem), path)
    assert sf.study.metric == ("val_a_cos",)
    assert sf.study.directions == ("maximize",)
    assert not sf.study.multi_objective
    assert sf.objective.loop == "alternating" and sf.objective.problem.name == EXAMPLE
    problems = ProblemCache()
    assert preflight(sf.study, sf.objective, path, problems) is True
    cfg = resolve(sf.objective, sf.study.seed, 0, {}, tuple(sf.objective.weights))
    built = problems.get(cfg.model_copy(update={"device": "cpu"}))
    assert "val_a_cos" in LOOPS["alternating"].targets(built.metric_names(), 3)

    undirected = _study("val_a_cos", problem)
    del undirected["study"]["direction"]
    with pytest.raises(ConfigError, match="cannot infer the direction for val_a_cos"):
        parse_study(undirected, path)


def test_study_targeting_an_unknown_a_metric_is_refused(tmp_path: Path):
    """A metric the user problem does not define is refused before the run, naming what it logs."""
    path = tmp_path / "coupled.yaml"
    sf = parse_study(_study("val_a_r2", {"name": EXAMPLE, "options": {"n": 200, "n_val": 50}}), path)
    with pytest.raises(ConfigError, match="val_a_cos"):
        preflight(sf.study, sf.objective, path, ProblemCache())


def test_builtin_has_no_a_metric_target(tmp_path: Path):
    """digits_codes declares only B's metrics: val_a_acc is refused when the file is loaded."""
    with pytest.raises(ConfigError, match="unknown metric"):
        parse_study(_study("val_a_acc", {"name": "digits_codes"}), tmp_path / "coupled.yaml")


# --- a consistency term on two views of x (it is also given x and model A) ------------------------


def view(x: torch.Tensor) -> torch.Tensor:
    """A deterministic second view of the inputs (reversed features, scaled): an 'augmentation'."""
    return 0.5 * x.flip(-1)


def two_views(
    z: torch.Tensor,
    y_hat: torch.Tensor,
    y: torch.Tensor,
    t_a: torch.Tensor,
    model_b: nn.Module,
    *,
    x: torch.Tensor,
    model_a: nn.Module,
) -> torch.Tensor:
    """B's answer on A's code of a second view of x against its answer on the batch (the seed's kind of term)."""
    return torch.mean((model_b(model_a(view(x))) - y_hat) ** 2)


def objective_two_views(a, b, x, y, t, weights, z=None, a_in_term=None) -> torch.Tensor:
    """L with the two-view term, written out; ``z`` replaces A(x), ``a_in_term`` the A the term calls."""
    z = a(x) if z is None else z
    out = b(z)
    term = torch.mean((b((a if a_in_term is None else a_in_term)(view(x))) - out) ** 2)
    return weights[0] * mse(z, t) + weights[1] * mse(out, y) + weights[2] * term


def reference_two_views(cap: Capture, problem: CoupledProblem, mode: str, n_steps: int) -> tuple[nn.Module, nn.Module]:
    """Full-batch SGD by hand with the two-view term, per mode: alternate A steps take ∂L/∂A (through z
    and through the term's A), B steps ∂L/∂B with A's code fixed; b_on_detached A from its own loss
    only and B from L on the detached code (the term's A a constant); joint ∂L over both."""
    a, b = cap.fresh("a"), cap.fresh("b")
    pa, pb = list(a.parameters()), list(b.parameters())
    x, y, t = problem.train
    for k in range(n_steps):
        if mode == "alternate" and k % 2 == 0:
            _descend(pa, torch.autograd.grad(objective_two_views(a, b, x, y, t, W3), pa), LR_A)
        elif mode == "alternate":
            code = a(x).detach()
            _descend(pb, torch.autograd.grad(objective_two_views(a, b, x, y, t, W3, z=code), pb), LR_B)
        elif mode == "b_on_detached":
            z = a(x)
            ga = torch.autograd.grad(W3[0] * mse(z, t), pa)
            const_a = copy.deepcopy(a).requires_grad_(False)
            gb = torch.autograd.grad(objective_two_views(a, b, x, y, t, W3, z=z.detach(), a_in_term=const_a), pb)
            _descend(pa, ga, LR_A)
            _descend(pb, gb, LR_B)
        else:  # joint
            grads = torch.autograd.grad(objective_two_views(a, b, x, y, t, W3), pa + pb)
            _descend(pa, grads[: len(pa)], LR_A)
            _descend(pb, grads[len(pa) :], LR_B)
    return a, b


@pytest.mark.parametrize(("mode", "n_steps"), [("alternate", 3), ("b_on_detached", 2), ("joint", 2)])
def test_consistency_on_two_views_of_x_gets_x_and_model_a(mode: str, n_steps: int) -> None:
    """A term declaring ``x`` and ``model_a`` (keywords) gets the batch's inputs and model A: the trained
    parameters equal autograd's on the objective written out (A in the term trains where the mode trains
    A from L: alternate A steps and joint; not in B steps nor in b_on_detached), and the logged
    consistency losses equal the term computed by hand."""
    problem = synthetic_problem(consistency=two_views)
    cap = Capture(problem)
    metrics = train(cfg_for(mode, epochs=n_steps), problem=cap.problem)
    ref_a, ref_b = reference_two_views(cap, problem, mode, n_steps)
    for which, ref in (("a", ref_a), ("b", ref_b)):
        torch.testing.assert_close(flat(cap.models[which]), flat(ref), **TOL, msg=which)
    xv, yv, tv = problem.val
    with torch.no_grad():
        zv = ref_a(xv)
        want = two_views(zv, ref_b(zv), yv, tv, ref_b, x=xv, model_a=ref_a)
    assert metrics["val_consistency_loss"] == pytest.approx(want.item(), rel=1e-5)
    without_a_in_term = synthetic_problem(consistency=lambda z, y_hat, y, t_a, model_b, *, x: torch.mean(x) * 0 + 1)
    assert train(cfg_for(mode), problem=without_a_in_term)["val_consistency_loss"] == 1.0  # x alone, by keyword


def test_five_argument_consistency_keeps_working_even_with_a_parameter_named_x() -> None:
    """An old-style callable gets its five arguments positionally, whatever it names them (a first
    parameter called ``x`` is A's output ``z``, not the batch's inputs)."""
    seen: list[torch.Tensor] = []

    def old(
        x: torch.Tensor, y_hat: torch.Tensor, y: torch.Tensor, t_a: torch.Tensor, model_b: nn.Module
    ) -> torch.Tensor:
        seen.append(x)
        return torch.mean((y_hat - model_b(t_a)) ** 2)

    cap = Capture(synthetic_problem(consistency=old))
    train(cfg_for("joint"), problem=cap.problem)
    assert seen and all(s.shape[-1] == 3 for s in seen)  # A's 3-number code, not the 4 input features


def test_consistency_that_cannot_take_the_five_arguments_is_refused_when_built() -> None:
    """A callable that cannot be called as ``consistency(z, y_hat, y, t_a, model_b[, x=, model_a=])`` is
    refused when the problem is built, naming the signature (not at the first step with a TypeError)."""
    with pytest.raises(ValueError, match=r"CoupledProblem.consistency\(z, y_hat\) cannot be called"):
        synthetic_problem(consistency=lambda z, y_hat: (z - y_hat).mean())


def test_example_views_term_uses_x_and_model_a_and_trains_alone() -> None:
    """The example's ``consistency: views`` option: a term on a noisy view of x through A and B. With the
    noise's draws replayed it equals KL(B(A(x)) ‖ B(A(x + noise))) computed by hand, trains (seeded: the
    same config gives the same metrics), and a vectorized group refuses it (its draws are random)."""
    from objectives.loops import why_not

    problem = coupled_problem.make(0, n=64, n_val=32, consistency="views")
    assert problem.consistency is coupled_problem.views
    x, y, t = problem.train
    a, b = problem.make_model_a(), problem.make_model_b()
    with torch.no_grad():
        z = a(x)
        torch.manual_seed(3)
        got = problem.consistency_term(z, b(z), y, t, b, x=x, model_a=a)
        torch.manual_seed(3)
        other = b(a(x + 0.1 * torch.randn_like(x)))
    p, q = torch.softmax(b(z), -1), torch.softmax(other, -1)
    torch.testing.assert_close(got, (p * (p.log() - q.log())).sum(-1).mean(), rtol=1e-5, atol=1e-7)
    cfg = cfg_for("joint", epochs=2).model_copy(update={"batch_size": 16})
    first, again = train(cfg, problem=problem), train(cfg, problem=problem)
    first.pop("peak_memory_mb"), again.pop("peak_memory_mb")
    assert first == again and math.isfinite(first["val_consistency_loss"]) and first["val_consistency_loss"] > 0
    assert "random" in why_not([cfg, cfg], problem)


def test_which_consistency_signatures_get_x_and_model_a() -> None:
    """x and model_a go by keyword to a callable that names them (a module's forward counts); not to one
    taking only ``**kwargs`` (a generic wrapper would pass them on to a five-argument function)."""
    from objectives.problems.base import consistency_keywords

    class Term(nn.Module):
        def forward(
            self, z: torch.Tensor, y_hat: torch.Tensor, y: Any, t_a: torch.Tensor, model_b: Any, *, model_a: Any
        ) -> torch.Tensor:
            return torch.mean(y_hat)

    assert consistency_keywords(two_views) == ("x", "model_a")
    assert consistency_keywords(Term()) == ("model_a",)
    assert consistency_keywords(lambda z, y_hat, y, t_a, model_b, model_a=None: 0) == ("model_a",)
    assert consistency_keywords(lambda *args, **kwargs: 0) == ()
    assert consistency_keywords(custom) == ()
