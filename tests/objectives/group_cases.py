"""The batched exactness cases: groups that must train each member exactly as its standalone run.

:mod:`tests.objectives.test_group_coverage` trains every case (grouped and member by member alone) and
walks every field of every loop config: a field is either set away from its default by some case here,
or refused for grouping by :func:`objectives.loops.why_not` (:data:`REFUSED`). A new config field, a new
LR schedule, weight schedule or weighting strategy therefore needs a case here or a refusal there.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import torch

from objectives.config import AlternatingConfig, DualLossConfig, LoopCommon
from objectives.problems import CoupledProblem, Problem, build_problem

DIGITS = {"n_a": 48, "n_b": 24, "n_val": 20, "hidden": 6}
CODES = {"n_train": 48, "code_dim": 4, "hidden": 6}

# Each LR schedule and every option of it away from its default (two variants where a literal has two values).
STEP = {"type": "step", "every_epochs": 1, "gamma": 0.5}
MULTISTEP = {"type": "multistep", "milestones": [1], "gamma": 0.3}
EXPONENTIAL = {"type": "exponential", "gamma": 0.7}
COSINE = {"type": "cosine", "min_lr_ratio": 0.2}
WARMUP_COS = {"type": "warmup", "warmup_fraction": 0.3, "start_factor": 0.2, "decay": "cosine", "min_lr_ratio": 0.1}
WARMUP_LIN = {**WARMUP_COS, "decay": "linear", "min_lr_ratio": 0.3}
ONECYCLE_COS = {"type": "onecycle", "pct_start": 0.4, "anneal_strategy": "cos", "div_factor": 10.0,
                "final_div_factor": 100.0}  # fmt: skip
ONECYCLE_LIN = {**ONECYCLE_COS, "anneal_strategy": "linear"}
PLATEAU = {"type": "plateau", "factor": 0.3, "patience": 0, "threshold": 0.5, "min_lr": 1e-4}
CONSTANT = {"type": "constant"}

# The Dataset options (no-ops on tensor splits, which every group has) and steps per epoch (applied to tensors).
DATA_ON = {"num_workers": 1, "pin_memory": True, "persistent_workers": True, "prefetch_factor": 3, "drop_last": True}

# Loss-weight schedules: every type, every option away from its default.
WS_LINEAR = {"type": "linear", "target": "b", "start": 0.2, "ramp_fraction": 0.6}
WS_COSINE = {"type": "cosine", "target": "b", "start": 0.3, "ramp_fraction": 0.5}
WS_SIGMOID = {"type": "sigmoid", "target": "b", "start": 0.1, "ramp_fraction": 0.4}
WS_CYCLICAL = {"type": "cyclical", "target": "b", "start": 0.2, "cycles": 2, "ramp_fraction": 0.3}
WS_STEP = {"type": "step", "target": "b", "start": 0.4, "at_fraction": 0.3}
WS_CONSTANT = {"type": "constant", "target": "b"}
DWA = {"type": "dwa", "temperature": 1.5}

DUAL_BASE: dict[str, Any] = {
    "problem": {"name": "digits_pair", "options": DIGITS},
    "data_seed": 0,
    "device": "cpu",
    "epochs": 2,
    "batch_size": 16,
}
DUAL_MEMBERS: list[dict[str, Any]] = [
    {"seed": 10, "weights": [0.5, 0.5], "optimizer": {"lr": 0.02, "momentum": 0.9, "betas": [0.9, 0.999]}},
    {
        "seed": 11,
        "weights": [0.8, 0.3],
        "grad_clip": 0.5,
        "optimizer": {"lr": 0.05, "weight_decay": 0.01, "momentum": 0.5, "betas": [0.8, 0.99]},
    },
]
# id → what both members share (schedule options may differ per member: the second gets its own below).
DUAL_CASES: dict[str, dict[str, Any]] = {
    "sgd-zip-step-capped": {"optimizer": {"type": "sgd", "schedule": STEP}, "mixing": "zip",
                            "weight_schedule": WS_CONSTANT, "checkpoint": "none", "data": {"steps_per_epoch": 1}},
    "adam-multistep-dwa": {"optimizer": {"type": "adam", "schedule": MULTISTEP}, "weighting": DWA,
                           "batch_size_b": 8, "weight_schedule": WS_LINEAR, "checkpoint": "best",
                           "early_stopping": {"patience": 1, "min_delta": 0.01}},
    "adamw-accumulate-exponential-rlw": {"optimizer": {"type": "adamw", "schedule": EXPONENTIAL},
                                         "mixing": "accumulate", "grad_accum_steps": 2, "weighting": {"type": "rlw"},
                                         "weight_schedule": WS_COSINE, "checkpoint": "last"},
    "sgd-cosine-data-options": {"optimizer": {"type": "sgd", "schedule": COSINE}, "weight_schedule": WS_SIGMOID,
                                "eval_batch_size": 7, "data": {**DATA_ON, "steps_per_epoch": 7}},
    "adam-zip-warmup-cos": {"optimizer": {"type": "adam", "schedule": WARMUP_COS}, "mixing": "zip",
                            "weight_schedule": WS_CYCLICAL, "data": {"pin_memory": False}},
    "adamw-warmup-linear": {"optimizer": {"type": "adamw", "schedule": WARMUP_LIN}, "weight_schedule": WS_STEP},
    "sgd-onecycle-cos": {"optimizer": {"type": "sgd", "schedule": ONECYCLE_COS}},
    "adam-onecycle-linear-accumulate": {"optimizer": {"type": "adam", "schedule": ONECYCLE_LIN},
                                        "mixing": "accumulate"},
    "adam-plateau": {"optimizer": {"type": "adam", "schedule": PLATEAU}},
    "adam-constant": {"optimizer": {"type": "adam", "schedule": CONSTANT}},
    "tasks-reordered-batch-sizes": {"tasks": ["b", "a"], "batch_sizes": {"a": 8, "b": 12},
                                    "weight_schedule": {**WS_LINEAR, "target": "a"}},
}  # fmt: skip

ALTERNATING_BASE: dict[str, Any] = {
    "problem": {"name": "digits_codes", "options": CODES},
    "data_seed": 0,
    "device": "cpu",
    "epochs": 2,
    "batch_size": 16,
}


def _model(lr: float, wd: float, momentum: float, betas: list[float], clip: float | None) -> dict[str, Any]:
    return {"optimizer": {"lr": lr, "weight_decay": wd, "momentum": momentum, "betas": betas}, "grad_clip": clip}


ALTERNATING_MEMBERS: list[dict[str, Any]] = [
    {"seed": 20, "model_a": _model(0.02, 0.0, 0.9, [0.9, 0.999], None),
     "model_b": _model(0.03, 0.01, 0.5, [0.8, 0.99], 0.3)},
    {"seed": 21, "model_a": _model(0.05, 0.02, 0.3, [0.7, 0.9], 0.5),
     "model_b": _model(0.01, 0.0, 0.9, [0.9, 0.95], None)},
]  # fmt: skip
TWO, THREE = ([0.5, 0.5], [0.9, 0.2]), ([0.5, 0.5, 0.2], [0.9, 0.2, 0.6])


def _models(kind_a: str, sched_a: dict, kind_b: str, sched_b: dict) -> dict[str, Any]:
    return {"model_a": {"optimizer": {"type": kind_a, "schedule": sched_a}},
            "model_b": {"optimizer": {"type": kind_b, "schedule": sched_b}}}  # fmt: skip


# id → (what both members share, the members' weights).
ALTERNATING_CASES: dict[str, tuple[dict[str, Any], tuple[list[float], list[float]]]] = {
    "alternate-model-steps": ({**_models("sgd", STEP, "adam", MULTISTEP), "mode": "alternate", "steps_a": 2,
                               "epoch": "model_steps", "weighting": DWA,
                               "weight_schedule": {**WS_LINEAR, "target": "consistency"}}, THREE),
    "alternate-pass-capped": ({**_models("adamw", MULTISTEP, "sgd", STEP), "steps_b": 2, "weighting": {"type": "rlw"},
                               "weight_schedule": WS_COSINE, "data": {"steps_per_epoch": 2}}, TWO),
    "b-on-detached-exponential": ({**_models("adam", EXPONENTIAL, "adamw", COSINE), "mode": "b_on_detached",
                                   "weight_schedule": WS_SIGMOID}, THREE),
    "b-on-detached-cosine": ({**_models("sgd", COSINE, "sgd", EXPONENTIAL), "mode": "b_on_detached",
                              "checkpoint": "best", "early_stopping": {"patience": 1, "min_delta": 0.01}}, TWO),
    "alternate-warmup": ({**_models("adam", WARMUP_COS, "adamw", WARMUP_LIN), "weight_schedule": WS_CYCLICAL,
                          "checkpoint": "last"}, THREE),
    "alternate-warmup-swapped": ({**_models("adamw", WARMUP_LIN, "adam", WARMUP_COS), "weight_schedule": WS_STEP,
                                  "checkpoint": "none", "data": {"pin_memory": False}}, TWO),
    "joint-onecycle-cos": ({**_models("sgd", ONECYCLE_COS, "sgd", ONECYCLE_COS), "mode": "joint",
                            "weight_schedule": WS_CONSTANT}, THREE),
    "joint-onecycle-linear-data-options": ({**_models("adam", ONECYCLE_LIN, "adam", ONECYCLE_LIN), "mode": "joint",
                                            "eval_batch_size": 7, "data": {**DATA_ON, "steps_per_epoch": 5}}, TWO),
    "joint-plateau": ({**_models("adamw", PLATEAU, "adamw", PLATEAU), "mode": "joint"}, THREE),
    "alternate-constant": (_models("adam", CONSTANT, "sgd", CONSTANT), TWO),
}  # fmt: skip


def merge(base: dict[str, Any], *more: dict[str, Any]) -> dict[str, Any]:
    """``base`` with each of ``more`` merged in, key by key into nested mappings (a deep copy)."""
    out = copy.deepcopy(base)
    for extra in more:
        for key, value in extra.items():
            both = isinstance(out.get(key), dict) and isinstance(value, dict)
            out[key] = merge(out[key], value) if both else copy.deepcopy(value)
    return out


def _own_ratio(optimizer: dict[str, Any]) -> None:
    """The second member's own schedule options where its schedule has a ratio (VARIES allows it)."""
    schedule = optimizer.get("schedule", {})
    if "min_lr_ratio" in schedule:
        schedule["min_lr_ratio"] = round(schedule["min_lr_ratio"] + 0.05, 2)


