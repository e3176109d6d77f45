"""Every weighting strategy, LR schedule and loss-weight schedule trains in both loops (shared suite)."""

from __future__ import annotations

import itertools
import math
import typing

import numpy as np
import pytest
import torch

from objectives import alternating, dual_loss
from objectives.config import AlternatingConfig, DualLossConfig
from objectives.helpers import derive_seed
from objectives.lr_schedules import SCHEDULES
from objectives.problems import build_problem
from objectives.weight_schedules import WEIGHT_SCHEDULES
from objectives.weighting import STRATEGIES, pcgrad

DUAL = build_problem("digits_pair", {"n_a": 96, "n_b": 32, "n_val": 64, "hidden": 8}, 0)
COUPLED = build_problem("digits_codes", {"n_train": 96, "code_dim": 4, "hidden": 8}, 0, "alternating")


def _dual(**overrides: object) -> dict[str, float]:
    cfg = DualLossConfig(problem="digits_pair", seed=0, data_seed=0, device="cpu", epochs=3, batch_size=32, **overrides)
    return dual_loss.train(cfg, None, problem=DUAL)


def _alternating(mode: str, **overrides: object) -> dict[str, float]:
    cfg = AlternatingConfig(
        problem="digits_codes",
        mode=mode,
        steps_b=2,
        seed=0,
        data_seed=0,
        device="cpu",
        epochs=3,
        batch_size=32,
        weights=(0.4, 0.4, 0.2),
        **overrides,
    )
    return alternating.train(cfg, None, problem=COUPLED)


def _finite(metrics: dict[str, float]) -> bool:
    return all(math.isfinite(v) for v in metrics.values())


def _history(train: typing.Callable[..., dict[str, float]], cfg: object, problem: object) -> list[dict[str, float]]:
    """Train ``cfg`` with a loop's ``train`` and return every epoch's reported metrics, in order."""
    epochs: list[dict[str, float]] = []
    train(cfg, lambda epoch, metrics: epochs.append(dict(metrics)), problem=problem)
    assert all(_finite(m) for m in epochs)
    return epochs


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_strategy_in_dual_loop(strategy: str) -> None:
    """The dual-loss loop trains with the strategy and logs its effective weights."""
    m = _dual(weighting={"type": strategy})
    assert _finite(m) and m["weight_a"] > 0 and m["weight_b"] > 0


BASE = (0.4, 0.4, 0.2)  # the alternating runs' static weights (w_a, w_b, w_consistency)
TERMS = AlternatingConfig.LOSSES
MODES = typing.get_args(AlternatingConfig.model_fields["mode"].annotation)
# Strategy options that make each strategy's effect on the weights large (the defaults where they already are).
OPTIONS: dict[str, dict[str, object]] = {
    "uncertainty": {"init_log_var": 1.0},
    "dwa": {"temperature": 0.1},
    "imtl_l": {"init": 1.0},
    "stch": {"warmup_epochs": 1},
}
# Plain SGD: its step scales with the weights (Adam's would hardly change when all weights scale alike).
SGD = {"type": "sgd", "lr": 0.05, "momentum": 0.0}


def _epochs(mode: str, strategy: str, weights: tuple[float, ...] = BASE) -> list[dict[str, float]]:
    """Train the alternating loop (three losses) with a weighting strategy.

    Args:
        mode: The alternating mode.
        strategy: The weighting strategy's name (with its :data:`OPTIONS`).
        weights: The static loss weights.

    Returns:
        Every epoch's metrics, in order.
    """
    cfg = AlternatingConfig(
        problem="digits_codes", mode=mode, steps_b=2, seed=0, data_seed=0, device="cpu", epochs=3, batch_size=32,
        weights=weights, weighting={"type": strategy, **OPTIONS.get(strategy, {})},
        model_a={"optimizer": SGD}, model_b={"optimizer": SGD},
    )  # fmt: skip
    return _history(alternating.train, cfg, COUPLED)


def _weights(metrics: dict[str, float]) -> np.ndarray:
    """An epoch's logged mean effective weights, in loss order."""
    return np.array([metrics[f"weight_{t}"] for t in TERMS])


def _losses(metrics: dict[str, float], split: str) -> np.ndarray:
    """An epoch's logged mean unweighted losses of ``split`` (``train``/``val``), in loss order."""
    return np.array([metrics[f"{split}_{t}_loss"] for t in TERMS])


