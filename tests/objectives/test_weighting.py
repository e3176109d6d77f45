"""Weighting strategies: one shared suite over the registry, and each formula pinned on plain tensors."""

from __future__ import annotations

import math

import pydantic
import pytest
import torch
from torch import nn

from objectives.weighting import STRATEGIES, Capabilities, capabilities, make, names_with
from objectives.weighting.base import Weighting
from objectives.weighting.pcgrad import project


def _two_task_losses(model: nn.Module, x: torch.Tensor, k: int) -> torch.Tensor:
    out = model(x)
    return torch.stack([((out[:, i] - (i + 1.0)) ** 2).mean() for i in range(k)])


def _run(name: str, k: int, seed: int, steps: int = 4) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """A few steps of a strategy on a tiny shared model; the weights and parameters after each step."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, k))
    strategy = make(STRATEGIES[name].Config(), k, torch.device("cpu"), seed)
    opt = torch.optim.SGD([*model.parameters(), *strategy.parameters()], lr=0.05)
    x = torch.randn(16, 3, generator=torch.Generator().manual_seed(1))
    base = torch.full((k,), 1.0 / k)
    weights, params = [], []
    for step in range(steps):
        opt.zero_grad(set_to_none=True)
        losses = _two_task_losses(model, x, k)
        w = strategy.backward(losses, base, list(model.parameters()))
        opt.step()
        strategy.after_step(lambda: _two_task_losses(model, x, k).detach())
        if step % 2 == 1:
            strategy.end_epoch(losses.detach())
        weights.append(w.clone())
        params.append(torch.cat([p.detach().reshape(-1) for p in model.parameters()]).clone())
    return weights, params


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_shared_contract(name: str, k: int) -> None:
    """Finite (k,) weights, finite gradients that move the model, deterministic under a seed."""
    weights, params = _run(name, k, seed=7)
    assert all(w.shape == (k,) and torch.isfinite(w).all() and not w.requires_grad for w in weights)
    assert all(torch.isfinite(p).all() for p in params)
    assert not torch.equal(params[0], params[-1])
    again_w, again_p = _run(name, k, seed=7)
    assert all(torch.equal(a, b) for a, b in zip(weights, again_w, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(params, again_p, strict=True))
    cfg = STRATEGIES[name].Config()
    assert cfg.type == name
    with pytest.raises(pydantic.ValidationError):
        STRATEGIES[name].Config(nonexistent=1)


@pytest.mark.parametrize("name", ["dwa", "rlw", "gradnorm", "famo", "uncertainty", "hypergrad"])
def test_dynamic_strategies_change_the_weights(name: str) -> None:
    """Dynamic methods do move the weights over steps (their state advances)."""
    weights, _ = _run(name, 2, seed=3, steps=6)
    assert not all(torch.allclose(weights[0], w) for w in weights[1:])


def test_static_is_the_weighted_sum() -> None:
    """static: gradient of Σ w_i L_i."""
    p = torch.tensor([1.0, 2.0], requires_grad=True)
    losses = torch.stack([p[0] ** 2, 3 * p[1]])
    w = make(STRATEGIES["static"].Config(), 2, torch.device("cpu"), 0).backward(losses, torch.tensor([0.25, 2.0]), [p])
    torch.testing.assert_close(p.grad, torch.tensor([0.25 * 2 * 1.0, 2.0 * 3]))
    torch.testing.assert_close(w, torch.tensor([0.25, 2.0]))


def test_uncertainty_kendall_loss() -> None:
    """L = Σ w L_i/(2e^{s_i}) + s_i/2 (active losses): weights w/(2e^s), ∂L/∂s_i = −wL_i/(2e^s) + 1/2."""
    strategy = make(STRATEGIES["uncertainty"].Config(init_log_var=0.5), 3, torch.device("cpu"), 0)
    (s,) = strategy.parameters()
    losses = torch.tensor([2.0, 4.0, 1.0], requires_grad=True)
    base = torch.tensor([1.0, 0.5, 0.0])
    w = strategy.backward(losses, base, [])
    torch.testing.assert_close(w, base / (2 * math.exp(0.5)))
    expected = -base * losses.detach() / (2 * math.exp(0.5)) + 0.5 * (base > 0).float()
    torch.testing.assert_close(s.grad, expected)
    torch.testing.assert_close(losses.grad, base / (2 * math.exp(0.5)))


def test_dwa_weights_from_loss_history() -> None:
    """λ = K softmax(r/T), r_i = L_i(t−1)/L_i(t−2); 1 until two epochs are known."""
    strategy = make(STRATEGIES["dwa"].Config(temperature=2.0), 2, torch.device("cpu"), 0)
    base = torch.tensor([0.5, 0.5])
    torch.testing.assert_close(strategy.weights(torch.zeros(2), base), base)
    strategy.end_epoch(torch.tensor([2.0, 1.0]))
    torch.testing.assert_close(strategy.weights(torch.zeros(2), base), base)
    strategy.end_epoch(torch.tensor([1.0, 1.0]))  # r = (0.5, 1.0)
    e = [math.exp(0.25), math.exp(0.5)]
    expected = [0.5 * 2 * e[0] / sum(e), 0.5 * 2 * e[1] / sum(e)]
    torch.testing.assert_close(strategy.weights(torch.zeros(2), base), torch.tensor(expected))
    strategy.end_epoch(torch.tensor([0.5, 1.0]))  # only the last two epochs count: r = (0.5, 1.0) again
    torch.testing.assert_close(strategy.weights(torch.zeros(2), base), torch.tensor(expected))


def test_rlw_draws_softmax_normal() -> None:
    """λ = K·softmax(z), z ~ N(0, I) from the strategy's seeded generator, times the static weights."""
    strategy = make(STRATEGIES["rlw"].Config(), 3, torch.device("cpu"), 11)
    g = torch.Generator().manual_seed(11)
    base = torch.tensor([0.2, 0.3, 0.5])
    for _ in range(3):
        expected = base * 3 * torch.softmax(torch.randn(3, generator=g), dim=0)
        torch.testing.assert_close(strategy.weights(torch.zeros(3), base), expected)


