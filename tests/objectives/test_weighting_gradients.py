"""The torchjd gradient methods (MGDA, UPGrad, IMTL-G, CAGrad, Nash-MTL) against their papers' maths.

Each method runs on a tiny shared trunk with one head per task (float64), 2 and 3 tasks. The test takes
the per-task gradients with plain autograd (one ``torch.autograd.grad`` per loss), computes the method's
update of the trunk from the paper's formula or optimisation problem written here with numpy/scipy (never
the torchjd class the strategy uses), and checks the strategy's trunk gradient, each head's gradient
(its own task's w_i ∇L_i) and the returned effective weights (w_i times the row weights r with
Σ_i r_i g_i = the update, recovered here by least squares from the reference update).
"""

from __future__ import annotations

import builtins
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydantic
import pytest
import torch
from scipy.optimize import minimize, root
from torch import nn

from objectives.weighting import STRATEGIES, make

BASES = {2: (0.7, 0.3), 3: (0.5, 0.3, 0.2)}
Reference = Callable[[np.ndarray], np.ndarray]  # J (m, n), rows g_i = w_i ∇L_i → the shared update (n,)


class _Net:
    """A shared trunk (3 → 5, tanh) and one linear head per task, float64, with conflicting targets."""

    def __init__(self, k: int, seed: int = 7) -> None:  # seed 7: tasks 1 and 2 conflict (cos −0.47)
        torch.manual_seed(seed)
        self.trunk = nn.Sequential(nn.Linear(3, 5), nn.Tanh()).double()
        self.heads = nn.ModuleList(nn.Linear(5, 1) for _ in range(k)).double()
        g = torch.Generator().manual_seed(seed + 1)
        self.x = torch.randn(12, 3, generator=g, dtype=torch.float64)
        signs = torch.tensor([1.0, -1.0, 0.5], dtype=torch.float64)[:k]
        self.targets = signs * (self.x[:, :1] * 2.0 + 0.5) + 0.1 * torch.randn(12, k, generator=g, dtype=torch.float64)

    def params(self) -> list[torch.Tensor]:
        return [*self.trunk.parameters(), *self.heads.parameters()]

    def losses(self) -> torch.Tensor:
        h = self.trunk(self.x)
        return torch.stack([((head(h)[:, 0] - self.targets[:, i]) ** 2).mean() for i, head in enumerate(self.heads)])

    def sgd(self, lr: float = 0.2) -> None:
        with torch.no_grad():
            for p in self.params():
                p -= lr * p.grad
                p.grad = None


def _flat(grads: tuple[torch.Tensor, ...]) -> np.ndarray:
    return torch.cat([g.reshape(-1) for g in grads]).numpy()