def _departs(run: list[dict[str, float]], static: list[dict[str, float]]) -> bool:
    """Whether the last epoch's validation losses differ from the static run's by more than round-off."""
    a, b = _losses(run[-1], "val"), _losses(static[-1], "val")
    return bool(np.max(np.abs(a - b) / np.abs(b)) > 1e-5)


def _steps(run: list[dict[str, float]], mode: str) -> list[int]:
    """Training steps (batches) per epoch, from the logged optimizer step counts."""
    done = [m["opt_steps_a"] + m["opt_steps_b"] if mode == "alternate" else m["opt_steps_a"] for m in run]
    return [int(n - before) for n, before in zip(done, [0.0, *done[:-1]], strict=True)]


def _check_static(mode: str, run: list[dict[str, float]], static: list[dict[str, float]], _: object) -> None:
    """The weights as given, every epoch."""
    for m in run:
        np.testing.assert_allclose(_weights(m), BASE, rtol=1e-6)


def _check_uncertainty(mode: str, run: list[dict[str, float]], static: list[dict[str, float]], _: object) -> None:
    """The weights are w_i / (2 e^{s_i}): with s_i starting at init_log_var = 1 the first epoch's are near
    w_i / (2e) (within 15%: its steps already train the s_i); A's optimizer trains the s_i, so they
    change every epoch and training departs from static weighting."""
    ratios = [_weights(m) / np.array(BASE) for m in run]
    np.testing.assert_allclose(ratios[0], 1.0 / (2.0 * math.e), rtol=0.15)
    for before, after in itertools.pairwise(ratios):
        assert np.all(before != after)
    assert _departs(run, static)


def _check_dwa(mode: str, run: list[dict[str, float]], static: list[dict[str, float]], _: object) -> None:
    """λ = 1 for the first two epochs, then λ = K softmax((L(1) / L(0)) / T) from the logged training
    losses; the weights are w · λ, so only the third epoch departs from static weighting."""
    for m in run[:2]:
        np.testing.assert_allclose(_weights(m), BASE, rtol=1e-6)
    ratio = _losses(run[1], "train") / _losses(run[0], "train")
    z = np.exp(ratio / OPTIONS["dwa"]["temperature"])
    np.testing.assert_allclose(_weights(run[2]), np.array(BASE) * len(TERMS) * z / z.sum(), rtol=1e-5)
    assert _losses(run[1], "val").tolist() == _losses(static[1], "val").tolist()
    assert _departs(run, static)


def _check_rlw(mode: str, run: list[dict[str, float]], static: list[dict[str, float]], _: object) -> None:
    """Every step draws λ = softmax(z), z ~ N(0, I) from the strategy's seeded generator, and weighs
    with K λ w: each epoch's logged weights are the mean over its steps of those draws."""
    generator = torch.Generator().manual_seed(derive_seed(0, "weighting"))
    for m, steps in zip(run, _steps(run, mode), strict=True):
        draws = [len(TERMS) * torch.softmax(torch.randn(len(TERMS), generator=generator), 0) for _ in range(steps)]
        np.testing.assert_allclose(_weights(m), np.array(BASE) * torch.stack(draws).mean(0).numpy(), rtol=1e-5)
    assert _departs(run, static)


def _check_gradnorm(mode: str, run: list[dict[str, float]], static: list[dict[str, float]], _: object) -> None:
    """ω (renormalised to sum to K) scales the weights, so Σ_i weight_i / w_i = K every epoch. ω learns
    from the gradient norms on the parameters every loss reaches: in b_on_detached A's loss reaches
    only A and B's losses only B, so there are none, ω stays 1 and training is static weighting."""
    ratios = [_weights(m) / np.array(BASE) for m in run]
    for r in ratios:
        assert r.sum() == pytest.approx(len(TERMS), rel=1e-5)
    if mode == "b_on_detached":
        assert [_losses(m, "val").tolist() for m in run] == [_losses(m, "val").tolist() for m in static]
        np.testing.assert_allclose(ratios[-1], 1.0, rtol=1e-6)
    else:
        assert np.max(np.abs(ratios[-1] - 1.0)) > 0.01
        assert _departs(run, static)