def test_pcgrad_projection() -> None:
    """Conflicting gradients are projected onto each other's normal plane; agreeing ones are summed."""
    g1, g2 = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0])
    # g1' = g1 − (g1·g2/‖g2‖²) g2 = (0.5, 0.5); g2' = g2 − (g2·g1/‖g1‖²) g1 = (0, 1)
    torch.testing.assert_close(project([g1, g2], [[1], [0]]), torch.tensor([0.5, 1.5]))
    h1, h2 = torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0])
    torch.testing.assert_close(project([h1, h2], [[1], [0]]), h1 + h2)


def test_pcgrad_backward_assigns_projected_gradients() -> None:
    """backward writes the projected sum of the weighted task gradients into .grad."""
    p = torch.tensor([0.0, 0.0], requires_grad=True)
    losses = torch.stack([p[0], -p[0] + p[1]])  # gradients (1, 0) and (−1, 1)
    strategy = make(STRATEGIES["pcgrad"].Config(), 2, torch.device("cpu"), 0)
    strategy.backward(losses, torch.tensor([1.0, 1.0]), [p])
    torch.testing.assert_close(p.grad, torch.tensor([0.5, 1.5]))


def test_gradnorm_first_step() -> None:
    """Step 1: r_i = 1, so the target is the mean G; the task with the larger gradient norm loses
    weight by Adam's first step (lr·sign) and ω is renormalised to sum to K."""
    p = torch.tensor([1.0], requires_grad=True)
    losses = torch.stack([3.0 * p[0], 1.0 * p[0]])  # ‖∇L_1‖ = 3, ‖∇L_2‖ = 1 on the shared p
    strategy = make(STRATEGIES["gradnorm"].Config(lr=0.1), 2, torch.device("cpu"), 0)
    w = strategy.backward(losses, torch.tensor([0.5, 0.5]), [p])
    torch.testing.assert_close(w, torch.tensor([0.5, 0.5]))  # this step trains with the old ω
    after = strategy.weights(losses, torch.tensor([1.0, 1.0]))
    torch.testing.assert_close(after, torch.tensor([0.9, 1.1]), atol=1e-5, rtol=0)


