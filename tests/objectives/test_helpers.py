"""Unit tests of objectives.helpers: seeds, loss weights, epoch plans, batching, finiteness, optimizers."""

from __future__ import annotations

import math

import pytest
import torch

from objectives.config import OptimizerConfig
from objectives.helpers import (
    NonFiniteLossError,
    build_optimizer,
    check_finite,
    derive_seed,
    epoch_batches,
    plan_epoch,
    weights_from_log10_ratios,
    weights_from_uniforms,
)

# --- derive_seed ----------------------------------------------------------------------------------


def test_derive_seed_is_deterministic():
    """The same keys give the same seed on every call."""
    assert derive_seed("study", 3, "trial") == derive_seed("study", 3, "trial")


def test_derive_seed_pinned_value():
    """The seed is the low 31 bits of the little-endian first 4 bytes of sha256(repr(keys))."""
    import hashlib

    keys = ("study", 3)
    digest = hashlib.sha256(repr(keys).encode()).digest()
    assert derive_seed(*keys) == int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def test_derive_seed_differs_for_different_keys():
    """Different keys (values, order, types) give different seeds."""
    seeds = {derive_seed(*k) for k in [("a",), ("b",), ("a", 1), ("a", 2), (1, "a"), ("1",), (1,)]}
    assert len(seeds) == 7


def test_derive_seed_in_31_bit_range():
    """Every seed lies in [0, 2**31)."""
    for i in range(200):
        s = derive_seed("k", i)
        assert isinstance(s, int)
        assert 0 <= s < 2**31


# --- weights_from_log10_ratios --------------------------------------------------------------------


def test_log10_ratio_zero_is_even():
    """A log10 ratio of 0 gives equal weights."""
    assert weights_from_log10_ratios([0.0]) == pytest.approx((0.5, 0.5), abs=1e-15)


def test_log10_ratio_one():
    """A log10 ratio of 1 gives (10/11, 1/11)."""
    assert weights_from_log10_ratios([1.0]) == pytest.approx((10 / 11, 1 / 11), rel=1e-12)


@pytest.mark.parametrize("r", [300.0, -300.0, 1000.0, -1000.0])
def test_log10_ratio_extreme_is_finite(r):
    """Huge |r| gives finite weights summing to 1, with the heavy side ~1."""
    w = weights_from_log10_ratios([r])
    assert all(math.isfinite(x) for x in w)
    assert sum(w) == pytest.approx(1.0, abs=1e-12)
    heavy, light = (w[0], w[1]) if r > 0 else (w[1], w[0])
    assert heavy == pytest.approx(1.0, abs=1e-12)
    assert 0.0 <= light < 1e-200


def test_log10_ratio_three_losses():
    """Three losses: weights ∝ (10^r1, 10^r2, 1)."""
    w = weights_from_log10_ratios([1.0, -1.0])
    raw = (10.0, 0.1, 1.0)
    assert w == pytest.approx(tuple(x / sum(raw) for x in raw), rel=1e-12)
    assert sum(w) == pytest.approx(1.0, abs=1e-12)


# --- weights_from_uniforms ------------------------------------------------------------------------


def test_uniforms_formula():
    """Weights are -log(u) / sum(-log(u)) (flat-Dirichlet recipe), pinned numerically."""
    u = [0.2, 0.5, 0.9]
    e = [-math.log(x) for x in u]
    expected = tuple(x / sum(e) for x in e)
    w = weights_from_uniforms(u)
    assert w == pytest.approx(expected, rel=1e-12)
    # And the hard numbers, so a change of formula that keeps the form cannot slip through.
    assert w == pytest.approx((0.6683863, 0.2878583, 0.0437554), abs=1e-6)
    assert sum(w) == pytest.approx(1.0, abs=1e-12)


def test_uniforms_sum_to_one():
    """Weights from random uniforms sum to 1 and are non-negative."""
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        u = torch.rand(4, generator=g).tolist()
        w = weights_from_uniforms(u)
        assert sum(w) == pytest.approx(1.0, abs=1e-12)
        assert all(x >= 0 for x in w)


def test_uniforms_all_ones_is_uniform():
    """u = (1, 1, 1) (every -log u = 0) gives uniform weights instead of 0/0."""
    assert weights_from_uniforms([1.0, 1.0, 1.0]) == pytest.approx((1 / 3, 1 / 3, 1 / 3))


def test_uniforms_zero_is_finite():
    """u = 0 (log 0 = -inf) still gives finite weights summing to 1, dominated by that draw."""
    w = weights_from_uniforms([0.0, 0.5])
    assert all(math.isfinite(x) for x in w)
    assert sum(w) == pytest.approx(1.0, abs=1e-12)
    assert w[0] > 0.99
    w0 = weights_from_uniforms([0.0, 0.0])
    assert w0 == pytest.approx((0.5, 0.5))


# --- plan_epoch -----------------------------------------------------------------------------------


def test_plan_zip_stops_at_shorter():
    """zip: steps = batches of the shorter set; the longer set is only partly seen."""
    plan = plan_epoch((1000, 5000), (64, 64), "zip")
    assert plan.steps == 16
    assert plan.cycles == (False, False)
    assert plan.seen_fraction[0] == 1.0
    assert plan.seen_fraction[1] == pytest.approx(1024 / 5000)
    assert plan.seen_fraction[1] == pytest.approx(0.2048)


def test_plan_cycle_sees_all_of_longer():
    """cycle: steps = batches of the longer set; the shorter set is cycled."""
    plan = plan_epoch((1000, 5000), (64, 64), "cycle")
    assert plan.steps == 79
    assert plan.cycles == (True, False)
    assert plan.seen_fraction == (1.0, 1.0)