def _check_pcgrad(mode: str, run: list[dict[str, float]], static: list[dict[str, float]], projections: list) -> None:
    """The weights are the static ones; the step's gradient is PCGrad's projected sum of the shared
    parameters' task gradients, computed on every step. It departs from static weighting exactly when a
    projection changed the sum (a conflict). In b_on_detached no parameter is reached by two losses
    (A learns from its own loss, B from the others on A's detached output): nothing is projected."""
    for m in run:
        np.testing.assert_allclose(_weights(m), BASE, rtol=1e-6)
    assert len(projections) == (0 if mode == "b_on_detached" else sum(_steps(run, mode)))
    if any(projections):
        assert _departs(run, static)
    else:  # the same gradient summed in another order (Σ of the stacked g_i, not autograd's): equal to rounding
        for m, s in zip(run, static, strict=True):
            np.testing.assert_allclose(_losses(m, "val"), _losses(s, "val"), rtol=1e-5)


def _check_famo(mode: str, run: list[dict[str, float]], static: list[dict[str, float]], _: object) -> None:
    """FAMO's weights z_i / (c L_i) sum to 1 and replace the static ones: the run is the same with other
    static weights, and departs from static weighting."""
    for m in run:
        assert _weights(m).sum() == pytest.approx(1.0, rel=1e-5)
    other = _epochs(mode, "famo", (0.2, 0.3, 0.5))
    assert [{k: v for k, v in m.items() if k != "peak_memory_mb"} for m in other] == [
        {k: v for k, v in m.items() if k != "peak_memory_mb"} for m in run
    ]
    assert _departs(run, static)


def _check_hypergrad(mode: str, run: list[dict[str, float]], static: list[dict[str, float]], _: object) -> None:
    """The weights move multiplicatively from the static ones (towards the losses whose gradients agree with
    the validation gradient of L_a + L_b) and keep their sum, so training departs from static weighting."""
    for m in run:
        assert _weights(m).sum() == pytest.approx(sum(BASE), rel=1e-5)
    assert np.max(np.abs(_weights(run[-1]) / np.array(BASE) - 1.0)) > 0.01
    assert _departs(run, static)


def _combined(mode: str, run: list[dict[str, float]]) -> list[tuple[int, int]]:
    """Per epoch, the steps whose shared parameters combine all three losses (A steps, joint steps) and
    those that combine b and consistency only (B steps: a does not reach B, so its row weight is 1); none in
    b_on_detached."""
    if mode == "b_on_detached":
        return []
    if mode != "alternate":
        return [(n, 0) for n in _steps(run, mode)]
    done = [(m["opt_steps_a"], m["opt_steps_b"]) for m in run]
    return [(int(a - pa), int(b - pb)) for (a, b), (pa, pb) in zip(done, [(0.0, 0.0), *done[:-1]], strict=True)]


def _gradient_method(mode: str, run: list[dict[str, float]], static: list[dict[str, float]]) -> list[np.ndarray]:
    """A gradient method (a torchjd aggregator of the shared parameters' task rows): in b_on_detached no
    parameter is reached by all three losses, so the run is static weighting, to the bit; otherwise training
    departs from it. Returns each epoch's row weights weight_i / w_i (none in b_on_detached)."""
    if mode == "b_on_detached":  # all but the process's peak memory (CPU: its peak RSS, which the runs share)
        assert [{k: v for k, v in m.items() if k != "peak_memory_mb"} for m in run] == [
            {k: v for k, v in m.items() if k != "peak_memory_mb"} for m in static
        ]
        return []
    assert _departs(run, static)
    return [_weights(m) / np.array(BASE) for m in run]


def _check_on_simplex(mode: str, run: list[dict[str, float]], static: list[dict[str, float]], _: object) -> None:
    """MGDA and IMTL-G: a step's row weights of the losses it combines sum to 1 (a loss it does not combine
    keeps w_i), so each epoch's Σ_i weight_i / w_i is the mean over its steps of 1 + (losses left out)."""
    for r, (full, b_only) in zip(_gradient_method(mode, run, static), _combined(mode, run), strict=True):
        assert r.sum() == pytest.approx((full + 2 * b_only) / (full + b_only), rel=1e-5)


