"""LR schedules (objectives.lr_schedules): shared contract, closed forms, loops and search integration.

Every expected LR below is computed in the test from the schedule's documented formula, never by
running a PyTorch scheduler. ``lrs_after(k)`` means the LR in effect after ``k`` optimizer steps (the
LR the ``k``-th next step would use).
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import optuna
import pytest
import torch
from pydantic import ValidationError

from objectives import alternating, dual_loss
from objectives.config import AlternatingConfig, DualLossConfig, OptimizerConfig
from objectives.helpers import plan_epoch
from objectives.lr_schedules import SCHEDULES, LRSchedule
from objectives.problems import build_problem
from sweep.core.errors import ConfigError
from sweep.studyfile.config import parse_study
from sweep.studyfile.space import resolve, sample

optuna.logging.set_verbosity(optuna.logging.WARNING)

TOTAL, PER_EPOCH = 40, 8
LR0, LR1 = 0.1, 0.01  # two parameter groups, ratio 10
LINEAR = {"dim": 4, "n_a": 64, "n_b": 64, "n_val": 32, "scale": 1.0, "noise": 0.1}
CODES = {"n_train": 128, "code_dim": 4, "hidden": 16}


# --- helpers --------------------------------------------------------------------------------------


def two_group_optimizer() -> torch.optim.SGD:
    """A tiny SGD optimizer: group 0 at LR0, group 1 at LR1."""
    p, q = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    return torch.optim.SGD([{"params": [p]}, {"params": [q], "lr": LR1}], lr=LR0)


def one_group_optimizer(lr: float = 1.0) -> torch.optim.SGD:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=lr)


def lrs(optimizer: torch.optim.Optimizer) -> tuple[float, ...]:
    return tuple(g["lr"] for g in optimizer.param_groups)


def step(optimizer: torch.optim.Optimizer, schedule: LRSchedule) -> None:
    """One (gradient-free) optimizer step, then the schedule, in the order the loops use."""
    optimizer.step()
    schedule.after_step()


def run_schedule(cfg: Any, n_steps: int = TOTAL, metric: Any = None) -> list[tuple[float, ...]]:
    """LRs of both groups before any step and after each of ``n_steps`` steps (after_epoch every epoch)."""
    optimizer = two_group_optimizer()
    schedule = LRSchedule(optimizer, cfg, total_steps=TOTAL, steps_per_epoch=PER_EPOCH)
    seq = [lrs(optimizer)]
    for k in range(1, n_steps + 1):
        step(optimizer, schedule)
        if k % PER_EPOCH == 0:
            schedule.after_epoch(metric(k) if metric else 1.0 / k)  # decreasing: always improving
        seq.append(lrs(optimizer))
    return seq


def single_lrs(cfg: Any, total: int, per_epoch: int, lr0: float = 1.0) -> list[float]:
    """LR after k = 0..total steps of a one-group optimizer (no after_epoch calls)."""
    optimizer = one_group_optimizer(lr0)
    schedule = LRSchedule(optimizer, cfg, total_steps=total, steps_per_epoch=per_epoch)
    out = [optimizer.param_groups[0]["lr"]]
    for _ in range(total):
        step(optimizer, schedule)
        out.append(optimizer.param_groups[0]["lr"])
    return out


def cosine_closed_form(lr0: float, k: float, total: float, min_ratio: float = 0.0) -> float:
    lo = lr0 * min_ratio
    return lo + (lr0 - lo) * (1 + math.cos(math.pi * k / total)) / 2


# --- 1. the contract every schedule keeps ---------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_lrs_stay_finite_and_non_negative(name):
    """Both groups' LRs are finite and >= 0 at every step of a full run."""
    for pair in run_schedule(SCHEDULES[name].Config()):
        assert all(math.isfinite(lr) and lr >= 0 for lr in pair), pair


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_each_group_follows_the_schedule_from_its_own_lr(name):
    """With default options the group LRs keep their initial ratio (10) at every step."""
    for k, (lr0, lr1) in enumerate(run_schedule(SCHEDULES[name].Config())):
        assert lr0 == pytest.approx(10 * lr1, rel=1e-9, abs=1e-15), (k, lr0, lr1)


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_schedule_is_deterministic(name):
    """Two runs of the same schedule give identical LR sequences."""
    cfg = SCHEDULES[name].Config()
    assert run_schedule(cfg) == run_schedule(cfg)


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_steps_past_the_end_do_not_raise_or_move_the_lr(name):
    """after_step() beyond total_steps is a no-op (OneCycleLR alone would raise)."""
    seq = run_schedule(SCHEDULES[name].Config(), n_steps=TOTAL + 15)
    assert seq[TOTAL + 1 :] == [seq[TOTAL]] * 15


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_config_type_is_its_registry_name_and_unknown_keys_are_rejected(name):
    """Config().type equals the registry key; an unknown option is a ValidationError."""
    module = SCHEDULES[name]
    assert module.Config().type == name
    assert module.PER in ("step", "epoch")
    with pytest.raises(ValidationError):
        module.Config(not_an_option=1)


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_optimizer_config_accepts_every_registered_schedule(name):
    """OptimizerConfig.schedule parses {type: name} into that schedule's Config (union and registry agree)."""
    cfg = OptimizerConfig(schedule={"type": name})
    assert isinstance(cfg.schedule, SCHEDULES[name].Config)


