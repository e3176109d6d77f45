"""hypergrad: its update against autograd through one SGD step (float64), positivity under adversarial
gradients, and what the loops feed it (a validation batch) on problems whose best weights are known."""

from __future__ import annotations

from collections.abc import Callable

import pydantic
import pytest
import torch
from torch import nn
from torch.func import functional_call

from objectives import alternating, dual_loss
from objectives.batched.rules import why_not
from objectives.config import AlternatingConfig, DataConfig, DualLossConfig
from objectives.data import reference_losses
from objectives.problems import CoupledProblem, Problem, Task
from objectives.problems.common import mse
from objectives.weighting import STRATEGIES, make
from objectives.weighting.base import Weighting
from objectives.weighting.hypergrad import LOG_FLOOR

F64 = torch.float64
Losses = Callable[[dict[str, torch.Tensor]], torch.Tensor]  # parameters → the per-loss values
PICK = {"total": [0, 1], "a": [0], "b": [1]}  # the losses each target sums (never the third: consistency)


def _strategy(k: int = 2, **options: object) -> Weighting:
    return make(STRATEGIES["hypergrad"].Config(**options), k, torch.device("cpu"), 0)


def _setting(k: int) -> tuple[nn.Module, Losses, Losses]:
    """A tiny float64 network with k outputs; the training and the reference (validation) losses of its
    parameters, each output's mean squared error against its own target, on different batches."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, k)).to(F64)
    g = torch.Generator().manual_seed(1)
    x, xv = torch.randn(16, 3, generator=g, dtype=F64), torch.randn(12, 3, generator=g, dtype=F64)
    maps = torch.randn(3, k, generator=g, dtype=F64)

    def losses(params: dict[str, torch.Tensor], inputs: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, params, (inputs,))
        return ((out - torch.sin(inputs @ maps)) ** 2).mean(dim=0)

    return model, lambda p: losses(p, x), lambda p: losses(p, xv)


def _exact_hypergradient(k: int, target: str, base: torch.Tensor, eta: float) -> tuple[torch.Tensor, ...]:
    """∂L_ref(θ − η Σ_i w_i g_i(θ))/∂w at w = base, by autograd through the SGD step (create_graph), and
    the g_i and g_ref = ∇L_ref(θ), each flattened, computed apart from the strategy."""
    model, train, ref = _setting(k)
    params = dict(model.named_parameters())
    w = base.clone().requires_grad_()
    grads = torch.autograd.grad((w * train(params)).sum(), list(params.values()), create_graph=True)
    stepped = {name: p - eta * g for (name, p), g in zip(params.items(), grads, strict=True)}
    hyper = torch.autograd.grad(ref(stepped)[PICK[target]].sum(), w)[0]
    flat = lambda gs: torch.cat([g.reshape(-1) for g in gs])  # noqa: E731
    g_i = torch.stack([flat(torch.autograd.grad(train(params)[i], list(params.values()))) for i in range(k)])
    g_ref = flat(torch.autograd.grad(ref(params)[PICK[target]].sum(), list(params.values())))
    return hyper, g_i, g_ref


@pytest.mark.parametrize("normalize", ["none", "cosine"])
@pytest.mark.parametrize(("k", "target"), [(2, "total"), (2, "a"), (3, "total"), (3, "b")])
def test_update_is_the_hypergradient_through_one_sgd_step(k: int, target: str, normalize: str) -> None:
    """log w_i moves by lr · a_i up to a common shift (the renormalisation), with a_i = −(1/η) ∂L_ref/∂w_i
    from autograd through one SGD step at η → 0 (``none``), divided by ‖g_ref‖ ‖g_i‖ (``cosine``); the
    step then trains with the moved weights (its .grad is Σ_i w_i g_i) and the weights keep Σ base."""
    base = torch.tensor([0.3, 0.5, 0.2][:k], dtype=F64)
    eta, lr = 1e-9, 0.7
    hyper, g_i, g_ref = _exact_hypergradient(k, target, base, eta)
    a = -hyper / eta
    torch.testing.assert_close(a, g_i @ g_ref, rtol=1e-7, atol=0)  # the setting is first-order at this η
    if normalize == "cosine":
        a = a / (g_i.norm(dim=1) * g_ref.norm())
    assert float(a.max() - a.min()) > 0.05  # the losses differ in alignment: the update is not a mere shift

    model, train, ref = _setting(k)
    strategy = _strategy(k, lr=lr, normalize=normalize, target=target)
    strategy.use_reference(lambda: ref(dict(model.named_parameters())))
    params = list(model.parameters())
    w = strategy.backward(train(dict(model.named_parameters())), base, params)
    moved = torch.log(w / base)
    torch.testing.assert_close(moved - moved[0], lr * (a - a[0]), rtol=0, atol=1e-7)
    torch.testing.assert_close(w.sum(), base.sum())
    torch.testing.assert_close(torch.cat([p.grad.reshape(-1) for p in params]), w @ g_i)


def _linear(direction: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda p: p @ direction + 5.0


def test_weights_stay_positive_under_an_anti_aligned_gradient_and_can_come_back() -> None:
    """Task b's gradient exactly opposes the target's, with a huge step (lr · a_b = −10^5 per step): the
    additive update w_b − 10^5 would be negative at once; here w_b falls to its floor e^LOG_FLOOR·(ratio)
    but stays positive and finite, the weights keep their sum, and when b turns helpful it comes back."""
    r, u = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0])  # task a's gradient u ⊥ the target's r
    base = torch.tensor([0.5, 0.5])
    strategy = _strategy(lr=1e3, normalize="none", target="a")
    p = torch.zeros(3, requires_grad=True)
    direction = {"b": -10.0 * r}
    strategy.use_reference(lambda: torch.stack([_linear(r)(p), _linear(u)(p)]))
    history = []
    for step in range(40):
        if step == 20:
            direction["b"] = 10.0 * r  # b now helps the target
        p.grad = None
        losses = torch.stack([_linear(u)(p), _linear(direction["b"])(p)])
        history.append(strategy.backward(losses, base, [p]))
    w = torch.stack(history)
    assert torch.isfinite(w).all() and bool((w > 0).all())
    torch.testing.assert_close(w.sum(dim=1), torch.ones(40))
    assert float(w[19, 1]) < 1e-15 and float(w[19, 1]) >= 0.5 * torch.exp(torch.tensor(LOG_FLOOR)).item()
    assert float(w[-1, 1]) > 0.99  # multiplicative steps bring it back once it helps


def test_cosine_weights_stay_positive_with_an_extreme_step() -> None:
    """lr 10^4 with cosine alignments of ±1: still positive, finite, summing to the static weights' sum."""
    strategy = _strategy(lr=1e4, target="total")
    p = torch.zeros(2, requires_grad=True)
    for _ in range(10):
        losses = torch.stack([p @ torch.tensor([1.0, 0.0]), p @ torch.tensor([-1.0, 0.0]) * 30.0])
        w = strategy.backward(losses, torch.tensor([0.2, 0.8]), [p])
        assert torch.isfinite(w).all() and bool((w > 0).all())
        torch.testing.assert_close(w.sum(), torch.tensor(1.0))