def cases() -> dict[str, list[LoopCommon]]:
    """Every case's member configs, by ``<loop>/<case id>``."""
    out: dict[str, list[LoopCommon]] = {}
    for name, shared in DUAL_CASES.items():
        members = [merge(DUAL_BASE, m, shared) for m in DUAL_MEMBERS]
        _own_ratio(members[1]["optimizer"])
        out[f"dual_loss/{name}"] = [DualLossConfig.model_validate(m) for m in members]
    for name, (shared, weights) in ALTERNATING_CASES.items():
        pairs = zip(ALTERNATING_MEMBERS, weights, strict=True)
        members = [merge(ALTERNATING_BASE, m, shared, {"weights": w}) for m, w in pairs]
        if shared.get("mode") != "joint":  # joint: one schedule for both models (the config insists)
            _own_ratio(members[1]["model_a"]["optimizer"])
            _own_ratio(members[1]["model_b"]["optimizer"])
        out[f"alternating/{name}"] = [AlternatingConfig.model_validate(m) for m in members]
    return out


def dual_problem() -> Problem:
    """The dual cases' problem, its data and model in float64 (exactness to 1e-12)."""
    built = build_problem("digits_pair", DIGITS, 0, "dual_loss", Problem)

    def cast(task: Any) -> Any:
        (x, y), (xv, yv) = task.train, task.val
        return dataclasses.replace(task, train=(x.double(), y), val=(xv.double(), yv))

    make = built.make_model
    return dataclasses.replace(built, make_model=lambda: make().double(), a=cast(built.a), b=cast(built.b))


