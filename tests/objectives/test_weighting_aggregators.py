"""Aligned-MTL, GradVac, GradDrop, FairGrad, ExcessMTL and DB-MTL on the shared parameters, each against its
paper's formula written out here with numpy/scipy/torch (2 and 3 tasks, float64; the stateful ones over two
steps): the trunk's gradient, each head's gradient and the returned effective weights."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
import pytest
import scipy.optimize
import torch

from objectives.weighting import STRATEGIES, make
from tests.objectives.test_weighting_shared import _Net as SharedNet

SEED = 5


class _Net(SharedNet):
    """A trunk shared by every task and one head per task (the shared suite's net, without its unused
    parameter)."""

    def __init__(self, k: int) -> None:
        super().__init__(k)
        del self.unused


X = torch.randn(16, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
BASE = {2: torch.tensor([0.6, 0.4], dtype=torch.float64), 3: torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)}


def _flat(grads: tuple[torch.Tensor | None, ...] | list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([g.reshape(-1) for g in grads])


def _run(name: str, k: int, steps: int = 2, seed: int = SEED, **options: object) -> list[dict[str, object]]:
    """``steps`` training steps (SGD, lr 0.1) of the strategy; per step the plain-autograd task gradients of
    w_i L_i (trunk rows, each head's own), the losses, and what the strategy filled in and returned."""
    net = _Net(k)
    base = BASE[k]
    strategy = make(STRATEGIES[name].Config(**options), k, torch.device("cpu"), seed)
    trunk = list(net.trunk.parameters())
    record = []
    for _ in range(steps):
        net.zero_grad(set_to_none=True)
        losses = net.losses(X)
        rows = [_flat(torch.autograd.grad(base[i] * losses[i], trunk, retain_graph=True)) for i in range(k)]
        heads = [_flat(torch.autograd.grad(base[i] * losses[i], list(h.parameters()), retain_graph=True))
                 for i, h in enumerate(net.heads)]  # fmt: skip
        log_rows = [_flat(torch.autograd.grad(base[i] * torch.log(losses[i] + 1e-8), trunk, retain_graph=True))
                    for i in range(k)]  # fmt: skip
        weights = strategy.backward(losses, base, list(net.parameters()))
        record.append({
            "J": torch.stack(rows), "heads": heads, "log_J": torch.stack(log_rows), "losses": losses.detach(),
            "trunk": _flat([p.grad for p in trunk]), "weights": weights,
            "got_heads": [_flat([p.grad for p in h.parameters()]) for h in net.heads],
        })  # fmt: skip
        with torch.no_grad():
            for p in net.parameters():
                p -= 0.1 * p.grad
    return record


def _heads_are_their_own(record: list[dict[str, object]], scale: Callable[[int, dict], float] = lambda i, s: 1.0):
    for s in record:
        for i, (got, want) in enumerate(zip(s["got_heads"], s["heads"], strict=True)):
            torch.testing.assert_close(got, want * scale(i, s), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("k", [2, 3])
def test_aligned_mtl_is_the_mean_of_the_aligned_gradients(k: int) -> None:
    """Senushkin et al., Algorithm 1: with Jᵀ = U Σ Wᵀ (SVD), the aligned gradients are σ_min U Wᵀ
    (orthogonal, of equal norms) and the step is their mean; as row weights, σ_min W Σ⁻¹ Wᵀ 1/m."""
    for s in _run("aligned_mtl", k):
        jt = s["J"].numpy().T
        u, sigma, wt = np.linalg.svd(jt, full_matrices=False)
        aligned = sigma.min() * u @ wt
        np.testing.assert_allclose(s["trunk"].numpy(), aligned.mean(axis=1), rtol=1e-8, atol=1e-12)
        rows = sigma.min() * wt.T @ np.diag(1 / sigma) @ wt @ np.full(k, 1 / k)
        np.testing.assert_allclose(s["weights"].numpy(), BASE[k].numpy() * rows, rtol=1e-8)
        assert not np.allclose(rows, 1.0)  # it re-weighted
    _heads_are_their_own(_run("aligned_mtl", k))


def _gradvac(steps: list[np.ndarray], orders: list[list[list[int]]], beta: float) -> list[tuple[np.ndarray, ...]]:
    """Wang et al. (2021), Algorithm 1 over the steps' task rows, φ̂ from 0; per step the summed corrected
    gradients and their coefficients on the original rows (Σ_i g_i^PC = Σ_j c_j g_j)."""
    m = len(steps[0])
    phi_hat = np.zeros((m, m))
    out = []
    for g, order in zip(steps, orders, strict=True):
        total, coef = np.zeros_like(g[0]), np.zeros(m)
        for i in range(m):
            gi, ci = g[i].copy(), np.eye(m)[i]
            for j in order[i]:
                phi = gi @ g[j] / (np.linalg.norm(gi) * np.linalg.norm(g[j]))
                if phi < phi_hat[i, j]:
                    hat = phi_hat[i, j]
                    w = np.linalg.norm(gi) * (hat * np.sqrt(1 - phi**2) - phi * np.sqrt(1 - hat**2))
                    w /= np.linalg.norm(g[j]) * np.sqrt(1 - hat**2)
                    gi, ci = gi + w * g[j], ci + w * np.eye(m)[j]
                phi_hat[i, j] = (1 - beta) * phi_hat[i, j] + beta * phi
            total, coef = total + gi, coef + ci
        out.append((total, coef))
    return out


@pytest.mark.parametrize("k", [2, 3])
def test_gradvac_pins_two_steps_against_the_paper(k: int) -> None:
    """Two steps (the EMA target φ̂ carries over): the trunk's gradients and the weights equal the paper's
    update for one of the task orders (each step's orders are drawn from the strategy's seeded generator;
    with three tasks every combination of orders over both steps is tried). A correction happens."""
    _Net(k)  # _run builds its net so: the global RNG's state after that is what the run must leave
    state = torch.get_rng_state()
    record = _run("gradvac", k)
    assert torch.equal(torch.get_rng_state(), state)  # the orders come from the strategy's own generator
    grads = [s["J"].numpy() for s in record]
    per_step = list(itertools.product(*(itertools.permutations([j for j in range(k) if j != i]) for i in range(k))))
    matches = []
    for orders in itertools.product(per_step, repeat=2):
        ref = _gradvac(grads, [[list(o) for o in step] for step in orders], beta=0.5)
        matches.append(all(
            np.allclose(s["trunk"].numpy(), total, rtol=1e-6, atol=1e-10)
            and np.allclose(s["weights"].numpy(), BASE[k].numpy() * coef, rtol=1e-6)
            for s, (total, coef) in zip(record, ref, strict=True)
        ))  # fmt: skip
    assert any(matches)
    for s in record:
        assert not np.allclose(s["trunk"].numpy(), s["J"].numpy().sum(0), rtol=1e-6)  # it corrected
    _heads_are_their_own(record)


@pytest.mark.parametrize("k", [2, 3])
def test_graddrop_masks_by_sign_purity_with_its_own_seeded_draw(k: int) -> None:
    """Chen et al. (2020), Algorithm 1: P = ½(1 + Σ g_i / Σ |g_i|) per coordinate, g_i's positive entries
    kept where P > U, its negative ones where P < U, U the uniform draw of a generator seeded from the
    strategy's (one seed per step); the weights are the static ones. The global RNG is not consumed."""
    generator = torch.Generator().manual_seed(SEED)
    _Net(k)  # _run builds its net so: the global RNG's state after that is what the run must leave
    state = torch.get_rng_state()
    record = _run("graddrop", k)
    assert torch.equal(torch.get_rng_state(), state)
    for s in record:
        g = s["J"]
        seed = int(torch.randint(0, 2**62, (), generator=generator))
        u = torch.rand(g.shape[1], generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        purity = 0.5 * (1 + g.sum(0) / g.abs().sum(0))
        keep = ((purity > u) & (g > 0)) | ((purity < u) & (g < 0))
        torch.testing.assert_close(s["trunk"], (keep * g).sum(0), rtol=1e-12, atol=1e-14)
        assert not torch.allclose(s["trunk"], g.sum(0))  # it dropped something
        torch.testing.assert_close(s["weights"], BASE[k])
    _heads_are_their_own(record)
    again, other = _run("graddrop", k), _run("graddrop", k, seed=SEED + 1)
    assert all(torch.equal(a["trunk"], b["trunk"]) for a, b in zip(record, again, strict=True))
    assert not all(torch.equal(a["trunk"], b["trunk"]) for a, b in zip(record, other, strict=True))


@pytest.mark.parametrize("k", [2, 3])
def test_fairgrad_solves_the_alpha_fair_condition(k: int) -> None:
    """Ban & Ji (2024), Equation 4: G w = w^(−1/α), G = J Jᵀ, solved here with scipy's root finder in
    log w (torchjd uses least_squares: both iterative, so compared at rtol 1e-5); step Σ w_i g_i."""
    for alpha in (1.0, 2.0):
        for s in _run("fairgrad", k, alpha=alpha):
            jac = s["J"].numpy()
            gram = jac @ jac.T
            residual = lambda x, gram=gram, alpha=alpha: gram @ np.exp(x) - np.exp(-x / alpha)  # noqa: E731
            sol = scipy.optimize.root(residual, np.log(np.full(k, 1 / k)))
            w = np.exp(sol.x)
            assert sol.success and np.allclose(gram @ w, w ** (-1 / alpha), rtol=1e-9)
            np.testing.assert_allclose(s["weights"].numpy(), BASE[k].numpy() * w, rtol=1e-5)
            np.testing.assert_allclose(s["trunk"].numpy(), w @ jac, rtol=1e-5, atol=1e-9)
    _heads_are_their_own(_run("fairgrad", k))


@pytest.mark.parametrize("k", [2, 3])
def test_excess_mtl_pins_two_steps_of_the_exponentiated_update(k: int) -> None:
    """He et al. (2024), Equations 6–9 as torchjd and the authors' code run them: S += g², Ê_i = Σ g_i² /
    √(S_i + 1e-7), divided by the first step's Ê from the second step on, α ← α exp(η Ê) / Σ from α = 1/m;
    the step is Σ α_i g_i and the weights w_i α_i."""
    eta = 0.5
    record = _run("excess_mtl", k, robust_step_size=eta)
    alpha, sq_sum, first = np.full(k, 1 / k), 0.0, None
    for s in record:
        jac = s["J"].numpy()
        sq_sum = sq_sum + jac**2
        excess = (jac**2 / np.sqrt(sq_sum + 1e-7)).sum(axis=1)
        if first is None:
            first = excess
        else:
            excess = excess / (first + 1e-7)
        alpha = alpha * np.exp(eta * excess)
        alpha = alpha / alpha.sum()
        np.testing.assert_allclose(s["weights"].numpy(), BASE[k].numpy() * alpha, rtol=1e-10)
        np.testing.assert_allclose(s["trunk"].numpy(), alpha @ jac, rtol=1e-10, atol=1e-14)
    assert not np.allclose(alpha, 1 / k)
    _heads_are_their_own(record)


@pytest.mark.parametrize("k", [2, 3])
def test_db_mtl_pins_two_steps_of_the_dual_balancing(k: int) -> None:
    """Lin et al. (2023) / LibMTL: rows w_i ∇log(L_i + 1e-8) by plain autograd, ĝ ← β_t ĝ + (1 − β_t) rows
    from 0 with β_t = β / t^σ, α_i = max_j ‖ĝ_j‖ / (‖ĝ_i‖ + 1e-8), the trunk steps with Σ α_i ĝ_i; each
    head with w_i ∇L_i / (L_i + 1e-8); the weights are w_i α_i / (L_i + 1e-8)."""
    beta, sigma = 0.9, 0.5
    record = _run("db_mtl", k)
    ema = torch.zeros_like(record[0]["log_J"])
    for t, s in enumerate(record, start=1):
        rate = beta / t**sigma
        ema = rate * ema + (1 - rate) * s["log_J"]
        norms = ema.norm(dim=1)
        alpha = norms.max() / (norms + 1e-8)
        torch.testing.assert_close(s["trunk"], alpha @ ema, rtol=1e-10, atol=1e-14)
        torch.testing.assert_close(s["weights"], BASE[k] * alpha / (s["losses"] + 1e-8), rtol=1e-10, atol=0)
        assert not torch.allclose(alpha, torch.ones_like(alpha))
    _heads_are_their_own(record, lambda i, s: 1.0 / (s["losses"][i] + 1e-8))


@pytest.mark.parametrize("name", ["gradvac", "excess_mtl", "db_mtl"])
def test_stateful_methods_keep_one_state_per_parameter_set(name: str) -> None:
    """One strategy stepping two parameter sets in turn (the alternating loop's A and B steps) gives each
    the weights a strategy of its own would: the states (φ̂; S, α and the baseline; the EMA) do not mix."""
    nets = [_Net(2), _Net(2)]
    with torch.no_grad():
        nets[1].trunk[0].weight.mul_(-0.5)  # other gradients, other similarities and excess risks
    shared = make(STRATEGIES[name].Config(), 2, torch.device("cpu"), SEED)
    alone = [make(STRATEGIES[name].Config(), 2, torch.device("cpu"), SEED) for _ in nets]
    for _ in range(3):
        for net, own in zip(nets, alone, strict=True):
            got = shared.backward(net.losses(X), BASE[2], list(net.parameters()))
            want = own.backward(net.losses(X), BASE[2], list(net.parameters()))
            torch.testing.assert_close(got, want, rtol=1e-12, atol=0)


OPTIONS = [
    ("aligned_mtl", {"scale_mode": "rmse"}),
    ("gradvac", {"beta": 0.9}),
    ("gradvac", {"eps": 1.0}),
    ("graddrop", {"leak": 0.5}),
    ("fairgrad", {"alpha": 2.0}),
    ("fairgrad", {"max_iters": 1}),
    ("excess_mtl", {"robust_step_size": 0.1}),
    ("excess_mtl", {"n_warmup_steps": 1}),
    ("db_mtl", {"beta": 0.5}),
    ("db_mtl", {"beta_sigma": 0.0}),
]


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize(("name", "options"), OPTIONS, ids=[f"{n}-{next(iter(o))}" for n, o in OPTIONS])
def test_options_reach_the_method(name: str, options: dict[str, object], k: int) -> None:
    """A non-default option changes the trunk's gradient within two steps."""
    default, changed = _run(name, k), _run(name, k, **options)
    assert any(not torch.allclose(a["trunk"], b["trunk"]) for a, b in zip(default, changed, strict=True))