def test_every_updates_only_on_its_steps() -> None:
    """every 3: the reference is drawn and the weights move on steps 0, 3, 6 only; between them the step is
    the plain weighted sum with the current weights."""
    calls = []
    strategy = _strategy(lr=0.5, every=3, target="a")
    p = torch.zeros(2, requires_grad=True)
    strategy.use_reference(lambda: calls.append(1) or torch.stack([p @ torch.tensor([1.0, 1.0]), p.sum() * 0]))
    weights = []
    for _ in range(7):
        p.grad = None
        losses = torch.stack([p @ torch.tensor([1.0, 0.0]), p @ torch.tensor([0.0, -1.0])])  # cos ±1/√2
        weights.append(strategy.backward(losses, torch.tensor([0.5, 0.5]), [p]))
        torch.testing.assert_close(p.grad, weights[-1] * torch.tensor([1.0, -1.0]))
    assert len(calls) == 3
    moved = [not torch.equal(weights[i], weights[i - 1]) for i in range(1, 7)]
    assert moved == [False, False, True, False, False, True]


def test_options_are_checked() -> None:
    config = STRATEGIES["hypergrad"].Config
    for bad in ({"lr": 0.0}, {"target": "c"}, {"normalize": "l2"}, {"every": 0}, {"reference": "test"}):
        with pytest.raises(pydantic.ValidationError):
            config(**bad)


