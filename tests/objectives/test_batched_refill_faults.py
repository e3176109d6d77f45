"""Faults while a vectorized group's rows are refilled (objectives.batched.slots): a member that leaves in the
middle of an accumulation group, a joiner that cannot be built, an error while ends are told. Each is that
member's own: the others train on exactly as their standalone runs."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch

from objectives.batched.slots import Joiner
from objectives.loops import train_group
from tests.objectives.test_batched import F64, Recorder, assert_same, members, problem
from tests.objectives.test_batched_alternating import members as alternating_members
from tests.objectives.test_batched_alternating import problem64
from tests.objectives.test_batched_refill import Refills, alone, variant


def test_a_member_that_diverges_inside_an_accumulation_group_leaves_the_others_as_alone() -> None:
    """grad_accum_steps 3, epochs of 48 steps: the diverging joiner's running-loss check (its step 31) falls
    inside an accumulation group, so the group's pending gradients still hold its row when it leaves; the
    other member goes on exactly as its standalone run."""
    p = problem(torch.float64)
    first = [
        c.model_copy(update={"epochs": 2, "batch_size": 2, "grad_clip": None, "grad_accum_steps": 3})
        for c in members("sgd")[:2]
    ]
    bad = variant(first[0], 40, 1e8, (0.5, 0.5))
    recs = [Recorder(0), Recorder(), Recorder()]
    refills = Refills([(bad, recs[2])], 2)
    results = refills.train(first, recs, p)
    _, expected = alone(bad, p)
    assert str(results[2]) == str(expected)
    assert_same(alone(first[1], p)[0], recs[1], F64)


def test_without_refill_a_member_that_diverges_inside_an_accumulation_group_leaves_the_other_as_alone() -> None:
    """The same without refill (the defect predates it): a first member diverges at step 31, mid-accumulation."""
    p = problem(torch.float64)
    first = [
        c.model_copy(update={"epochs": 2, "batch_size": 2, "grad_clip": None, "grad_accum_steps": 3})
        for c in members("sgd")[:2]
    ]
    first[0] = variant(first[0], 40, 1e8, (0.5, 0.5))
    recs = [Recorder(), Recorder()]
    results = train_group(first, [r.report for r in recs], problem=p, checkpoints=[r.checkpoint for r in recs])
    _, expected = alone(first[0], p)
    assert str(results[0]) == str(expected)
    assert_same(alone(first[1], p)[0], recs[1], F64)


def test_a_joiner_whose_model_cannot_be_built_ends_alone() -> None:
    """Building the joiner's model raises (say, out of memory on the device): that joiner ends with the error,
    told through ``on_end``; the member training beside it goes on exactly as its standalone run."""
    p = problem(torch.float64)
    first = [c.model_copy(update={"epochs": 3}) for c in members("adam")[:2]]
    joiner = variant(first[0], 60, 0.01, (0.5, 0.5))
    recs = [Recorder(0), Recorder(), Recorder()]
    handed = [False]
    make = p.make_model

    def make_model() -> torch.nn.Module:
        if handed[0]:
            raise RuntimeError("CUDA out of memory (a joiner's model)")
        return make()

    broken = dataclasses.replace(p, make_model=make_model)
    ends: dict[int, Any] = {}

    def refill(fits: Any, free: int) -> Joiner | None:
        if handed[0]:
            return None
        handed[0] = True
        return Joiner(joiner, recs[2].report, recs[2].checkpoint)

    results = train_group(
        first,
        [r.report for r in recs[:2]],
        problem=broken,
        checkpoints=[r.checkpoint for r in recs[:2]],
        refill=refill,
        on_end=lambda i, r: ends.__setitem__(i, r),
    )
    assert isinstance(results[2], RuntimeError) and not recs[2].metrics
    assert isinstance(results[1], dict) and sorted(ends) == [0, 1, 2]
    assert_same(alone(first[1], p)[0], recs[1], F64)


@pytest.mark.parametrize("loop", ["dual_loss", "alternating"])
def test_an_error_telling_one_end_comes_after_every_member_that_ended_with_it_is_told(loop: str) -> None:
    """Every member trains its last epoch at once; telling the first raises (a Ctrl-C recorded meanwhile): each
    of the others is still told its own metrics, and the error comes after the last."""
    cs: list[Any] = members("sgd") if loop == "dual_loss" else alternating_members("alternate", "adam")
    p = problem(torch.float64) if loop == "dual_loss" else problem64()
    told: list[tuple[int, Any]] = []

    def on_end(index: int, result: Any) -> None:
        told.append((index, result))
        if len(told) == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_group(cs, [None] * 3, problem=p, on_end=on_end)
    assert sorted(i for i, _ in told) == [0, 1, 2]
    assert all(isinstance(r, dict) and "val_total_loss" in r for _, r in told), told