def test_plan_accumulate_equals_cycle():
    """accumulate pairs batches exactly like cycle."""
    assert plan_epoch((1000, 5000), (64, 64), "accumulate") == plan_epoch((1000, 5000), (64, 64), "cycle")


def test_plan_uses_each_batch_size():
    """Each set's own batch size sets its batch count (b bigger batches -> fewer steps)."""
    plan = plan_epoch((1000, 5000), (64, 500), "cycle")
    assert plan.steps == 16  # ceil(1000/64) = 16 > ceil(5000/500) = 10
    assert plan.cycles == (False, True)
    zplan = plan_epoch((1000, 5000), (64, 500), "zip")
    assert zplan.steps == 10
    assert zplan.seen_fraction == (pytest.approx(640 / 1000), 1.0)


# --- epoch_batches --------------------------------------------------------------------------------


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_epoch_batches_exact_single_pass_covers_each_index_once():
    """n divisible by batch, steps = n / batch: a shuffled partition of range(n)."""
    batches = epoch_batches(12, 4, 3, _gen(), "cpu")
    assert [len(b) for b in batches] == [4, 4, 4]
    flat = torch.cat(batches)
    assert sorted(flat.tolist()) == list(range(12))
    assert flat.tolist() != list(range(12))  # shuffled


def test_epoch_batches_single_pass_last_batch_smaller():
    """n=10, batch 4, steps 3 (one pass): every index exactly once, last batch of size 2."""
    batches = epoch_batches(10, 4, 3, _gen(), "cpu")
    assert [len(b) for b in batches] == [4, 4, 2]
    assert sorted(torch.cat(batches).tolist()) == list(range(10))


def test_epoch_batches_cycled_passes_are_reshuffled_permutations():
    """n=10, batch 4, steps 7: full batches, each pass a permutation, passes in different orders."""
    batches = epoch_batches(10, 4, 7, _gen(0), "cpu")
    assert len(batches) == 7
    assert all(len(b) == 4 for b in batches)
    flat = torch.cat(batches).tolist()
    assert len(flat) == 28
    first, second = flat[:10], flat[10:20]
    assert sorted(first) == list(range(10))
    assert sorted(second) == list(range(10))
    assert first != second  # re-shuffled, unlike itertools.cycle
    # The tail (8 of the third pass) has no repeats within its pass.
    assert len(set(flat[20:])) == 8


def test_epoch_batches_deterministic_under_seed():
    """Same generator seed -> same batches; a different seed -> a different order."""
    a = epoch_batches(10, 4, 7, _gen(5), "cpu")
    b = epoch_batches(10, 4, 7, _gen(5), "cpu")
    c = epoch_batches(10, 4, 7, _gen(6), "cpu")
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a, c, strict=True))


@pytest.mark.parametrize(("n", "batch", "steps"), [(10, 4, 1), (10, 4, 3), (10, 4, 7), (7, 10, 2), (64, 64, 1)])
def test_epoch_batches_returns_steps_batches_of_valid_indices(n, batch, steps):
    """Always exactly ``steps`` non-empty batches of long indices in [0, n)."""
    batches = epoch_batches(n, batch, steps, _gen(), "cpu")
    assert len(batches) == steps
    for b in batches:
        assert b.dtype == torch.long
        assert 0 < len(b) <= batch
        assert int(b.min()) >= 0 and int(b.max()) < n


# --- check_finite ---------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_check_finite_raises_on_bad_loss(bad):
    """A NaN/Inf value of a *_loss key raises NonFiniteLossError naming the key and epoch."""
    with pytest.raises(NonFiniteLossError, match=r"val_b_loss is .* at epoch 4"):
        check_finite({"train_a_loss": 1.0, "val_b_loss": bad}, 4)


def test_check_finite_is_a_floating_point_error():
    """NonFiniteLossError is a FloatingPointError (callers may catch either)."""
    assert issubclass(NonFiniteLossError, FloatingPointError)


def test_check_finite_ignores_non_loss_keys():
    """NaN/Inf in keys not ending in _loss (accuracy, lr, weights) is not an error."""
    check_finite({"val_a_acc": math.nan, "lr": math.inf, "weight_a": math.nan, "train_a_loss": 0.5}, 0)


# --- build_optimizer ------------------------------------------------------------------------------


def _params() -> list[torch.nn.Parameter]:
    return list(torch.nn.Linear(3, 2).parameters())


def test_build_optimizer_sgd():
    """sgd -> torch.optim.SGD with the config's lr, momentum and weight decay."""
    opt = build_optimizer(_params(), OptimizerConfig(type="sgd", lr=0.05, momentum=0.7, weight_decay=0.01))
    assert type(opt) is torch.optim.SGD
    group = opt.param_groups[0]
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (0.05, 0.7, 0.01)


@pytest.mark.parametrize(("name", "cls"), [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)])
def test_build_optimizer_adam_family(name, cls):
    """adam/adamw -> the exact torch class with the config's lr, betas and weight decay."""
    cfg = OptimizerConfig(type=name, lr=0.002, weight_decay=0.03, betas=(0.8, 0.95))
    opt = build_optimizer(_params(), cfg)
    assert type(opt) is cls
    group = opt.param_groups[0]
    assert group["lr"] == 0.002
    assert group["weight_decay"] == 0.03
    assert tuple(group["betas"]) == (0.8, 0.95)


def test_build_optimizer_covers_all_params():
    """The optimizer holds every parameter it was given."""
    params = _params()
    opt = build_optimizer(params, OptimizerConfig())
    assert [id(p) for p in opt.param_groups[0]["params"]] == [id(p) for p in params]