def _linear_pair(weighting: dict, n_a: int = 10) -> DualLossConfig:
    return DualLossConfig(
        problem={"name": "linear_pair", "options": {"n_a": n_a, "noise": 2.0, "related": 0.98}},
        epochs=8, batch_size=64, data_seed=0, seed=0, device="cpu",
        optimizer={"type": "adam", "lr": 0.05}, weighting=weighting,
    )  # fmt: skip


def test_one_training_moves_the_auxiliary_weight_towards_its_best() -> None:
    """benchmarks/efficiency's auxiliary case (10 samples of task a, a related task b with 30x its loss
    scale, target val_a_loss; best static w_a ≈ 0.94 on a fresh-seed grid): from w_a = 0.5, one training
    ends with w_a in (0.8, 0.99) and a lower val_a_loss than static 0.5; with target b it moves the
    other way (the target decides)."""
    static = dual_loss.train(_linear_pair({"type": "static"}))
    towards_a = dual_loss.train(_linear_pair({"type": "hypergrad", "lr": 0.3, "target": "a"}))
    assert 0.8 < towards_a["weight_a"] < 0.99
    assert towards_a["val_a_loss"] < 0.5 * static["val_a_loss"]
    towards_b = dual_loss.train(_linear_pair({"type": "hypergrad", "lr": 0.3, "target": "b"}))
    assert towards_b["weight_a"] < 0.2


def _mislabelled() -> Problem:
    """Two regression tasks on one linear map; task a's *validation* targets follow task b's true map, so a
    validation reference for target a favours task b, while a's own training batch favours a."""
    g = torch.Generator().manual_seed(0)
    theta = torch.randn(2, 4, 1, generator=g)
    xs = [torch.randn(128, 4, generator=g) for _ in range(3)]
    a = Task(train=(xs[0], xs[0] @ theta[0]), val=(xs[2], xs[2] @ theta[1]), loss=mse)
    b = Task(train=(xs[1], xs[1] @ theta[1]), val=(xs[2], xs[2] @ theta[1]), loss=mse)
    return Problem(make_model=lambda: nn.Linear(4, 1, bias=False), a=a, b=b)


@pytest.mark.parametrize(("reference", "favours"), [("val", "b"), ("train", "a")])
def test_the_dual_loop_gives_a_validation_batch(reference: str, favours: str) -> None:
    """With reference val the loop's batches come from the validation split (w_a falls); with reference
    train the step's own batch serves (w_a rises)."""
    cfg = DualLossConfig(
        problem="x:y", seed=0, data_seed=0, device="cpu", epochs=3, batch_size=32,
        weighting={"type": "hypergrad", "lr": 0.2, "target": "a", "reference": reference},
    )  # fmt: skip
    w_a = dual_loss.train(cfg, problem=_mislabelled())["weight_a"]
    assert (w_a < 0.3) if favours == "b" else (w_a > 0.7)


def _coupled(mislabel: bool) -> CoupledProblem:
    """A → B coupled regression whose validation targets for A's code (t) follow another map when
    ``mislabel``: a validation reference for target a then disagrees with A's own training loss."""
    g = torch.Generator().manual_seed(0)
    x, xv = torch.randn(64, 4, generator=g), torch.randn(64, 4, generator=g)
    m_t, m_other, m_y = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g), torch.randn(3, 2, generator=g)
    tv = xv @ (m_other if mislabel else m_t)
    return CoupledProblem(
        make_model_a=lambda: nn.Linear(4, 3), make_model_b=lambda: nn.Linear(3, 2),
        train=(x, x @ m_t @ m_y, x @ m_t), val=(xv, xv @ m_t @ m_y, tv),
        loss_a=nn.functional.mse_loss, loss_b=nn.functional.mse_loss,
    )  # fmt: skip