def _three_heads() -> tuple[nn.Module, nn.ModuleList, torch.Tensor, torch.Tensor]:
    """A shared trunk and three one-output heads (one per loss), inputs and three targets that the
    model fits at very different rates (so the loss ratios L_i / L_i(0) soon differ a lot)."""
    torch.manual_seed(0)
    trunk, heads = nn.Sequential(nn.Linear(3, 4), nn.Tanh()), nn.ModuleList(nn.Linear(4, 1) for _ in range(3))
    x = torch.randn(16, 3, generator=torch.Generator().manual_seed(1))
    targets = torch.stack([3.0 * x[:, 0], x[:, 1] - x[:, 2], torch.full((16,), 0.3)], dim=1)
    return trunk, heads, x, targets


def _head_losses(trunk: nn.Module, heads: nn.ModuleList, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    h = trunk(x)
    return torch.stack([((head(h)[:, 0] - targets[:, i]) ** 2).mean() for i, head in enumerate(heads)])


def _gradnorm_reference(steps: int, alpha: float, lr: float, model_lr: float) -> list[tuple[torch.Tensor, ...]]:
    """GradNorm (Chen et al. 2018, Alg. 1) written out: per step the weights trained with, ω after the
    update, and the losses. W = the trunk (the parameters every loss reaches); G_i = ω_i ‖∇_W L_i‖;
    r_i = (L_i / L_i(0)) / mean_j(L_j / L_j(0)) with L(0) the first step's losses; the target
    T_i = mean(G) r_i^α is a constant, so ∂/∂ω_i Σ_j |G_j − T_j| = sign(G_i − T_i) ‖∇_W L_i‖; one Adam
    step (β = 0.9, 0.999, ε = 1e-8, written out here) on ω, then ω ← K ω / Σ ω. The model takes a plain
    SGD step on Σ_i ω_i(t) L_i with the ω from before the update."""
    trunk, heads, x, targets = _three_heads()
    shared, params = list(trunk.parameters()), [*trunk.parameters(), *heads.parameters()]
    omega, m, v = torch.ones(3), torch.zeros(3), torch.zeros(3)
    first, out = None, []
    for t in range(1, steps + 1):
        losses = _head_losses(trunk, heads, x, targets)
        first = losses.detach() if first is None else first
        grads = [torch.autograd.grad(li, shared, retain_graph=True) for li in losses]  # ∇_W L_i
        norms = torch.stack([torch.cat([g.reshape(-1) for g in grad_i]).norm() for grad_i in grads])
        rate = losses.detach() / first
        target = (omega * norms).mean() * (rate / rate.mean()) ** alpha
        grad = torch.sign(omega * norms - target) * norms
        m, v = 0.9 * m + 0.1 * grad, 0.999 * v + 0.001 * grad**2
        used = omega
        omega = omega - lr * (m / (1 - 0.9**t)) / ((v / (1 - 0.999**t)).sqrt() + 1e-8)
        omega = omega * 3 / omega.sum()
        (used * losses).sum().backward()
        with torch.no_grad():
            for p in params:
                p -= model_lr * p.grad
                p.grad = None
        out.append((used, omega, losses.detach()))
    return out


def test_gradnorm_later_steps_with_three_losses_match_the_paper() -> None:
    """Eight steps, three losses on a shared trunk: each step's weights (ω before the step), ω after it and
    the losses (so the model trained with those weights) equal an independent GradNorm written out with
    a constant (detached) target, the first step's losses as L(0) and r^α, to float32 rounding.

    Settings keep ω well inside (0.5, 1.5) (checked), so a positivity floor or parametrisation of ω (which
    only acts near 0) does not change what is compared here."""
    steps, alpha, lr, model_lr = 8, 1.5, 0.05, 0.2
    expected = _gradnorm_reference(steps, alpha, lr, model_lr)
    rates = [losses / expected[0][2] for _, _, losses in expected]
    assert max(float(r.max() / r.min()) for r in rates) > 3  # the loss ratios differ: L(0) and α matter
    assert all(float(w.min()) > 0.5 and float(w.max()) < 1.5 for _, w, _ in expected)

    trunk, heads, x, targets = _three_heads()
    params = [*trunk.parameters(), *heads.parameters()]
    strategy = make(STRATEGIES["gradnorm"].Config(alpha=alpha, lr=lr), 3, torch.device("cpu"), 0)
    for step, (used, omega, losses_expected) in enumerate(expected):
        at = lambda m, step=step: f"step {step}: {m}"  # noqa: E731
        losses = _head_losses(trunk, heads, x, targets)
        torch.testing.assert_close(losses.detach(), losses_expected, atol=1e-5, rtol=1e-5, msg=at)
        w = strategy.backward(losses, torch.ones(3), params)
        with torch.no_grad():
            for p in params:
                p -= model_lr * p.grad
                p.grad = None
        torch.testing.assert_close(w, used, atol=1e-5, rtol=0, msg=at)
        after = strategy.weights(losses, torch.ones(3))
        torch.testing.assert_close(after, omega, atol=1e-5, rtol=0, msg=at)


def test_famo_weights_and_update() -> None:
    """Weights z/(c·L) with c = Σ z/L; after the step ξ moves towards the loss that fell less."""
    strategy = make(STRATEGIES["famo"].Config(lr=0.025, gamma=0.0), 2, torch.device("cpu"), 0)
    losses = torch.tensor([1.0, 4.0], requires_grad=True)
    w = strategy.backward(losses, torch.tensor([0.5, 0.5]), [])
    inv = torch.tensor([1.0, 0.25])
    torch.testing.assert_close(w, inv / inv.sum(), rtol=1e-6, atol=1e-7)
    # ∂/∂L_i of Σ z_i log L_i / c = z_i/(c L_i): the same as the reported weights
    torch.testing.assert_close(losses.grad, w, rtol=1e-6, atol=1e-7)
    strategy.after_step(lambda: torch.tensor([0.5, 3.6]))  # task 1 fell by log 2, task 2 by log(4/3.6)
    z = strategy.weights(torch.tensor([1.0, 1.0]), torch.ones(2))
    assert z[1] > z[0]  # equal losses now: the weight follows softmax(ξ), which favours task 2
    # Adam's first step moves each logit by lr against the sign of its gradient.
    torch.testing.assert_close(torch.log(z[1] / z[0]), torch.tensor(0.05), atol=1e-6, rtol=0)


class _Counted(torch.autograd.Function):
    """The identity, counting the backward passes through it in ``counter[0]`` (a vmapped pass as two)."""

    @staticmethod
    def forward(ctx: object, x: torch.Tensor, counter: list[int]) -> torch.Tensor:
        ctx.counter = counter  # type: ignore[attr-defined]
        return x.clone()

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        # a vectorized backward (vmap over the losses: one Jacobian) counts as one pass per loss
        ctx.counter[0] += 2 if torch._C._functorch.is_batchedtensor(grad) else 1  # type: ignore[attr-defined]
        return grad, None


# Two positive losses of p, linear, with conflicting gradients: u·v < 0 (so PCGrad projects) and
# ‖w_1 u‖ ≠ ‖w_2 v‖ under BASE (so GradNorm moves ω).
U, V = torch.tensor([1.0, 1.0, 0.0]), torch.tensor([-1.0, 0.5, 0.0])
BASE = torch.tensor([0.6, 0.4])


def _conflicting(p: torch.Tensor, counter: list[int]) -> list[torch.Tensor]:
    q = _Counted.apply(p, counter)
    return [q @ U + 5.0, q @ V + 3.0]


def _twins(name: str) -> tuple[Weighting, Weighting]:
    """Two strategies built alike (same seed), both past two epochs (so DWA's λ is not 1)."""
    twins = tuple(make(STRATEGIES[name].Config(), 2, torch.device("cpu"), 5) for _ in range(2))
    for s in twins:
        s.end_epoch(torch.tensor([2.0, 1.0]))
        s.end_epoch(torch.tensor([1.0, 1.0]))
    return twins  # type: ignore[return-value]


def _same_grads(first: Weighting, second: Weighting) -> bool:
    """The strategies' own learned parameters got the same gradients (or none, on both)."""
    pairs = zip([q.grad for q in first.parameters()], [q.grad for q in second.parameters()], strict=True)
    return all((a is None) == (b is None) and (a is None or torch.allclose(a, b)) for a, b in pairs)


def _observed(name: str) -> Capabilities:
    """What the strategy does, probed from outside, in the terms it declares in its class.

    weights_from_losses: its weights change with the step's losses. weights_before_step: its weights do
    not depend on the step's losses, and a step through
    ``backward`` equals the accumulate path (weights first, then each loss back-propagated alone, as
    the dual loop does): same weights, same gradients (model and the strategy's own parameters) and
    the same state afterwards (the next weights). losses_after_step: ``after_step`` calls its
    argument. own_backward: ``backward`` runs more than one backward pass through the model.
    reference_losses: ``backward`` calls the function given to ``use_reference``.
    """
    first, second = _twins(name)
    independent = torch.equal(
        first.weights(torch.tensor([1.0, 4.0]), BASE), second.weights(torch.tensor([3.0, 0.5]), BASE)
    )

    first, second = _twins(name)
    p1, p2 = torch.full((3,), 0.5, requires_grad=True), torch.full((3,), 0.5, requires_grad=True)
    passes, references = [0], []
    first.use_reference(lambda: references.append(True) or torch.stack(_conflicting(p1, [0])))
    second.use_reference(lambda: torch.stack(_conflicting(p2, [0])))
    w1 = first.backward(torch.stack(_conflicting(p1, passes)), BASE, [p1])
    w2 = second.weights(BASE, BASE).detach()
    for w_i, loss in zip(w2, _conflicting(p2, [0]), strict=True):
        (w_i * loss).backward()
    same_state = torch.equal(
        first.weights(torch.tensor([2.0, 1.0]), BASE), second.weights(torch.tensor([2.0, 1.0]), BASE)
    )
    accumulates = (
        torch.allclose(w1, w2) and torch.allclose(p1.grad, p2.grad) and _same_grads(first, second) and same_state
    )

    called = []
    first.after_step(lambda: called.append(True) or torch.tensor([5.0, 2.0]))
    return Capabilities(
        weights_before_step=independent and accumulates,
        losses_after_step=bool(called),
        own_backward=passes[0] > 1,
        reference_losses=bool(references),
        weights_from_losses=not independent,
    )


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_declared_capabilities_match_behaviour(name: str) -> None:
    """Each registry entry's class is a Weighting, and what it declares is what it does."""
    cls = STRATEGIES[name].build
    assert Weighting in cls.__mro__
    assert isinstance(capabilities(name), Capabilities)
    assert _observed(name) == capabilities(name)


def test_capabilities_and_names_with() -> None:
    """Only FAMO recomputes losses after the step; accumulate-compatible strategies are the static-like ones."""
    assert capabilities("famo").losses_after_step
    assert not any(capabilities(name).losses_after_step for name in STRATEGIES if name != "famo")
    assert names_with(weights_before_step=True) == ("static", "dwa", "rlw")
    gradient_methods = ("mgda", "upgrad", "imtl_g", "cagrad", "nash_mtl", "aligned_mtl", "gradvac", "graddrop")
    gradient_methods += ("fairgrad", "excess_mtl", "db_mtl")
    assert names_with(own_backward=True) == ("gradnorm", "pcgrad", "hypergrad", *gradient_methods)
    assert names_with(losses_after_step=True, weights_before_step=True) == ()
    assert names_with(reference_losses=True) == ("hypergrad",)
    with pytest.raises(TypeError, match="not a capability"):
        names_with(cheap=True)


class _Halves(Weighting):
    """A minimal strategy: only ``weights``; everything else is the protocol's default."""

    def weights(self, losses: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        return base / 2


def test_default_hooks_train_a_minimal_strategy() -> None:
    """The defaults: no parameters, backward of Σ w_i L_i, after_step and end_epoch do nothing."""
    strategy = _Halves()
    assert strategy.parameters() == []
    assert (strategy.weights_before_step, strategy.losses_after_step, strategy.own_backward) == (True, False, False)
    assert not strategy.reference_losses
    strategy.use_reference(lambda: pytest.fail("the default strategy must not ask for reference losses"))
    p = torch.tensor([1.0, 2.0], requires_grad=True)
    opt = torch.optim.SGD([p], lr=0.1)
    losses = torch.stack([p[0] ** 2, 3 * p[1]])
    w = strategy.backward(losses, torch.tensor([0.5, 2.0]), [p])
    torch.testing.assert_close(w, torch.tensor([0.25, 1.0]))
    assert not w.requires_grad
    torch.testing.assert_close(p.grad, torch.tensor([0.25 * 2 * 1.0, 1.0 * 3]))
    opt.step()
    torch.testing.assert_close(p.detach(), torch.tensor([1.0 - 0.05, 2.0 - 0.3]))
    strategy.after_step(lambda: pytest.fail("the default after_step must not recompute losses"))
    strategy.end_epoch(torch.tensor([1.0, 1.0]))
    torch.testing.assert_close(strategy.weights(losses, torch.tensor([0.5, 2.0])), torch.tensor([0.25, 1.0]))


def test_gradnorm_measures_only_shared_parameters() -> None:
    """GradNorm's W is the parameters every loss reaches, even when losses come stacked (zeros, not None)."""
    trunk, head_a, head_b = nn.Linear(3, 4), nn.Linear(4, 1), nn.Linear(4, 1)
    x = torch.randn(8, 3)
    h = trunk(x)
    losses = torch.stack([head_a(h).pow(2).mean(), head_b(h).pow(2).mean()])
    strategy = make(STRATEGIES["gradnorm"].Config(), 2, torch.device("cpu"), 0)
    params = [*trunk.parameters(), *head_a.parameters(), *head_b.parameters()]
    reach = strategy.reaches(losses, params)
    assert reach.active == (0, 1) and reach.shared == (0, 1)  # the trunk's weight and bias only
    assert reach.own == (2, 3, 4, 5)  # each head's weight and bias


def test_gradnorm_in_alternate_mode_with_a_deeper_than_b() -> None:
    """A with more parameter tensors than B: A's and B's steps each get their own structure (was IndexError)."""
    from objectives import alternating
    from objectives.config import AlternatingConfig
    from objectives.problems import CoupledProblem

    g = torch.Generator().manual_seed(0)
    x, t, y = torch.randn(32, 4, generator=g), torch.randn(32, 3, generator=g), torch.randn(32, 2, generator=g)
    problem = CoupledProblem(
        make_model_a=lambda: nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 5), nn.Tanh(), nn.Linear(5, 3)),
        make_model_b=lambda: nn.Linear(3, 2),
        train=(x, y, t),
        val=(x, y, t),
        loss_a=nn.functional.mse_loss,
        loss_b=nn.functional.mse_loss,
    )
    cfg = AlternatingConfig(
        problem="x:y", mode="alternate", seed=0, data_seed=0, device="cpu", epochs=2, batch_size=8,
        weighting={"type": "gradnorm"},
    )  # fmt: skip
    metrics = alternating.train(cfg, None, problem=problem)
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())