def _check_mgda(mode: str, run: list[dict[str, float]], static: list[dict[str, float]], _: object) -> None:
    """The row weights are a convex combination (min-norm point of the hull): on the simplex, none negative."""
    _check_on_simplex(mode, run, static, _)
    assert all(np.all(r >= -1e-6) for r in _gradient_method(mode, run, static))


def _check_above_mean(mode: str, run: list[dict[str, float]], static: list[dict[str, float]], _: object) -> None:
    """UPGrad and CAGrad: every row weight of a step's m combined losses is at least 1/m (UPGrad: each dual
    variable v ≥ e_i / m; CAGrad: 1/m + λ w_i, λ, w_i ≥ 0); a loss a step does not combine keeps w_i."""
    for r, (full, b_only) in zip(_gradient_method(mode, run, static), _combined(mode, run), strict=True):
        bound = (full / 3 + b_only * np.array([1.0, 0.5, 0.5])) / (full + b_only)
        assert np.all(r >= bound * (1 - 1e-5)), (r, bound)


def _check_nash_mtl(mode: str, run: list[dict[str, float]], static: list[dict[str, float]], _: object) -> None:
    """The Nash bargaining weights α (Gα = 1/α, then scaled to the step norm limit) are positive."""
    assert all(np.all(r > 0) for r in _gradient_method(mode, run, static))


def _check_gradvac(mode: str, run: list[dict[str, float]], static: list[dict[str, float]], _: object) -> None:
    """GradVac only adds positive multiples of other rows (φ < φ̂): every row weight is at least 1."""
    assert all(np.all(r >= 1 - 1e-6) for r in _gradient_method(mode, run, static))


def _check_graddrop(mode: str, run: list[dict[str, float]], static: list[dict[str, float]], _: object) -> None:
    """GradDrop masks the shared rows (not a weighted combination): the weights are the static ones."""
    for m in run:
        np.testing.assert_allclose(_weights(m), BASE, rtol=1e-6)
    _gradient_method(mode, run, static)


def _check_aligned_mtl(mode: str, run: list[dict[str, float]], static: list[dict[str, float]], _: object) -> None:
    """Aligned-MTL re-weights the shared rows by B 1/m (B = √λ_min V Λ^(−1/2) Vᵀ, not sign-constrained)."""
    _gradient_method(mode, run, static)


def _check_fairgrad(mode: str, run: list[dict[str, float]], static: list[dict[str, float]], _: object) -> None:
    """FairGrad's row weights w solve G w = w^(−1/α) with w > 0 (least squares with w ≥ 0, from 1/m)."""
    assert all(np.all(r > 0) for r in _gradient_method(mode, run, static))


def _check_excess_mtl(mode: str, run: list[dict[str, float]], static: list[dict[str, float]], _: object) -> None:
    """ExcessMTL's α is an exponentiated-gradient point of the simplex: positive, on the simplex."""
    _check_on_simplex(mode, run, static, _)
    assert all(np.all(r > 0) for r in _gradient_method(mode, run, static))


def _check_db_mtl(mode: str, run: list[dict[str, float]], static: list[dict[str, float]], _: object) -> None:
    """DB-MTL's step weights are w_i α_i / L_i with α_i ≥ 1, so an epoch's mean weight_i / w_i is at least
    the mean of 1 / L_i, itself at least 1 / (the epoch's mean L_i); the log losses make every mode,
    b_on_detached included (heads get ∇L_i / L_i), depart from static weighting."""
    for m in run:
        assert np.all(_weights(m) / np.array(BASE) >= (1 - 1e-6) / _losses(m, "train"))
    assert _departs(run, static)


def _check_imtl_l(mode: str, run: list[dict[str, float]], static: list[dict[str, float]], _: object) -> None:
    """The weights are w_i e^{s_i}: with s_i starting at init = 1 the first epoch's are near w_i e (within 15%:
    its steps already train the s_i); A's optimizer trains the s_i, so they change every epoch, and training
    departs from static weighting in every mode (the loss scales reach every parameter, heads included)."""
    ratios = [_weights(m) / np.array(BASE) for m in run]
    np.testing.assert_allclose(ratios[0], math.e, rtol=0.15)
    for before, after in itertools.pairwise(ratios):
        assert np.all(before != after)
    assert _departs(run, static)


