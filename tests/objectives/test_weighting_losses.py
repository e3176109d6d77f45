"""The loss scalarizations (imtl_l, gls, stch): gradients, effective weights and learned scales against the
papers' formulas written here with plain torch, on a shared trunk with one head per task (float64)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import pytest
import torch
from torch import nn
from torchjd.scalarization import IMTLL, GeometricMean

from objectives.weighting import STRATEGIES, make
from objectives.weighting.base import Weighting

BASES = {2: torch.tensor([0.7, 0.2], dtype=torch.float64), 3: torch.tensor([0.5, 0.3, 1.2], dtype=torch.float64)}
Formula = Callable[[torch.Tensor], torch.Tensor]  # the scalarized loss of the per-task losses (k,)


@pytest.fixture(autouse=True)
def _float64() -> Iterator[None]:
    """Every tensor and module of these tests (the strategies' learned scales included) in float64."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


class Heads(nn.Module):
    """A tiny shared trunk and one one-output head per task; positive squared-error losses."""

    def __init__(self, k: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.trunk = nn.Sequential(nn.Linear(3, 4), nn.Tanh())
        self.heads = nn.ModuleList(nn.Linear(4, 1) for _ in range(k))

    def losses(self, seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(16, 3, generator=g)
        h = self.trunk(x)
        targets = [x[:, 0] * (i + 1.0) + 0.5 * i for i in range(len(self.heads))]
        return torch.stack([((head(h)[:, 0] - t) ** 2).mean() for head, t in zip(self.heads, targets, strict=True)])


def _make(name: str, k: int, **options: object) -> Weighting:
    return make(STRATEGIES[name].Config(**options), k, torch.device("cpu"), 0)


def _check_step(model: Heads, strategy: Weighting, formula: Formula, base: torch.Tensor, seed: int = 1) -> torch.Tensor:
    """One ``backward`` of the strategy against the formula: (a) every parameter's gradient is autograd's of
    the formula, and the trunk's is Σ_i e_i ∇L_i from the per-task gradients with e_i = ∂formula/∂L_i;
    (b) head i's gradient is e_i ∇L_i (its own task only); (c) the returned weights (and ``weights``) are e.
    Leaves the strategy's gradients in ``.grad``; returns e."""
    params = list(model.parameters())
    for p in params:
        p.grad = None
    losses = model.losses(seed)
    w = strategy.backward(losses, base, params)
    torch.testing.assert_close(strategy.weights(losses, base), w)

    losses = model.losses(seed)
    expected = torch.autograd.grad(formula(losses), params, retain_graph=True)
    for p, g in zip(params, expected, strict=True):
        torch.testing.assert_close(p.grad, g)
    leaf = losses.detach().requires_grad_()
    (effective,) = torch.autograd.grad(formula(leaf), leaf)
    torch.testing.assert_close(w, effective)
    assert w.shape == (len(base),) and not w.requires_grad

    per_task = [torch.autograd.grad(li, params, retain_graph=True, allow_unused=True) for li in losses]
    for j, p in enumerate(model.trunk.parameters()):
        torch.testing.assert_close(p.grad, sum(e * g[j] for e, g in zip(effective, per_task, strict=True)))
    n_trunk = len(list(model.trunk.parameters()))
    for i, head in enumerate(model.heads):
        for j, p in enumerate(head.parameters(), start=n_trunk + 2 * i):
            others = [per_task[other][j] for other in range(len(base)) if other != i]
            assert all(g is None or not g.any() for g in others)  # the others' losses do not reach head i
            torch.testing.assert_close(p.grad, effective[i] * per_task[i][j])
    return effective


# --- imtl_l -----------------------------------------------------------------------------------------------


def _imtl_l(base: torch.Tensor, s: torch.Tensor) -> Formula:
    """IMTL-L with the preference on each task's term: Σ_i w_i (e^{s_i} L_i − s_i)."""
    return lambda losses: sum(w * (math.e**si * li - si) for w, si, li in zip(base, s, losses, strict=True))


@pytest.mark.parametrize("k", [2, 3])
def test_imtl_l_two_steps_follow_the_formula(k: int) -> None:
    """Two SGD steps of the model and s: each step's gradients (model and s) and weights w_i e^{s_i} are the
    formula's, with s tracked here from ``init`` by the formula's own s-gradient w_i (e^{s_i} L_i − 1)."""
    base, model = BASES[k], Heads(k)
    strategy = _make("imtl_l", k, init=0.3)
    (scale,) = strategy.parameters()
    optimizer = torch.optim.SGD([*model.parameters(), scale], lr=0.1)
    s = torch.full((k,), 0.3)
    for step in range(2):
        optimizer.zero_grad(set_to_none=True)
        s_leaf = s.clone().requires_grad_()
        effective = _check_step(model, strategy, _imtl_l(base, s_leaf), base, seed=step)
        losses = model.losses(step)
        (s_grad,) = torch.autograd.grad(_imtl_l(base, s_leaf)(losses), s_leaf)
        torch.testing.assert_close(s_grad, base * (torch.exp(s) * losses.detach() - 1))  # the closed form
        torch.testing.assert_close(scale.grad, s_grad)
        torch.testing.assert_close(effective, base * torch.exp(s))
        optimizer.step()
        s = s - 0.1 * s_grad
    torch.testing.assert_close(scale.detach(), s)


@pytest.mark.parametrize("k", [2, 3])
def test_imtl_l_with_equal_weights_is_torchjd_imtll(k: int) -> None:
    """With w = 1 the objective is torchjd's IMTLL Σ_i (e^{s_i} L_i − s_i): same model and s gradients."""
    model, theirs = Heads(k), IMTLL(k)
    strategy = _make("imtl_l", k, init=-0.4)
    with torch.no_grad():
        theirs.log_scale.fill_(-0.4)
    strategy.backward(model.losses(1), torch.ones(k), list(model.parameters()))
    ours = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    theirs(model.losses(1)).backward()
    for mine, p in zip(ours, model.parameters(), strict=True):
        torch.testing.assert_close(mine, p.grad)
    torch.testing.assert_close(strategy.parameters()[0].grad, theirs.log_scale.grad)


def test_imtl_l_init_reaches_it_and_a_zero_weight_drops_the_loss() -> None:
    """``init`` sets the starting weights w e^init; a zero w_i gives loss i weight 0 and s_i no gradient."""
    base = torch.tensor([0.5, 0.0, 2.0])
    losses = torch.tensor([1.5, 2.0, 0.25], requires_grad=True)
    torch.testing.assert_close(_make("imtl_l", 3).weights(losses, base), base)
    strategy = _make("imtl_l", 3, init=0.7)
    w = strategy.backward(losses, base, [])
    torch.testing.assert_close(w, base * math.exp(0.7))
    assert strategy.parameters()[0].grad[1] == 0 and losses.grad[1] == 0


# --- gls --------------------------------------------------------------------------------------------------


def _gls(base: torch.Tensor) -> Formula:
    """The weighted geometric mean Π_i L_i^{w_i / Σw}."""
    return lambda losses: torch.prod(losses ** (base / base.sum()))


@pytest.mark.parametrize("k", [2, 3])
def test_gls_is_the_weighted_geometric_mean(k: int) -> None:
    """Gradients and weights G w_i / (Σw L_i) of the weighted geometric mean; the static weights' scale does
    not matter."""
    base = BASES[k]
    effective = _check_step(Heads(k), _make("gls", k), _gls(base), base)
    losses = Heads(k).losses(1).detach()
    torch.testing.assert_close(effective, _gls(base)(losses) * base / (base.sum() * losses))
    torch.testing.assert_close(_check_step(Heads(k), _make("gls", k), _gls(base), 10 * base), effective)


@pytest.mark.parametrize("k", [2, 3])
def test_gls_with_equal_weights_is_torchjd_geometric_mean(k: int) -> None:
    """With equal static weights the loss is torchjd's GeometricMean (the paper's (Π L_i)^{1/k})."""
    model = Heads(k)
    _make("gls", k).backward(model.losses(1), torch.full((k,), 0.3), list(model.parameters()))
    ours = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    GeometricMean()(model.losses(1)).backward()
    for mine, p in zip(ours, model.parameters(), strict=True):
        torch.testing.assert_close(mine, p.grad)


def test_gls_zero_weight_drops_the_loss() -> None:
    """A zero w_i: the geometric mean of the other losses, loss i gets weight 0."""
    losses = torch.tensor([2.0, 5.0, 0.5], requires_grad=True)
    w = _make("gls", 3).backward(losses, torch.tensor([1.0, 0.0, 1.0]), [])
    torch.testing.assert_close(w, torch.tensor([1.0 / (2 * 2.0), 0.0, 1.0 / (2 * 0.5)]))  # G = 1
    torch.testing.assert_close(losses.grad, w)


# --- stch -------------------------------------------------------------------------------------------------

EPS = 1e-20  # the official code's


def _stch_warmup(base: torch.Tensor) -> Formula:
    """Σ_i λ_i log(L_i + ε), λ = k w / Σw."""
    lam = len(base) * base / base.sum()
    return lambda losses: (lam * torch.log(losses + EPS)).sum()


def _stch(base: torch.Tensor, nadir: torch.Tensor, mu: float) -> Formula:
    """k μ log Σ_i exp(λ_i log(L_i / N_i + ε) / μ) (the paper's smooth Tchebycheff of the nadir-relative log
    losses, ideal point 0), λ = k w / Σw."""
    k = len(base)
    lam = k * base / base.sum()
    return lambda losses: k * mu * torch.log(torch.exp(lam * torch.log(losses / nadir + EPS) / mu).sum())


def _official(nadir: torch.Tensor, mu: float) -> Formula:
    """The official STCH_MTL code's loss after the warm-up (no preference), as it writes it."""

    def loss(losses: torch.Tensor) -> torch.Tensor:
        losses = torch.log(losses / nadir + 1e-20)
        reg_losses = losses - torch.max(losses.data).detach()
        return mu * torch.log(torch.sum(torch.exp(reg_losses / mu))) * len(losses)

    return loss


@pytest.mark.parametrize("mu", [1.0, 0.1])
@pytest.mark.parametrize("warmup", [1, 3])
@pytest.mark.parametrize("k", [2, 3])
def test_stch_warms_up_on_log_losses_then_scalarizes_relative_to_the_nadir(k: int, warmup: int, mu: float) -> None:
    """Epochs before ``warmup_epochs`` have ended: the log losses; the mean losses given at the end of epoch
    ``warmup_epochs`` become the nadir (earlier and later epochs' means do not); then the smooth Tchebycheff
    with ``mu``. Each stage's gradients and weights are the formula's."""
    base, model = BASES[k], Heads(k)
    strategy = _make("stch", k, mu=mu, warmup_epochs=warmup)
    means = [torch.rand(k, generator=torch.Generator().manual_seed(e)) + 0.5 for e in range(warmup + 2)]
    for epoch in range(warmup):
        _check_step(model, strategy, _stch_warmup(base), base, seed=epoch)
        strategy.end_epoch(means[epoch])
    nadir = means[warmup - 1]
    for epoch in range(warmup, warmup + 2):
        effective = _check_step(model, strategy, _stch(base, nadir, mu), base, seed=epoch)
        strategy.end_epoch(means[epoch])
    assert effective.sum() > 0


@pytest.mark.parametrize("k", [2, 3])
def test_stch_with_equal_weights_is_the_official_code(k: int) -> None:
    """Equal static weights: the warm-up is Σ log(L_i + ε), then the official code's loss (its mu)."""
    model, nadir = Heads(k), torch.linspace(0.5, 2.0, k)
    strategy = _make("stch", k, mu=0.5, warmup_epochs=2)
    _check_step(model, strategy, lambda losses: torch.log(losses + 1e-20).sum(), torch.full((k,), 0.2))
    strategy.end_epoch(nadir + 1)
    strategy.end_epoch(nadir)
    _check_step(model, strategy, _official(nadir, 0.5), torch.full((k,), 0.2))


def test_stch_options_reach_it() -> None:
    """``mu`` changes the weights after the warm-up; ``warmup_epochs`` when the nadir is taken."""
    base, losses = BASES[3], torch.tensor([0.5, 2.0, 1.0])
    after = []
    for mu in (1.0, 0.05):
        strategy = _make("stch", 3, mu=mu, warmup_epochs=1)
        strategy.end_epoch(torch.ones(3))
        after.append(strategy.weights(losses, base))
    assert not torch.allclose(after[0], after[1])
    strategy = _make("stch", 3, warmup_epochs=2)
    strategy.end_epoch(torch.ones(3))
    torch.testing.assert_close(strategy.weights(losses, base), 3 * base / base.sum() / losses)  # still warm-up
    strategy.end_epoch(torch.ones(3))
    assert not torch.allclose(strategy.weights(losses, base), 3 * base / base.sum() / losses)