def _gradnorm_on_two_heads(
    log_ratio: float, lr: float = 0.025, scale: float = 1.0, steps: int = 300
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """GradNorm (default α) on a shared trunk with two regression heads, static weights at
    ``w_a / w_b = 10^log_ratio``, the model on SGD 0.1 with momentum 0.9 (weighting_compare's
    optimizer), task b's target ``scale`` times larger. Returns ω after every step and the final
    parameters."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(256, 8, generator=g)
    targets = torch.stack([torch.sin(x[:, 0]) + x[:, 1], scale * (x[:, 2] * x[:, 3] - x[:, 4])], dim=1)
    trunk, heads = nn.Sequential(nn.Linear(8, 16), nn.Tanh()), nn.ModuleList(nn.Linear(16, 1) for _ in range(2))
    params = [*trunk.parameters(), *heads.parameters()]
    optimizer = torch.optim.SGD(params, lr=0.1, momentum=0.9)
    w_a = 10.0**log_ratio / (1 + 10.0**log_ratio)
    base = torch.tensor([w_a, 1 - w_a])
    strategy = make(STRATEGIES["gradnorm"].Config(lr=lr), 2, torch.device("cpu"), 0)
    omegas = []
    for _ in range(steps):
        batch = torch.randint(256, (32,), generator=g)
        h = trunk(x[batch])
        losses = torch.stack([((head(h)[:, 0] - targets[batch, i]) ** 2).mean() for i, head in enumerate(heads)])
        optimizer.zero_grad(set_to_none=True)
        strategy.backward(losses, base, params)
        optimizer.step()
        omegas.append(strategy.weights(losses, torch.ones(2)))
    return torch.stack(omegas), params


@pytest.mark.parametrize(
    ("log_ratio", "lr", "scale"),
    [(r, 0.025, 1.0) for r in range(-3, 4)] + [(-3, 0.1, 10.0), (0, 0.1, 10.0), (3, 0.1, 10.0)],
)
def test_gradnorm_weights_stay_positive_over_the_searched_range(log_ratio: float, lr: float, scale: float) -> None:
    """Over the searched static ratios (10^-3 … 10^3), and with GradNorm's lr 0.1 on a task whose target
    is 10× larger, ω stays positive and finite for 300 steps and the model stays finite (unfloored, ω
    went below 0 at ratios ±2, ±3 and the lr 0.1 case ended in NaN)."""
    omegas, params = _gradnorm_on_two_heads(log_ratio, lr, scale)
    assert torch.isfinite(omegas).all()
    assert float(omegas.min()) > 0
    torch.testing.assert_close(omegas.sum(dim=1), torch.full((len(omegas),), 2.0))  # still renormalised to K
    assert all(torch.isfinite(p).all() for p in params)


def test_gradnorm_measures_the_unweighted_task_gradients() -> None:
    """G_i = ω_i ‖∇_W L_i‖ (the paper's L_i is the task's own loss; the static weights multiply ω
    outside GradNorm): scaling the static weights leaves ω's update unchanged. With ‖∇L_1‖ = 1 and
    ‖∇L_2‖ = 2, task 2 loses weight even though its static weight is 10× smaller (when G included the
    static weight, G = (1, 0.2) and task 1 lost weight instead)."""
    p = torch.tensor([1.0], requires_grad=True)
    losses = torch.stack([1.0 * p[0], 2.0 * p[0]])
    strategy = make(STRATEGIES["gradnorm"].Config(lr=0.1), 2, torch.device("cpu"), 0)
    strategy.backward(losses, torch.tensor([1.0, 0.1]), [p])
    torch.testing.assert_close(strategy.weights(losses, torch.ones(2)), torch.tensor([1.1, 0.9]), atol=1e-5, rtol=0)


def test_gradnorm_floors_omega_before_renormalising() -> None:
    """An Adam step larger than ω (lr 1.5: ω = (1 − 1.5, 1 + 1.5) = (−0.5, 2.5) unconstrained) is floored
    at FLOOR and then renormalised to sum to K: (FLOOR, 2.5) · 2 / (2.5 + FLOOR), both positive."""
    from objectives.weighting.gradnorm import FLOOR

    p = torch.tensor([1.0], requires_grad=True)
    losses = torch.stack([3.0 * p[0], 1.0 * p[0]])
    strategy = make(STRATEGIES["gradnorm"].Config(lr=1.5), 2, torch.device("cpu"), 0)
    strategy.backward(losses, torch.tensor([0.5, 0.5]), [p])
    expected = torch.tensor([FLOOR, 2.5]) * 2 / (2.5 + FLOOR)
    torch.testing.assert_close(strategy.weights(losses, torch.ones(2)), expected, atol=1e-6, rtol=0)
