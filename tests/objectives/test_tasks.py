"""N named tasks in the dual-loss loop: the problem type, the config, the loop against an autograd
reference, the vectorized group against standalone runs, and two-task configs dumped as before."""

from __future__ import annotations

import copy
import dataclasses
import math
import warnings
from typing import Any

import pydantic
import pytest
import torch

from objectives.config import DualLossConfig
from objectives.dual_loss import _output, logged_metrics, train
from objectives.loops import train_group, why_not
from objectives.problems import Problem, Task, build_problem
from objectives.problems.digits_three import TASKS
from tests.objectives.group_cases import Recorder

SMALL = {"n_digit": 24, "n_value": 40, "n_parity": 12, "hidden": 6}
ORDER = ("parity", "digit", "value")  # not the problem's order: weights must follow the names


def _three(double: bool = False) -> Problem:
    problem = build_problem("digits_three", SMALL, 0)
    if not double:
        return problem

    def cast(task: Task) -> Task:
        (x, y), (xv, yv) = task.train, task.val
        y, yv = (t.double() if t.is_floating_point() else t for t in (y, yv))
        return dataclasses.replace(task, train=(x.double(), y), val=(xv.double(), yv))

    make = problem.make_model
    return Problem(lambda: make().double(), tasks={n: cast(t) for n, t in problem.tasks.items()})


def _cfg(**kw: Any) -> DualLossConfig:
    fields: dict[str, Any] = {
        "problem": {"name": "digits_three", "options": SMALL},
        "seed": 0, "data_seed": 0, "device": "cpu", "epochs": 2, "batch_size": 8,
        "weights": {"parity": 0.5, "digit": 0.2, "value": 0.3},
    }  # fmt: skip
    fields.update(kw)
    return DualLossConfig(**fields)


# --- the problem and the config -------------------------------------------------------------------


def test_a_problem_takes_named_tasks_or_a_and_b() -> None:
    """``Problem(make, a=, b=)`` is the two-task case of ``tasks={...}``; ``replace(problem, a=...)`` swaps
    one task; names are checked (metric names are built from them)."""
    problem = _three()
    assert problem.names == TASKS
    a, b = problem.tasks["digit"], problem.tasks["value"]
    pair = Problem(problem.make_model, a=a, b=b)
    assert pair.names == ("a", "b") and pair.a is a and pair.b is b
    assert dataclasses.replace(pair, a=b).tasks["a"] is b
    for bad, says in [
        ({"x": a}, "at least two tasks"),
        ({"Seg": a, "depth": b}, "lowercase"),
        ({"total": a, "depth": b}, "reserved"),
        ({"seg": a, "seg_edge": b}, "ambiguous"),
    ]:
        with pytest.raises(ValueError, match=says):
            Problem(problem.make_model, tasks=bad)
    with pytest.raises(ValueError, match="give both a= and b="):
        Problem(problem.make_model, a=a)
    with pytest.raises(ValueError, match=r"objective.tasks: \[digit, value, parity\]"):
        problem.in_order(("a", "b", "c"))
    assert list(problem.in_order(ORDER)) == list(ORDER)


def test_weights_by_task_name_follow_the_names() -> None:
    """A mapping of weights sets ``tasks`` from its keys; a list follows ``tasks``; no weights: equal."""
    cfg = _cfg()
    assert cfg.tasks == ORDER and cfg.weights == (0.5, 0.2, 0.3) and cfg.loss_terms == ORDER
    listed = _cfg(tasks=list(TASKS), weights=[0.2, 0.3, 0.5])
    assert dict(zip(listed.tasks, listed.weights, strict=True)) == dict(zip(cfg.tasks, cfg.weights, strict=True))
    equal = DualLossConfig(problem="digits_three", tasks=list(TASKS))
    assert equal.weights == pytest.approx((1 / 3,) * 3)
    for kw, says in [
        ({"tasks": list(TASKS), "weights": [0.5, 0.5]}, "2 weights for 3 tasks"),
        ({"tasks": list(TASKS), "weights": {"digit": 1, "value": 1}}, "missing"),
        ({"tasks": list(TASKS), "batch_sizes": {"nope": 4}}, "batch_sizes names"),
        ({"tasks": list(TASKS), "batch_size_b": 4}, "batch_size_b"),
        ({"tasks": list(TASKS), "weight_schedule": {"type": "linear", "target": "a"}}, "weight_schedule.target"),
    ]:
        with pytest.raises(pydantic.ValidationError, match=says):
            _cfg(**kw)
    sized = _cfg(batch_sizes={"value": 20})
    assert [sized.batch_size_of(t) for t in TASKS] == [8, 20, 8]


def test_a_two_task_config_dumps_as_before_and_a_named_one_round_trips() -> None:
    """Records of two-task studies stay the same: no ``tasks``/``batch_sizes`` keys unless set."""
    two = DualLossConfig(problem="digits_pair", batch_size_b=8)
    dump = two.model_dump(mode="json")
    assert "tasks" not in dump and "batch_sizes" not in dump
    assert DualLossConfig.model_validate(dump) == two
    named = _cfg(batch_sizes={"value": 20})
    again = DualLossConfig.model_validate(named.model_dump(mode="json"))
    assert again == named and again.tasks == ORDER