def _same_training(run: list[dict[str, float]], other: list[dict[str, float]]) -> bool:
    """The same logged weights and validation losses, every epoch, to the bit."""
    return all(
        _weights(a).tolist() == _weights(b).tolist() and _losses(a, "val").tolist() == _losses(b, "val").tolist()
        for a, b in zip(run, other, strict=True)
    )


def _check_gls(mode: str, run: list[dict[str, float]], static: list[dict[str, float]], _: object) -> None:
    """A step's weights are G w_i / (Σw L_i), G = Π_i L_i^{w_i / Σw}: weight_i L_i / w_i is G / Σw for every
    loss, so with the epoch's mean losses each epoch's weight_i L̄_i / w_i is near the weighted geometric mean
    of L̄ (Σw = 1; within 3%: means of per-step ratios). Halving every static weight changes nothing (to the
    bit), and training departs from static weighting in every mode."""
    for m in run:
        losses = _losses(m, "train")
        geometric = np.exp(np.sum(np.array(BASE) * np.log(losses)) / sum(BASE))
        np.testing.assert_allclose(_weights(m) / np.array(BASE) * losses, geometric, rtol=0.03)
    assert _same_training(run, _epochs(mode, "gls", tuple(w / 2 for w in BASE)))
    assert _departs(run, static)


def _check_stch(mode: str, run: list[dict[str, float]], static: list[dict[str, float]], _: object) -> None:
    """warmup_epochs = 1: the first epoch trains on Σ λ_i log L_i, λ = 3 w / Σw, so weight_i L̄_i / w_i is near
    3 (within 3%: means of per-step ratios); its mean losses are the nadir N, and later steps' weights are
    3 λ_i softmax_i / L_i, so Σ_i weight_i L̄_i / w_i is near 9. The first epoch is a run whose warm-up lasts
    all three epochs, to the bit, and each later one departs from it (the nadir is the first epoch's);
    halving every static weight changes nothing, and training departs from static weighting in every mode."""
    first, *later = run
    np.testing.assert_allclose(_weights(first) / np.array(BASE) * _losses(first, "train"), 3.0, rtol=0.03)
    for m in later:
        assert np.sum(_weights(m) / np.array(BASE) * _losses(m, "train")) == pytest.approx(9.0, rel=0.03)
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(OPTIONS, "stch", {"warmup_epochs": 5})
        warm = _epochs(mode, "stch")
    assert _same_training(run[:1], warm[:1])
    assert all(_departs(run[:epoch], warm[:epoch]) for epoch in range(2, len(run) + 1))
    assert _same_training(run, _epochs(mode, "stch", tuple(w / 2 for w in BASE)))
    assert _departs(run, static)