@pytest.mark.parametrize("mode", ["alternate", "b_on_detached", "joint"])
def test_the_alternating_loop_gives_a_validation_batch(mode: str) -> None:
    """Every mode trains with hypergrad; the reference is the validation split: mislabelled validation
    targets of A's code lower w_a against the run with honest ones."""
    weights = {}
    for mislabel in (False, True):
        cfg = AlternatingConfig(
            problem="x:y", mode=mode, seed=0, data_seed=0, device="cpu", epochs=3, batch_size=16,
            weighting={"type": "hypergrad", "lr": 0.3, "target": "a"},
        )  # fmt: skip
        metrics = alternating.train(cfg, None, problem=_coupled(mislabel))
        assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())
        weights[mislabel] = metrics["weight_a"]
    assert weights[True] < weights[False] - 0.05


def test_refused_where_the_step_must_be_a_plain_weighted_sum() -> None:
    """mixing accumulate and gradient accumulation need weights known before the step; vectorized groups
    fall back to one trial after another with the reason."""
    hg = {"type": "hypergrad"}
    with pytest.raises(pydantic.ValidationError, match="not hypergrad"):
        DualLossConfig(problem="linear_pair", mixing="accumulate", weighting=hg)
    with pytest.raises(pydantic.ValidationError, match="weighting hypergrad is not one"):
        DualLossConfig(problem="linear_pair", grad_accum_steps=2, weighting=hg)
    cfg = _linear_pair(hg)
    assert "weighting hypergrad" in why_not([cfg, cfg.model_copy(update={"seed": 1})], object())


def test_reference_losses_reads_the_split_in_eval_mode() -> None:
    """Each call: one fresh random batch of every split (rows of the split, not always the same rows),
    the models in eval mode while the losses are computed and back in their own mode after."""
    a, b = torch.arange(10.0).unsqueeze(1), 100 + torch.arange(6.0).unsqueeze(1)
    model, other = nn.Dropout(0.5), nn.Linear(1, 1).eval()
    seen = []

    def losses(batch_a: tuple[torch.Tensor, ...], batch_b: tuple[torch.Tensor, ...]) -> torch.Tensor:
        seen.append((model.training, other.training, batch_a[0].flatten().tolist(), batch_b[0].flatten().tolist()))
        return torch.zeros(2)

    splits = [((a, a), 4, None), ((b, b), 3, None)]
    compute = reference_losses(losses, [model, other], splits, DataConfig(), torch.device("cpu"), 0)
    for _ in range(8):
        compute()
    assert model.training and not other.training
    assert all(not m and not o for m, o, _, _ in seen)
    assert all(len(ra) == 4 and set(ra) <= set(range(10)) for _, _, ra, _ in seen)
    assert all(len(rb) == 3 and set(rb) <= set(range(100, 106)) for _, _, _, rb in seen)
    assert len({tuple(ra) for _, _, ra, _ in seen}) > 2


def test_its_step_size_is_searched_like_any_weighting_option() -> None:
    """A study file searches objective.weighting.lr (log-uniform) with the strategy and its target fixed in
    the objective; the trial's config carries the sampled step size and the file's target."""
    import optuna

    from sweep.studyfile.config import parse_study
    from sweep.studyfile.space import resolve, sample

    doc = {
        "study": {"name": "s", "metric": "val_a_loss"},
        "objective": {"problem": "linear_pair", "weighting": {"type": "hypergrad", "target": "a"}},
        "search": {"params": {"weighting.lr": {"type": "float", "low": 0.01, "high": 1.0, "log": True}}},
    }
    sf = parse_study(doc, "x.yaml")
    sampled, weights = sample(optuna.trial.FixedTrial({"weighting.lr": 0.37}), sf.search, sf.objective)
    cfg = resolve(sf.objective, sf.study.seed, 0, sampled, weights)
    assert cfg.weighting.type == "hypergrad" and cfg.weighting.lr == 0.37 and cfg.weighting.target == "a"
