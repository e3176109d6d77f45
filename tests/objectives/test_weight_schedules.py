"""Loss-weight schedules: every registered one obeys the shared contract; each formula is pinned."""

from __future__ import annotations

import math

import pydantic
import pytest
import torch

from objectives.weight_schedules import WEIGHT_SCHEDULES, multiplier, weight_table


@pytest.mark.parametrize("name", sorted(WEIGHT_SCHEDULES))
def test_shared_contract(name: str) -> None:
    """Finite multipliers in [0, 1], deterministic, full weight by the end, unknown keys refused."""
    cfg = WEIGHT_SCHEDULES[name].Config()
    assert cfg.type == name and cfg.target == "a"
    total = 101
    values = [multiplier(cfg, t, total) for t in range(total)]
    assert all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in values)
    assert values == [multiplier(cfg, t, total) for t in range(total)]
    assert max(values) == pytest.approx(1.0)
    with pytest.raises(pydantic.ValidationError):
        WEIGHT_SCHEDULES[name].Config(nonexistent=1)


def test_linear_ramp() -> None:
    """m(t) = start + (1 − start)·min(1, t/(R·T))."""
    cfg = WEIGHT_SCHEDULES["linear"].Config(start=0.2, ramp_fraction=0.5)
    assert [multiplier(cfg, t, 100) for t in (0, 25, 50, 99)] == pytest.approx([0.2, 0.6, 1.0, 1.0])


def test_cosine_ramp() -> None:
    """Half-cosine from start to 1: the midpoint of the ramp is halfway."""
    cfg = WEIGHT_SCHEDULES["cosine"].Config(start=0.0, ramp_fraction=0.5)
    assert [multiplier(cfg, t, 100) for t in (0, 25, 50)] == pytest.approx([0.0, 0.5, 1.0])
    assert multiplier(cfg, 10, 100) == pytest.approx((1 - math.cos(math.pi * 0.2)) / 2)


def test_sigmoid_ramp_laine_aila() -> None:
    """exp(−5(1 − x)²): exp(−5) at the start, exp(−1.25) halfway, 1 at the end of the ramp."""
    cfg = WEIGHT_SCHEDULES["sigmoid"].Config(ramp_fraction=1.0)
    assert [multiplier(cfg, t, 100) for t in (0, 50, 100)] == pytest.approx([math.exp(-5), math.exp(-1.25), 1.0])


def test_cyclical_fu_et_al() -> None:
    """M = 4 cycles over T = 100 (period 25), R = 0.5: linear to 1 in 12.5 steps, flat, then restart."""
    cfg = WEIGHT_SCHEDULES["cyclical"].Config(cycles=4, ramp_fraction=0.5)
    steps = (0, 5, 10, 12, 13, 20, 24, 25, 30, 75, 99)
    expected = [0.0, 0.4, 0.8, 0.96, 1.0, 1.0, 1.0, 0.0, 0.4, 0.0, 1.0]
    assert [multiplier(cfg, t, 100) for t in steps] == pytest.approx(expected)


def test_step_schedule() -> None:
    """start until at_fraction·T, then 1."""
    cfg = WEIGHT_SCHEDULES["step"].Config(start=0.1, at_fraction=0.3)
    assert [multiplier(cfg, t, 100) for t in (0, 29, 30, 99)] == pytest.approx([0.1, 0.1, 1.0, 1.0])


def test_weight_table_moves_only_the_target() -> None:
    """The table multiplies the target loss's weight per step and leaves the others as given."""
    cfg = WEIGHT_SCHEDULES["linear"].Config(target="b", start=0.0, ramp_fraction=1.0)
    table = weight_table(cfg, (0.3, 0.6, 0.1), ("a", "b", "consistency"), 4, "cpu")
    assert table.shape == (4, 3)
    torch.testing.assert_close(table[:, 0], torch.full((4,), 0.3))
    torch.testing.assert_close(table[:, 2], torch.full((4,), 0.1))
    torch.testing.assert_close(table[:, 1], torch.tensor([0.0, 0.15, 0.3, 0.45]))