def _step(net: _Net, strategy: object, base: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One step: the weighted trunk Jacobian J (plain autograd), then the strategy's backward. Returns J,
    the strategy's trunk gradient and its effective weights; checks every head got w_i ∇L_i."""
    w = torch.tensor(base, dtype=torch.float64)
    losses = net.losses()
    trunk = list(net.trunk.parameters())
    rows = [_flat(torch.autograd.grad(loss, trunk, retain_graph=True)) for loss in losses]  # ∇L_i, one pass each
    jac = np.stack([w_i * row for w_i, row in zip(base, rows, strict=True)])
    heads = [
        w_i * _flat(torch.autograd.grad(loss, list(head.parameters()), retain_graph=True))
        for w_i, loss, head in zip(base, losses, net.heads, strict=True)
    ]
    weights = strategy.backward(losses, w, net.params()).numpy()  # type: ignore[attr-defined]
    for expected, head in zip(heads, net.heads, strict=True):
        np.testing.assert_allclose(_flat(tuple(p.grad for p in head.parameters())), expected, rtol=1e-10, atol=1e-14)
    return jac, _flat(tuple(p.grad for p in trunk)), weights


def _row_weights(jac: np.ndarray, update: np.ndarray) -> np.ndarray:
    """The r with rᵀ J = update (J has full row rank here: k ≤ 3 rows of 20 trunk entries)."""
    r, *_ = np.linalg.lstsq(jac.T, update, rcond=None)
    np.testing.assert_allclose(r @ jac, update, rtol=1e-8, atol=1e-12)
    return r


def _simplex_min(objective: Callable[[np.ndarray], float], m: int) -> np.ndarray:
    """argmin over the probability simplex, by SLSQP from the centre."""
    done = minimize(
        objective, np.full(m, 1.0 / m), method="SLSQP", bounds=[(0.0, 1.0)] * m,
        constraints=[{"type": "eq", "fun": lambda a: a.sum() - 1.0}], options={"ftol": 1e-15, "maxiter": 1000},
    )  # fmt: skip
    assert done.success, done.message
    return done.x


def mgda_reference(jac: np.ndarray) -> np.ndarray:
    """Sener & Koltun: the min-norm point of the convex hull of the rows (2 rows: the closed form)."""
    if len(jac) == 2:
        g1, g2 = jac
        alpha = np.clip((g2 - g1) @ g2 / ((g1 - g2) @ (g1 - g2)), 0.0, 1.0)
        return alpha * g1 + (1 - alpha) * g2
    return _simplex_min(lambda a: float(np.sum((a @ jac) ** 2)), len(jac)) @ jac


def _project_dual_cone(g: np.ndarray, jac: np.ndarray) -> np.ndarray:
    """argmin_x ‖x − g‖² subject to J x ≥ 0 (the primal QP, by SLSQP)."""
    done = minimize(
        lambda x: 0.5 * float(np.sum((x - g) ** 2)), g, jac=lambda x: x - g, method="SLSQP",
        constraints=[{"type": "ineq", "fun": lambda x: jac @ x, "jac": lambda x: jac}],
        options={"ftol": 1e-16, "maxiter": 1000},
    )  # fmt: skip
    assert done.success, done.message
    return done.x


def upgrad_reference(jac: np.ndarray) -> np.ndarray:
    """Quinton & Rey: the mean over i of the projection of g_i onto the dual cone {x : J x ≥ 0}."""
    return np.mean([_project_dual_cone(g, jac) for g in jac], axis=0)


def imtl_g_reference(jac: np.ndarray) -> np.ndarray:
    """Liu et al. (IMTL): α_{2:} = g_1 Uᵀ (D Uᵀ)⁻¹, α_1 = 1 − Σ α_{2:}, D = [g_1 − g_i], U = [u_1 − u_i]."""
    u = jac / np.linalg.norm(jac, axis=1, keepdims=True)
    d, uu = jac[0] - jac[1:], u[0] - u[1:]
    rest = jac[0] @ uu.T @ np.linalg.inv(d @ uu.T)
    return np.concatenate([[1.0 - rest.sum()], rest]) @ jac


def cagrad_reference(c: float) -> Reference:
    """Liu et al. (CAGrad), Algorithm 1: w = argmin_{w ∈ Δ} g_wᵀ g_0 + c‖g_0‖ ‖g_w‖, d = g_0 + c‖g_0‖/‖g_w‖ g_w
    (g_0 the mean row; no 1/(1 + c²) rescaling, as the paper and torchjd)."""

    def reference(jac: np.ndarray) -> np.ndarray:
        g0 = jac.mean(axis=0)
        radius = c * np.linalg.norm(g0)
        w = _simplex_min(lambda w: float((w @ jac) @ g0 + radius * np.linalg.norm(w @ jac)), len(jac))
        gw = w @ jac
        return g0 + radius / np.linalg.norm(gw) * gw

    return reference


def nash_alpha(jac: np.ndarray) -> np.ndarray:
    """Navon et al.: the α > 0 with Gα = 1/α, G = J Jᵀ (solved in log α, so α stays positive)."""
    gram = jac @ jac.T
    alpha = np.exp(root(lambda t: gram @ np.exp(t) - np.exp(-t), -0.5 * np.log(np.diag(gram))).x)
    np.testing.assert_allclose(gram @ alpha * alpha, 1.0, rtol=1e-9)
    return alpha


def clipped(alpha: np.ndarray, jac: np.ndarray, max_norm: float) -> np.ndarray:
    """α scaled down so that ‖αᵀ J‖ ≤ max_norm (0: unchanged), as the authors' gradient clipping."""
    norm = np.linalg.norm(alpha @ jac)
    return alpha * max_norm / norm if max_norm > 0 and norm > max_norm else alpha


def nash_reference(max_norm: float = 1.0) -> Reference:
    return lambda jac: clipped(nash_alpha(jac), jac, max_norm) @ jac


# name, options, reference, relative tolerance on the update (what the method's solver reaches).
CASES: list[tuple[str, dict[str, object], Reference, float]] = [
    ("mgda", {"epsilon": 1e-12, "max_iters": 100_000}, mgda_reference, 1e-6),  # Frank-Wolfe, run to convergence
    ("mgda", {}, mgda_reference, 5e-2),  # the defaults (ε = 1e-3): Frank-Wolfe may stop early (2% off seen, 3 tasks)
    ("upgrad", {"reg_eps": 0.0}, upgrad_reference, 1e-10),  # the exact projection
    ("upgrad", {}, upgrad_reference, 2e-3),  # reg_eps = 1e-4 on the trace-normalised Gramian (0.02% off)
    ("imtl_g", {}, imtl_g_reference, 1e-10),
    ("cagrad", {}, cagrad_reference(0.4), 1e-5),  # Clarabel's and SLSQP's tolerances
    ("cagrad", {"c": 0.8}, cagrad_reference(0.8), 1e-5),
    # Nash-MTL: torchjd's iterative ECOS solves stop near the solution (1e-7 off seen).
    ("nash_mtl", {}, nash_reference(1.0), 1e-5),
    ("nash_mtl", {"max_norm": 0.0}, nash_reference(0.0), 1e-5),
]


def _close(actual: np.ndarray, expected: np.ndarray, rtol: float) -> None:
    """Equal up to ``rtol`` relative to the expected vector's norm."""
    error = np.linalg.norm(actual - expected) / np.linalg.norm(expected)
    assert error <= rtol, f"relative error {error:.2e} > {rtol:.0e}"


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize(("name", "options", "reference", "rtol"), CASES, ids=[f"{c[0]}{c[1]}" for c in CASES])
def test_method_matches_the_paper(name: str, options: dict, reference: Reference, rtol: float, k: int) -> None:
    """Trunk gradient = the paper's update of the weighted per-task trunk gradients; heads get their own
    task's w_i ∇L_i; the weights are w_i r_i with Σ r_i g_i the update."""
    net = _Net(k)
    strategy = make(STRATEGIES[name].Config(**options), k, torch.device("cpu"), 0)
    jac, trunk, weights = _step(net, strategy, BASES[k])
    assert (jac @ jac.T)[0, 1] < 0  # a conflict for the method to act on
    expected = reference(jac)
    assert np.linalg.norm(expected - jac.sum(axis=0)) > 0.05 * np.linalg.norm(expected)  # not the plain sum
    _close(trunk, expected, rtol)
    r = _row_weights(jac, expected)
    np.testing.assert_allclose(weights, np.array(BASES[k]) * r, rtol=20 * rtol, atol=20 * rtol * np.abs(r).max())


@pytest.mark.parametrize("every", [1, 2])
@pytest.mark.parametrize("k", [2, 3])
def test_nash_mtl_over_steps(k: int, every: int) -> None:
    """Nash-MTL is stateful: over four SGD steps, each step solves Gα = 1/α afresh (warm-started) when
    ``update_weights_every`` = 1; with 2, steps 2 and 4 reuse the α of steps 1 and 3, clipped on their own
    gradients."""
    net = _Net(k)
    strategy = make(STRATEGIES["nash_mtl"].Config(update_weights_every=every), k, torch.device("cpu"), 0)
    alpha = None
    for step in range(4):
        jac, trunk, weights = _step(net, strategy, BASES[k])
        alpha = nash_alpha(jac) if step % every == 0 else alpha
        expected = clipped(alpha, jac, 1.0)
        _close(trunk, expected @ jac, 1e-5)
        np.testing.assert_allclose(weights, np.array(BASES[k]) * expected, rtol=1e-4)
        if step % every:  # reused: not this step's own solution
            assert np.linalg.norm(trunk - clipped(nash_alpha(jac), jac, 1.0) @ jac) > 1e-2 * np.linalg.norm(trunk)
        net.sgd()


# Per option, a value that must change the 3-task result (with a check of what it changes to, where simple).
OPTIONS: list[tuple[str, dict[str, object], Callable[[np.ndarray, np.ndarray], None] | None]] = [
    ("mgda", {"max_iters": 1}, None),
    ("mgda", {"epsilon": 0.9}, None),
    ("upgrad", {"reg_eps": 1.0}, None),
    ("upgrad", {"norm_eps": 1e6}, lambda jac, trunk: _close(trunk, jac.mean(axis=0), 1e-10)),  # Gramian "zero"
    ("cagrad", {"c": 0.0}, lambda jac, trunk: _close(trunk, jac.mean(axis=0), 1e-6)),  # the mean gradient
    ("cagrad", {"norm_eps": 1.0}, lambda jac, trunk: np.testing.assert_array_equal(trunk, 0.0)),  # "stationary"
    ("nash_mtl", {"max_norm": 0.5}, lambda jac, trunk: np.testing.assert_allclose(np.linalg.norm(trunk), 0.5)),
]


@pytest.mark.parametrize(("name", "options", "check"), OPTIONS, ids=[f"{o[0]}{o[1]}" for o in OPTIONS])
def test_options_reach_the_method(name: str, options: dict, check: Callable | None) -> None:
    """A non-default option changes the step (and gives what it should, where that is simple)."""
    results = []
    for cfg in (STRATEGIES[name].Config(), STRATEGIES[name].Config(**options)):
        # seed 0: a net where MGDA's Frank-Wolfe needs many iterations (the default stops 2% short)
        jac, trunk, _ = _step(_Net(3, seed=0), make(cfg, 3, torch.device("cpu"), 0), BASES[3])
        results.append(trunk)
    assert np.linalg.norm(results[0] - results[1]) > 1e-6 * np.linalg.norm(results[0])
    if check is not None:
        check(jac, results[1])


def test_nash_mtl_options_reach_torchjd() -> None:
    """optim_niter and update_weights_every reach each parameter set's NashMTL (optim_niter shows in no
    result here: its first convex round already meets the constraints α_i (Gα)_i ≥ 1 with equality)."""
    cfg = STRATEGIES["nash_mtl"].Config(optim_niter=3, update_weights_every=5, max_norm=2.0)
    strategy = make(cfg, 3, torch.device("cpu"), 0)
    _step(_Net(3), strategy, BASES[3])
    (aggregator,) = strategy.by_reach.values()  # type: ignore[attr-defined]
    assert (aggregator.n_tasks, aggregator.optim_niter, aggregator.update_weights_every) == (3, 3, 5)
    assert aggregator.max_norm == 2.0


MESSAGES = {"cagrad": "weighting cagrad needs cvxpy: pip install 'sweep[solvers]'",
            "nash_mtl": "weighting nash_mtl needs cvxpy: pip install 'sweep[solvers]'"}  # fmt: skip


@pytest.mark.parametrize("how", ["sys.modules", "__import__"])
@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_missing_cvxpy_fails_at_config_load(
    name: str, how: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Without cvxpy a config naming the method is invalid, with one line that says what to install: the
    method's Config, a loop config, and a study file (sweep's ConfigError)."""
    from objectives.config import DualLossConfig
    from sweep.core.errors import ConfigError
    from sweep.studyfile.config import load_study

    if how == "sys.modules":
        monkeypatch.setitem(sys.modules, "cvxpy", None)
    else:
        real = builtins.__import__

        def fake(module: str, *args: object, **kwargs: object) -> object:
            if module == "cvxpy" or module.startswith("cvxpy."):
                raise ModuleNotFoundError(f"No module named {module!r}")
            return real(module, *args, **kwargs)

        monkeypatch.setattr(builtins, "__import__", fake)
    with pytest.raises(pydantic.ValidationError) as err:
        STRATEGIES[name].Config()
    assert [e["msg"] for e in err.value.errors()] == [f"Value error, {MESSAGES[name]}"]
    with pytest.raises(pydantic.ValidationError, match=MESSAGES[name].replace("[", r"\[").replace("]", r"\]")):
        DualLossConfig(problem="digits_pair", weighting={"type": name})
    study = tmp_path / "study.yaml"
    study.write_text(
        "study: {name: s, n_trials: 2}\n"
        f"tracking: {{uri: 'sqlite:///{tmp_path}/mlflow.db'}}\n"
        f"objective: {{loop: dual_loss, problem: digits_pair, weighting: {{type: {name}}}}}\n"
    )
    with pytest.raises(ConfigError) as loaded:
        load_study(study)
    assert len(str(loaded.value).splitlines()) == 1
    assert str(loaded.value).endswith(f": {MESSAGES[name]}")
    monkeypatch.undo()
    assert STRATEGIES[name].Config().type == name  # with cvxpy back, the same config loads


@pytest.mark.slow
def test_importing_the_strategies_imports_neither_torchjd_nor_cvxpy() -> None:
    """torchjd imports cvxpy when it is installed (about 1 s): every process that loads a study file would pay
    it. The registry imports torchjd only when a gradient method is built."""
    import subprocess
    import sys

    code = "import sys, objectives.weighting, objectives.config, sweep.studyfile.config\n"
    code += "print(sorted(m for m in ('torchjd', 'cvxpy') if m in sys.modules))"
    root = str(Path(__file__).resolve().parents[2])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    assert out.stdout.strip() == "[]"