def coupled_problem() -> CoupledProblem:
    """The alternating cases' problem in float64."""
    p = build_problem("digits_codes", CODES, 0, "alternating", CoupledProblem)
    (x, y, t), (xv, yv, tv) = p.train, p.val
    ma, mb = p.make_model_a, p.make_model_b
    return dataclasses.replace(p, train=(x.double(), y, t.double()), val=(xv.double(), yv, tv.double()),
                               make_model_a=lambda: ma().double(), make_model_b=lambda: mb().double())  # fmt: skip


def problem_for(loop: str) -> Problem | CoupledProblem:
    """The built problem of a loop's cases."""
    return dual_problem() if loop == "dual_loss" else coupled_problem()


class Recorder:
    """Every epoch's metrics and parameters (all models, by name) of one training."""

    def __init__(self) -> None:
        self.metrics: list[dict[str, float]] = []
        self.params: list[dict[str, torch.Tensor]] = []

    def checkpoint(self, epoch: int, metrics: Any, models: Any) -> None:
        named = {f"{n}.{k}": v for n, m in models.items() for k, v in m.state_dict().items()}
        self.params.append({k: v.detach().clone() for k, v in named.items()})

    def report(self, epoch: int, metrics: Any) -> None:
        self.metrics.append(dict(metrics))