def test_default_schedule_is_constant():
    """OptimizerConfig without a schedule keeps the LR constant."""
    assert OptimizerConfig().schedule == SCHEDULES["constant"].Config()
    assert set(run_schedule(OptimizerConfig().schedule)) == {(LR0, LR1)}


# --- 2. closed forms ------------------------------------------------------------------------------


def test_warmup_cosine_matches_closed_form():
    """Linear warm-up from start_factor·lr0 over 10 steps, then cosine to 0 over the other 90."""
    total, warm, start, lo = 100, 10, 0.01, 0.0
    cfg = SCHEDULES["warmup"].Config(warmup_fraction=0.1, start_factor=start, decay="cosine")
    seq = single_lrs(cfg, total, per_epoch=10)

    def closed(k: int) -> float:
        if k < warm:
            return start + (1 - start) * k / warm
        return lo + (1 - lo) * (1 + math.cos(math.pi * (k - warm) / (total - warm))) / 2

    # At the milestone (k = warm) SequentialLR hands over to the cosine scheduler at its epoch 0,
    # which is exactly lr0: both branches of the closed form agree there (start + (1-start)·1 = 1 and
    # cos(0) = 1), so no off-by-one shows up; k = 9 and 11 pin the steps either side of it.
    for k in (0, 5, 9, 10, 11, 55, 99, 100):
        assert seq[k] == pytest.approx(closed(k), abs=1e-6), k
    assert seq[10] == pytest.approx(1.0, abs=1e-12)
    assert max(seq) == pytest.approx(1.0, abs=1e-12)


def test_warmup_linear_decay_ends_at_min_lr_ratio():
    """With decay linear the LR falls on a straight line from lr0 to min_lr_ratio·lr0 at the last step."""
    total, warm, lo, lr0 = 100, 20, 0.2, 0.5
    cfg = SCHEDULES["warmup"].Config(warmup_fraction=0.2, decay="linear", min_lr_ratio=lo)
    seq = single_lrs(cfg, total, per_epoch=10, lr0=lr0)
    assert seq[warm] == pytest.approx(lr0, abs=1e-9)
    assert seq[60] == pytest.approx(lr0 * (1 + (lo - 1) * (60 - warm) / (total - warm)), abs=1e-9)
    assert seq[total] == pytest.approx(lo * lr0, abs=1e-9)


def test_warmup_cosine_decay_ends_at_min_lr_ratio():
    """With decay cosine and min_lr_ratio 0.5 the last step's LR is 0.5·lr0 (as documented)."""
    cfg = SCHEDULES["warmup"].Config(warmup_fraction=0.1, start_factor=0.01, decay="cosine", min_lr_ratio=0.5)
    seq = single_lrs(cfg, 100, per_epoch=10)
    assert seq[55] == pytest.approx((0.5 + 1.0) / 2, abs=1e-6)
    assert seq[100] == pytest.approx(0.5, abs=1e-6)