# --- the loop -------------------------------------------------------------------------------------


@pytest.mark.parametrize("mixing", ["cycle", "zip", "accumulate"])
def test_one_step_is_the_weighted_sum_of_every_tasks_gradient(mixing: str) -> None:
    """One SGD step (lr 1, each task's whole training set as its batch) moves the parameters by exactly
    Σ_i w_i ∇L_i, the weights matched to the tasks by name; metrics are named by task."""
    problem = _three(double=True)
    built: list[torch.nn.Module] = []
    initial: list[dict[str, torch.Tensor]] = []

    def make() -> torch.nn.Module:
        model = problem.make_model()
        built.append(model)
        initial.append(copy.deepcopy(model.state_dict()))
        return model

    sizes = {name: len(task.train[1]) for name, task in problem.tasks.items()}
    cfg = _cfg(mixing=mixing, batch_sizes=sizes, epochs=1, optimizer={"type": "sgd", "lr": 1.0, "momentum": 0.0})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        metrics = train(cfg, problem=dataclasses.replace(problem, make_model=make))
    reference = copy.deepcopy(built[0])
    reference.load_state_dict(initial[0])
    names, params = zip(*reference.named_parameters(), strict=True)
    expected = {n: torch.zeros_like(p) for n, p in zip(names, params, strict=True)}
    losses = {}
    for name, weight in zip(cfg.tasks, cfg.weights, strict=True):
        w = torch.tensor(weight, dtype=torch.float32).item()  # the loop's weight table is float32
        task = problem.tasks[name]
        loss = task.loss(_output(reference, task, task.train[0]), task.train[1])
        losses[name] = loss.item()
        for n, g in zip(names, torch.autograd.grad(loss, params, allow_unused=True), strict=True):
            if g is not None:  # another task's head
                expected[n] += w * g
    after = dict(built[0].named_parameters())
    for n, g in expected.items():
        torch.testing.assert_close(initial[0][n] - after[n].detach(), g, rtol=1e-10, atol=1e-12, msg=n)
    for name in TASKS:
        assert metrics[f"train_{name}_loss"] == pytest.approx(losses[name], rel=1e-6)  # metrics: float32
        assert metrics[f"weight_{name}"] == pytest.approx(cfg.weights[cfg.tasks.index(name)], rel=1e-6)
    assert metrics["val_total_loss"] == pytest.approx(sum(metrics[f"val_{t}_loss"] for t in TASKS), rel=1e-6)
    assert set(metrics) == set(logged_metrics(problem.metric_names()))
    assert {"val_digit_acc", "val_value_mae", "val_parity_acc"} <= set(metrics)


def test_a_group_of_three_task_members_equals_their_standalone_runs() -> None:
    """``parallel_trials`` with three tasks: every epoch's metrics and parameters of each member equal
    its own run's to 1e-12 (float64), the members differing in weights (by name, not in the problem's
    task order), lr and seed."""
    problem = _three(double=True)
    cfgs = [
        _cfg(seed=1, weights={"parity": 0.1, "digit": 0.6, "value": 0.3}, optimizer={"type": "adam", "lr": 0.01},
             batch_sizes={"value": 16}, weight_schedule={"type": "linear", "target": "parity", "start": 0.2}),
        _cfg(seed=2, weights={"parity": 0.8, "digit": 0.1, "value": 0.1}, optimizer={"type": "adam", "lr": 0.03},
             batch_sizes={"value": 16}, weight_schedule={"type": "linear", "target": "parity", "start": 0.2}),
    ]  # fmt: skip
    assert why_not(cfgs, problem) == ""
    grouped = [Recorder() for _ in cfgs]
    train_group(cfgs, [r.report for r in grouped], problem=problem, checkpoints=[r.checkpoint for r in grouped])
    for cfg, rec in zip(cfgs, grouped, strict=True):
        alone = Recorder()
        train(cfg, alone.report, problem=problem, checkpoint=alone.checkpoint)
        assert len(alone.metrics) == len(rec.metrics) == cfg.epochs
        for want, got in zip(alone.metrics, rec.metrics, strict=True):
            assert set(want) == set(got) and "weight_parity" in want
            for key in want.keys() - {"peak_memory_mb"}:
                assert math.isclose(want[key], got[key], rel_tol=1e-12, abs_tol=1e-12), key
        for want, got in zip(alone.params, rec.params, strict=True):
            for key in want:
                torch.testing.assert_close(want[key], got[key], rtol=1e-12, atol=1e-12)


def test_a_config_whose_tasks_are_not_the_problems_is_refused_with_what_to_set() -> None:
    """Training a three-task problem with the default tasks (a, b) says which tasks to name."""
    cfg = DualLossConfig(problem={"name": "digits_three", "options": SMALL}, seed=0, data_seed=0, device="cpu")
    with pytest.raises(ValueError, match=r"set objective.tasks: \[digit, value, parity\]"):
        train(cfg, problem=_three())
