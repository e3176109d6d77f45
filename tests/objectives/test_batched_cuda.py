"""The vectorized loops on a GPU: each member equals its standalone run there too (float32 round-off).

The alternating comparison runs for every mode of the loop (:data:`MODES`, read from the config's
``mode`` field, so a new mode is included), and the same comparison also runs on the CPU, so its
parametrization and member configs are exercised on machines without a GPU.
"""

from __future__ import annotations

import math
import typing

import pytest
import torch

from objectives.alternating import train as train_alternating
from objectives.config import AlternatingConfig, DualLossConfig
from objectives.dual_loss import train as train_dual
from objectives.loops import train_group
from objectives.problems import CoupledProblem, Problem, build_problem

needs_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device: the vectorized loops on the GPU"
)
MODES = typing.get_args(AlternatingConfig.model_fields["mode"].annotation)


def close(a: dict[str, float], b: dict[str, float]) -> None:
    for key in a:
        if key != "peak_memory_mb":
            assert math.isclose(a[key], b[key], rel_tol=1e-4, abs_tol=1e-5), (key, a[key], b[key])


@needs_cuda
def test_dual_loss_members_on_cuda() -> None:
    options = {"n_a": 200, "n_b": 40, "n_val": 100, "hidden": 16}
    p = build_problem("digits_pair", options, 0, "dual_loss", Problem).to("cuda")
    cs = [
        DualLossConfig(
            problem={"name": "digits_pair", "options": options},
            seed=i,
            data_seed=0,
            device="cuda",
            epochs=3,
            batch_size=32,
            weights=(0.2 + 0.3 * i, 0.5),
            optimizer={"type": "adamw", "lr": 0.003 * (i + 1), "weight_decay": 0.01},
            grad_clip=(None, 1.0, 0.2)[i],
        )
        for i in range(3)
    ]
    results = train_group(cs, [None] * 3, problem=p)
    for c, r in zip(cs, results, strict=True):
        close(train_dual(c, problem=p), r)


def _alternating_members_match(mode: str, device: str) -> None:
    """Train three alternating members of one mode as a group on ``device`` and compare each with its
    standalone run there.

    Args:
        mode: The alternating mode every member uses (a group has one mode).
        device: ``cuda`` or ``cpu``.
    """
    options = {"n_train": 120, "code_dim": 4, "hidden": 8}
    p = build_problem("digits_codes", options, 0, "alternating", CoupledProblem).to(device)
    cs = [
        AlternatingConfig(
            problem={"name": "digits_codes", "options": options},
            seed=i,
            data_seed=0,
            device=device,
            epochs=3,
            batch_size=32,
            mode=mode,
            # joint mode needs one optimizer type and LR schedule for both models; the LRs are each member's own
            model_a={"optimizer": {"type": "sgd", "lr": 0.05 * (i + 1), "schedule": {"type": "cosine"}}},
            model_b={"optimizer": {"type": "sgd", "lr": 0.1, "schedule": {"type": "cosine"}}},
        )
        for i in range(3)
    ]
    results = train_group(cs, [None] * 3, problem=p)
    for c, r in zip(cs, results, strict=True):
        assert not isinstance(r, BaseException), r
        close(train_alternating(c, problem=p), r)


@needs_cuda
@pytest.mark.parametrize("mode", MODES)
def test_alternating_members_on_cuda(mode: str) -> None:
    """Every alternating mode: each member of a group equals its standalone run on the GPU."""
    _alternating_members_match(mode, "cuda")


@pytest.mark.parametrize("mode", MODES)
def test_alternating_members_on_cpu(mode: str) -> None:
    """The GPU comparison's parametrization and members, on the CPU: every mode of the loop, so a
    mode added to the config runs in the GPU test too and its member configs are known to validate."""
    _alternating_members_match(mode, "cpu")


class _Stop(Exception):
    """What a pruned member's reporter raises."""


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=needs_cuda)])
def test_a_member_joining_a_running_group_equals_its_standalone_run(device: str) -> None:
    """Slot refill on the device: member 0 is stopped after its first epoch, a new member takes its row at
    its own epoch 0 beside member 1's epoch 1; each ends as its standalone run does (float32 round-off)."""
    from objectives.batched.slots import Joiner

    options = {"n_a": 200, "n_b": 40, "n_val": 100, "hidden": 16}
    p = build_problem("digits_pair", options, 0, "dual_loss", Problem).to(device)
    cs = [
        DualLossConfig(
            problem={"name": "digits_pair", "options": options},
            seed=10 + i,
            data_seed=0,
            device=device,
            epochs=3,
            batch_size=32,
            weights=(0.2 + 0.3 * i, 0.5),
            optimizer={"type": "adam", "lr": 0.003 * (i + 1)},
        )
        for i in range(3)
    ]
    seen: list[list[dict[str, float]]] = [[], [], []]

    def reporter(i: int) -> typing.Callable[[int, dict[str, float]], None]:
        def report(epoch: int, metrics: dict[str, float]) -> None:
            seen[i].append(metrics)
            if i == 0 and epoch == 0:
                raise _Stop

        return report

    joiners = [Joiner(cs[2], reporter(2), None)]
    ends: list[int] = []
    results = train_group(
        cs[:2],
        [reporter(0), reporter(1)],
        problem=p,
        refill=lambda fits, free: joiners.pop() if joiners and fits(cs[2]) else None,
        on_end=lambda i, _r: ends.append(i),
    )
    assert isinstance(results[0], _Stop) and sorted(ends) == [0, 1, 2] and len(seen[2]) == 3
    alone: list[dict[str, float]] = []

    def first_epoch_only(_epoch: int, metrics: dict[str, float]) -> None:
        alone.append(metrics)
        raise _Stop

    with pytest.raises(_Stop):
        train_dual(cs[0], first_epoch_only, problem=p)
    close(alone[0], seen[0][0])
    for i in (1, 2):
        close(train_dual(cs[i], problem=p), results[i])