def test_step_halves_every_two_epochs_of_steps():
    """every_epochs 2, gamma 0.5, 8 steps/epoch: the LR halves exactly after steps 16 and 32."""
    seq = single_lrs(SCHEDULES["step"].Config(every_epochs=2, gamma=0.5), TOTAL, PER_EPOCH)
    expected = [0.5 ** (k // 16) for k in range(TOTAL + 1)]
    assert seq == pytest.approx(expected, abs=1e-12)
    assert (seq[15], seq[16], seq[31], seq[32]) == pytest.approx((1.0, 0.5, 0.5, 0.25))


def test_multistep_milestones_are_epochs():
    """Milestones (1, 3) at 8 steps/epoch multiply the LR by gamma after steps 8 and 24."""
    seq = single_lrs(SCHEDULES["multistep"].Config(milestones=(1, 3), gamma=0.1), TOTAL, PER_EPOCH)
    expected = [0.1 ** ((k >= 8) + (k >= 24)) for k in range(TOTAL + 1)]
    assert seq == pytest.approx(expected, rel=1e-9)


def test_exponential_gamma_is_per_epoch_applied_per_step():
    """gamma 0.5 per epoch: 0.5**(k/steps_per_epoch) after k steps (0.5 after an epoch, √0.5 after half)."""
    seq = single_lrs(SCHEDULES["exponential"].Config(gamma=0.5), TOTAL, PER_EPOCH)
    assert seq == pytest.approx([0.5 ** (k / PER_EPOCH) for k in range(TOTAL + 1)], rel=1e-9)
    assert seq[4] == pytest.approx(0.5**0.5, rel=1e-9)
    assert seq[8] == pytest.approx(0.5, rel=1e-9)


@pytest.mark.parametrize("min_ratio", [0.0, 0.2])
def test_cosine_matches_closed_form(min_ratio):
    """Cosine from lr0 to min_lr_ratio·lr0 over all steps; (1+min)/2·lr0 at the half-way step."""
    lr0 = 0.3
    seq = single_lrs(SCHEDULES["cosine"].Config(min_lr_ratio=min_ratio), TOTAL, PER_EPOCH, lr0=lr0)
    assert seq == pytest.approx([cosine_closed_form(lr0, k, TOTAL, min_ratio) for k in range(TOTAL + 1)], abs=1e-9)
    assert seq[TOTAL // 2] == pytest.approx(lr0 * (1 + min_ratio) / 2, abs=1e-9)
    assert seq[TOTAL] == pytest.approx(lr0 * min_ratio, abs=1e-9)


def test_cosine_min_lr_ratio_is_per_group():
    """With min_lr_ratio 0.5 each group ends at half its own LR (0.05 and 0.005)."""
    seq = run_schedule(SCHEDULES["cosine"].Config(min_lr_ratio=0.5))
    assert seq[-1] == pytest.approx((0.5 * LR0, 0.5 * LR1), rel=1e-9)
    assert all(b <= a for a, b in itertools.pairwise(seq))  # never rises


def test_onecycle_starts_low_peaks_at_lr_and_anneals():
    """OneCycle starts at lr0/div_factor, peaks at lr0 near pct_start·total and trains last at the floor."""
    lr0, total = 0.4, 50
    cfg = SCHEDULES["onecycle"].Config(pct_start=0.3, div_factor=25.0, final_div_factor=1e4)
    seq = single_lrs(cfg, total, per_epoch=10, lr0=lr0)
    assert seq[0] == pytest.approx(lr0 / 25.0, rel=1e-9)
    assert max(seq) == pytest.approx(lr0, abs=1e-6)
    assert abs(seq.index(max(seq)) - round(0.3 * total)) <= 1
    # The last optimizer step (the total-th) uses the LR after total-1 scheduler steps: the floor.
    assert seq[total - 1] == pytest.approx(lr0 / 25.0 / 1e4, rel=1e-6)
    assert seq[total] < lr0 / 25.0  # stepping once more (the last after_step) does not raise or rise much


def test_plateau_ignores_steps_and_reduces_after_patience_bad_epochs():
    """after_step() never moves the LR; patience+1 epochs without improvement multiply it by factor."""
    cfg = SCHEDULES["plateau"].Config(factor=0.5, patience=2, threshold=0.0)
    optimizer = one_group_optimizer(1.0)
    schedule = LRSchedule(optimizer, cfg, total_steps=TOTAL, steps_per_epoch=PER_EPOCH)
    for _ in range(TOTAL):
        step(optimizer, schedule)
    assert optimizer.param_groups[0]["lr"] == 1.0
    schedule.after_epoch(1.0)  # first epoch: the best so far
    for _ in range(2):  # patience epochs without improvement: no change yet
        schedule.after_epoch(1.0)
        assert optimizer.param_groups[0]["lr"] == 1.0
    schedule.after_epoch(1.0)  # patience + 1
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.5)


def test_plateau_keeps_lr_while_metric_improves():
    """An improving metric never reduces the LR, even with patience 0."""
    cfg = SCHEDULES["plateau"].Config(factor=0.5, patience=0)
    optimizer = one_group_optimizer(1.0)
    schedule = LRSchedule(optimizer, cfg, total_steps=TOTAL, steps_per_epoch=PER_EPOCH)
    for epoch in range(10):
        schedule.after_epoch(1.0 / (epoch + 1))
    assert optimizer.param_groups[0]["lr"] == 1.0
    schedule.after_epoch(1.0)  # worse than 0.1: reduced at once with patience 0
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.5)


# --- 3. the loops ---------------------------------------------------------------------------------


def dual_cfg(schedule: dict, lr: float = 0.1, epochs: int = 3) -> DualLossConfig:
    return DualLossConfig(
        problem={"name": "linear_pair", "options": LINEAR},
        optimizer={"type": "sgd", "lr": lr, "momentum": 0.0, "schedule": schedule},
        epochs=epochs,
        batch_size=16,
        mixing="cycle",
        seed=0,
        data_seed=0,
        device="cpu",
    )


def run_dual(cfg: DualLossConfig) -> list[dict[str, float]]:
    calls: list[dict[str, float]] = []
    dual_loss.train(cfg, report=lambda epoch, m: calls.append(dict(m)), problem=build_problem("linear_pair", LINEAR, 0))
    return calls


def test_dual_loss_reports_cosine_lr_per_epoch():
    """The loop's per-epoch lr is the cosine closed form after (epoch+1)·steps_per_epoch steps."""
    cfg = dual_cfg({"type": "cosine"}, epochs=3)
    spe = plan_epoch((LINEAR["n_a"], LINEAR["n_b"]), (16, 16), "cycle").steps
    assert spe == 4
    reported = [m["lr"] for m in run_dual(cfg)]
    expected = [cosine_closed_form(0.1, (e + 1) * spe, 3 * spe) for e in range(3)]
    assert reported == pytest.approx(expected, abs=1e-9)


def test_dual_loss_plateau_keeps_lr_while_val_loss_improves():
    """patience 0 and threshold 0: an epoch-on-epoch falling val_total_loss leaves the LR alone."""
    calls = run_dual(dual_cfg({"type": "plateau", "patience": 0, "threshold": 0.0}, lr=0.02, epochs=4))
    val = [m["val_total_loss"] for m in calls]
    assert all(b < a for a, b in itertools.pairwise(val)), val  # the premise: it keeps improving
    assert [m["lr"] for m in calls] == [0.02] * 4


def test_dual_loss_plateau_reduces_lr_when_val_loss_stalls():
    """threshold 0.9 makes every epoch after the first 'no improvement': LR halves after each, one epoch late."""
    calls = run_dual(dual_cfg({"type": "plateau", "patience": 0, "threshold": 0.9, "factor": 0.5}, lr=0.02, epochs=4))
    # lr is reported before after_epoch: epoch 0 sets the best, epoch 1's report is the first to stall.
    assert [m["lr"] for m in calls] == pytest.approx([0.02, 0.02, 0.01, 0.005])


def alt_cfg(mode: str, schedule_a: dict, schedule_b: dict, **kw: Any) -> AlternatingConfig:
    return AlternatingConfig(
        problem={"name": "digits_codes", "options": CODES},
        mode=mode,
        model_a={"optimizer": {"type": "sgd", "lr": 0.05, "momentum": 0.0, "schedule": schedule_a}},
        model_b={"optimizer": {"type": "sgd", "lr": 0.2, "momentum": 0.0, "schedule": schedule_b}},
        epochs=3,
        batch_size=32,
        seed=0,
        data_seed=0,
        device="cpu",
        **kw,
    )


def run_alt(cfg: AlternatingConfig) -> list[dict[str, float]]:
    calls: list[dict[str, float]] = []
    problem = build_problem("digits_codes", CODES, 0, "alternating")
    alternating.train(cfg, report=lambda epoch, m: calls.append(dict(m)), problem=problem)
    return calls


def test_alternate_mode_schedules_count_each_optimizers_own_steps():
    """steps_a 1, steps_b 3 (A: 1 step/epoch, B: 3): a per-epoch step schedule halves both LRs each epoch."""
    step_schedule = {"type": "step", "every_epochs": 1, "gamma": 0.5}
    calls = run_alt(alt_cfg("alternate", step_schedule, step_schedule, steps_a=1, steps_b=3))
    assert [(m["opt_steps_a"], m["opt_steps_b"]) for m in calls] == [(1, 3), (2, 6), (3, 9)]
    assert [m["lr_a"] / 0.05 for m in calls] == pytest.approx([0.5, 0.25, 0.125])
    assert [m["lr_b"] / 0.2 for m in calls] == pytest.approx([0.5, 0.25, 0.125])


def test_joint_mode_one_schedule_keeps_group_ratio():
    """Joint mode, both on cosine: lr_a/lr_b stays at its initial 0.05/0.2 while both anneal."""
    calls = run_alt(alt_cfg("joint", {"type": "cosine"}, {"type": "cosine"}))
    for m in calls[:-1]:  # the last epoch ends at 0 for both
        assert m["lr_a"] / m["lr_b"] == pytest.approx(0.05 / 0.2, rel=1e-9)
    # 4 steps/epoch, 12 in all: the cosine closed form of the shared schedule.
    assert [m["lr_a"] for m in calls] == pytest.approx([cosine_closed_form(0.05, 4 * (e + 1), 12) for e in range(3)])
    assert calls[-1]["lr_b"] == pytest.approx(0.0, abs=1e-12)


def test_joint_mode_refuses_two_schedules():
    """mode joint with different schedules for A and B is a ValidationError naming the one schedule."""
    with pytest.raises(ValidationError, match="one LR schedule"):
        alt_cfg("joint", {"type": "cosine"}, {"type": "constant"})
    alt_cfg("alternate", {"type": "cosine"}, {"type": "constant"})  # fine outside joint mode


# --- 4. search integration ------------------------------------------------------------------------


def study_doc(params: dict, schedule: dict | None = None) -> dict:
    optimizer: dict[str, Any] = {"type": "sgd", "lr": 0.01}
    if schedule is not None:
        optimizer["schedule"] = schedule
    return {
        "study": {"name": "lr", "sampler": {"type": "random"}},
        "objective": {"problem": {"name": "linear_pair", "options": LINEAR}, "device": "cpu", "optimizer": optimizer},
        "search": {"params": params},
    }


SCHEDULE_SEARCH = {
    "optimizer.schedule.type": {"type": "categorical", "choices": ["constant", "warmup", "onecycle"]},
    "optimizer.schedule.warmup_fraction": {
        "type": "float",
        "low": 0.05,
        "high": 0.3,
        "when": {"optimizer.schedule.type": "warmup"},
    },
}


@pytest.mark.parametrize("choice", ["constant", "warmup", "onecycle"])
def test_searched_schedule_type_resolves_with_conditional_option(choice):
    """Each sampled type resolves to that schedule; warmup_fraction is sampled (and set) only for warmup."""
    sf = parse_study(study_doc(SCHEDULE_SEARCH), "s.yaml")
    fixed = {"optimizer.schedule.type": choice, "optimizer.schedule.warmup_fraction": 0.17}
    sampled, weights = sample(optuna.trial.FixedTrial(fixed), sf.search, sf.objective)
    expected = {"optimizer.schedule.type": choice}
    if choice == "warmup":
        expected["optimizer.schedule.warmup_fraction"] = 0.17
    assert sampled == expected
    cfg = resolve(sf.objective, sf.study.seed, 0, sampled, weights)
    assert isinstance(cfg.optimizer.schedule, SCHEDULES[choice].Config)
    assert cfg.optimizer.lr == 0.01  # the rest of the optimizer is untouched
    if choice == "warmup":
        assert cfg.optimizer.schedule.warmup_fraction == 0.17
    else:
        assert "warmup_fraction" not in cfg.optimizer.schedule.model_dump()


def test_changing_the_searched_type_drops_the_base_schedules_options():
    """Base {step, every_epochs: 3} searched over [step, cosine]: cosine resolves valid, step keeps its options."""
    params = {"optimizer.schedule.type": {"type": "categorical", "choices": ["step", "cosine"]}}
    sf = parse_study(study_doc(params, schedule={"type": "step", "every_epochs": 3}), "s.yaml")
    cosine = resolve(sf.objective, sf.study.seed, 0, {"optimizer.schedule.type": "cosine"}, (0.5, 0.5))
    assert cosine.optimizer.schedule == SCHEDULES["cosine"].Config()
    step_cfg = resolve(sf.objective, sf.study.seed, 0, {"optimizer.schedule.type": "step"}, (0.5, 0.5))
    assert step_cfg.optimizer.schedule == SCHEDULES["step"].Config(every_epochs=3)


def test_schedule_option_searched_without_its_type_is_refused():
    """warmup_fraction searched over a constant base schedule (no when) is a ConfigError on that key."""
    spec = {k: v for k, v in SCHEDULE_SEARCH["optimizer.schedule.warmup_fraction"].items() if k != "when"}
    params = {"optimizer.schedule.warmup_fraction": spec}
    with pytest.raises(ConfigError) as info:
        parse_study(study_doc(params), "s.yaml")
    assert info.value.key == "search.params.optimizer.schedule.warmup_fraction"