# One check per registered strategy: check(mode, the strategy's run, the static run, PCGrad's projections).
CHECKS = {
    "static": _check_static,
    "uncertainty": _check_uncertainty,
    "dwa": _check_dwa,
    "rlw": _check_rlw,
    "gradnorm": _check_gradnorm,
    "pcgrad": _check_pcgrad,
    "famo": _check_famo,
    "hypergrad": _check_hypergrad,
    "mgda": _check_mgda,
    "upgrad": _check_above_mean,
    "imtl_g": _check_on_simplex,
    "cagrad": _check_above_mean,
    "nash_mtl": _check_nash_mtl,
    "aligned_mtl": _check_aligned_mtl,
    "gradvac": _check_gradvac,
    "graddrop": _check_graddrop,
    "fairgrad": _check_fairgrad,
    "excess_mtl": _check_excess_mtl,
    "db_mtl": _check_db_mtl,
    "imtl_l": _check_imtl_l,
    "gls": _check_gls,
    "stch": _check_stch,
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_strategy_in_alternating_loop(strategy: str, mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The alternating loop trains with the strategy in every mode, three losses included: the logged
    weights are the strategy's (checked against its rule) and training departs from static weighting
    as the strategy implies (:data:`CHECKS`, one per registered strategy)."""
    projections: list[bool] = []  # per PCGrad step: whether projecting changed the summed gradient
    project = pcgrad.project

    def spy(grads: list[torch.Tensor], order: list[list[int]]) -> torch.Tensor:
        out = project(grads, order)
        projections.append(not torch.equal(out, torch.stack(grads).sum(dim=0)))
        return out

    monkeypatch.setattr(pcgrad, "project", spy)
    run = _epochs(mode, strategy)
    CHECKS[strategy](mode, run, _epochs(mode, "static"), projections)


# Each LR schedule with options under which it moves the LR within three epochs.
LR_OPTIONS: dict[str, dict[str, object]] = {
    "constant": {},
    "step": {"every_epochs": 1, "gamma": 0.5},
    "multistep": {"milestones": [1, 2], "gamma": 0.5},
    "exponential": {"gamma": 0.5},
    "cosine": {"min_lr_ratio": 0.2},
    "warmup": {"warmup_fraction": 0.4, "start_factor": 0.1, "decay": "cosine", "min_lr_ratio": 0.0},
    "onecycle": {"pct_start": 0.3, "anneal_strategy": "cos", "div_factor": 10.0, "final_div_factor": 100.0},
    "plateau": {"factor": 0.5, "patience": 0, "threshold": 0.9},
}
DUAL_STEPS_PER_EPOCH = 3  # task a's 96 samples in batches of 32 (mixing cycle repeats task b's 32)


def _cos_anneal(start: float, end: float, fraction: float) -> float:
    """Cosine from ``start`` (fraction 0) to ``end`` (fraction 1)."""
    return end + (start - end) * (1.0 + math.cos(math.pi * fraction)) / 2.0


def _lr_factor(schedule: str, t: int, total: int, per_epoch: int) -> float:
    """The closed form of a step-driven schedule with its :data:`LR_OPTIONS`.

    Args:
        schedule: The schedule's name.
        t: Optimizer steps taken.
        total: Optimizer steps in the whole run.
        per_epoch: Optimizer steps per epoch (epoch-denominated options are converted with it).

    Returns:
        The LR after ``t`` steps, as a multiple of the optimizer's configured LR.
    """
    o = LR_OPTIONS[schedule]
    if schedule == "constant":
        return 1.0
    if schedule == "step":
        return o["gamma"] ** (t // (o["every_epochs"] * per_epoch))
    if schedule == "multistep":
        return o["gamma"] ** sum(t >= m * per_epoch for m in o["milestones"])
    if schedule == "exponential":
        return o["gamma"] ** (t / per_epoch)
    if schedule == "cosine":
        return _cos_anneal(1.0, o["min_lr_ratio"], t / total)
    if schedule == "warmup":
        warm = max(1, round(o["warmup_fraction"] * total))
        if t <= warm:
            return o["start_factor"] + (1.0 - o["start_factor"]) * t / warm
        return _cos_anneal(1.0, o["min_lr_ratio"], (t - warm) / max(1, total - warm))
    if schedule == "onecycle":  # torch's two phases: up until step pct·T − 1, then down until step T − 1
        # (after the last step, t = T, torch evaluates the second phase's cosine one step past its end)
        initial = 1.0 / o["div_factor"]
        peak_at = o["pct_start"] * total - 1.0
        if t <= peak_at:
            return _cos_anneal(initial, 1.0, t / peak_at)
        return _cos_anneal(1.0, initial / o["final_div_factor"], (t - peak_at) / (total - 1.0 - peak_at))
    raise AssertionError(f"no closed form for LR schedule {schedule!r}: add one")


def _plateau_factors(val_losses: list[float]) -> list[float]:
    """The LR factor each epoch runs with under reduce-on-plateau with patience 0: multiplied by ``factor``
    after every epoch whose validation loss is not below (1 − threshold) times the best so far."""
    o = LR_OPTIONS["plateau"]
    factor, best, factors = 1.0, math.inf, []
    for loss in val_losses:
        factors.append(factor)
        if loss < best * (1.0 - o["threshold"]):
            best = loss
        else:
            factor *= o["factor"]
    return factors


def _expected_lrs(
    schedule: str, lr: float, steps: list[float], total: int, epochs: list[dict[str, float]]
) -> list[float]:
    """The LR a loop should log at the end of each epoch.

    Args:
        schedule: The schedule's name.
        lr: The optimizer's configured LR.
        steps: The optimizer's steps taken by the end of each epoch.
        total: Its steps in the whole run.
        epochs: Every epoch's logged metrics (reduce-on-plateau reads ``val_total_loss``).

    Returns:
        ``lr`` times the schedule's factor after each epoch's steps (reduce-on-plateau: after the
        previous epochs' validation losses, as it steps once per epoch after the metrics are logged).
    """
    if schedule == "plateau":
        return [lr * f for f in _plateau_factors([m["val_total_loss"] for m in epochs])]
    per_epoch = math.ceil(total / len(epochs))
    return [lr * _lr_factor(schedule, int(t), total, per_epoch) for t in steps]


@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
def test_lr_schedule_in_both_loops(schedule: str) -> None:
    """Each LR schedule drives the dual optimizer and both alternating optimizers: the LR each loop logs
    after every epoch is the schedule's closed form at the optimizer steps taken so far (in alternate
    mode A and B step different numbers of times; in joint mode one schedule drives both parameter
    groups, each from its own LR)."""
    sched = {"type": schedule, **LR_OPTIONS[schedule]}
    cfg = DualLossConfig(
        problem="digits_pair", seed=0, data_seed=0, device="cpu", epochs=3, batch_size=32,
        optimizer={"type": "sgd", "lr": 0.05, "schedule": sched},
    )  # fmt: skip
    epochs = _history(dual_loss.train, cfg, DUAL)
    steps = [DUAL_STEPS_PER_EPOCH * (e + 1) for e in range(3)]
    expected = _expected_lrs(schedule, 0.05, steps, steps[-1], epochs)
    assert [m["lr"] for m in epochs] == pytest.approx(expected, rel=1e-6, abs=1e-12)
    if schedule != "constant":
        assert len(set(expected)) > 1  # the LR moves in this run, so a schedule that is never stepped shows

    for mode in ("alternate", "joint"):
        cfg = AlternatingConfig(
            problem="digits_codes", mode=mode, steps_b=2, seed=0, data_seed=0, device="cpu", epochs=3,
            batch_size=32, weights=BASE, model_a={"optimizer": {"lr": 0.01, "schedule": sched}},
            model_b={"optimizer": {"lr": 0.02, "schedule": sched}},
        )  # fmt: skip
        epochs = _history(alternating.train, cfg, COUPLED)
        for model, lr in (("a", 0.01), ("b", 0.02)):
            steps = [m[f"opt_steps_{model}"] for m in epochs]
            expected = _expected_lrs(schedule, lr, steps, int(steps[-1]), epochs)
            assert [m[f"lr_{model}"] for m in epochs] == pytest.approx(expected, rel=1e-6, abs=1e-12), (mode, model)
            if schedule != "constant":
                assert len(set(expected)) > 1


@pytest.mark.parametrize("schedule", sorted(WEIGHT_SCHEDULES))
def test_weight_schedule_in_both_loops(schedule: str) -> None:
    """Each loss-weight schedule moves its target's logged weight in both loops (static weighting)."""
    m = _dual(weight_schedule={"type": schedule, "target": "b"})
    assert _finite(m) and m["weight_a"] == pytest.approx(0.5)
    m = _alternating("joint", weight_schedule={"type": schedule, "target": "consistency"})
    assert _finite(m) and m["weight_b"] == pytest.approx(0.4)
    assert 0.0 <= m["weight_consistency"] <= 0.2 + 1e-6


def test_uncertainty_parameters_are_trained() -> None:
    """Uncertainty's log-variances join the optimizer: the logged weights move away from w/2."""
    torch.manual_seed(0)
    m = _dual(weighting={"type": "uncertainty"}, optimizer={"type": "adam", "lr": 0.05})
    assert m["weight_a"] != pytest.approx(0.25, abs=1e-4)


@pytest.mark.slow
def test_objectives_import_neither_optuna_nor_mlflow() -> None:
    """Every module of objectives/ imports in a fresh interpreter without pulling in optuna or mlflow
    (the loops take a resolved config and a reporter; sweep/ binds them)."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    code = (
        "import importlib, pkgutil, sys, objectives\n"
        "names = [m.name for m in pkgutil.walk_packages(objectives.__path__, 'objectives.')]\n"
        "[importlib.import_module(n) for n in names]\n"
        "print(len(names), sorted({m.split('.')[0] for m in sys.modules} & {'optuna', 'mlflow'}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    count, leaked = done.stdout.strip().split(" ", 1)
    assert int(count) > 30 and leaked == "[]"
