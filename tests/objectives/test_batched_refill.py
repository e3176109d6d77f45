"""Freed rows of a vectorized group taken by new members (objectives.batched.slots): each member, whenever it
joined, trains exactly as its standalone run (every epoch's metrics and parameters, to 1e-12 in float64)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from objectives.batched.optim import BatchedOptimizer
from objectives.batched.slots import JoinableOptimizer, Joiner
from objectives.config import DualLossConfig, OptimizerConfig
from objectives.dual_loss import train
from objectives.helpers import NonFiniteLossError
from objectives.loops import train_group
from tests.objectives.test_batched import F64, Recorder, Stop, assert_same, cfg, members, problem
from tests.objectives.test_batched_alternating import members as alternating_members
from tests.objectives.test_batched_alternating import problem64


class Refills:
    """A queue of joiners handed out one per freed row, with every end and every ask in order."""

    def __init__(self, joiners: list[tuple[DualLossConfig, Recorder]], k: int) -> None:
        self.queue, self.k = list(joiners), k
        self.events: list[tuple[str, int]] = []
        self.started, self.ended = k, 0

    def __call__(self, fits: Any, free: int) -> Joiner | None:
        assert free == self.k - (self.started - self.ended)  # the rows free now
        self.events.append(("refill", self.started - self.ended))
        if not self.queue:
            return None
        c, rec = self.queue.pop(0)
        self.started += 1
        return Joiner(c, rec.report, rec.checkpoint)

    def on_end(self, index: int, result: Any) -> None:
        self.ended += 1
        self.events.append(("end", index))

    def train(self, first: list[DualLossConfig], recs: list[Recorder], p: Any) -> list[Any]:
        """``train_group`` of the ``first`` members (their recorders: ``recs``' first), refilled from the queue."""
        k = len(first)
        reports, checkpoints = [r.report for r in recs[:k]], [r.checkpoint for r in recs[:k]]
        return train_group(first, reports, problem=p, checkpoints=checkpoints, refill=self, on_end=self.on_end)


def alone(c: DualLossConfig, p: Any, stop_at: int | None = None) -> tuple[Recorder, Any]:
    rec = Recorder(stop_at)
    try:
        return rec, train(c, rec.report, problem=p, checkpoint=rec.checkpoint)
    except (Stop, NonFiniteLossError) as e:
        return rec, e


def variant(c: DualLossConfig, seed: int, lr: float, weights: tuple[float, float]) -> DualLossConfig:
    return c.model_copy(
        update={"seed": seed, "weights": weights, "optimizer": c.optimizer.model_copy(update={"lr": lr})}
    )


@pytest.mark.parametrize("kind", ["sgd", "adam", "adamw"])
def test_members_that_join_mid_group_equal_their_standalone_runs(kind: str) -> None:
    """Three members of 4 epochs; two are pruned (epochs 0 and 1): three joiners take their rows, each at its
    own epoch 0 beside members at later epochs (one joiner pruned too, its row taken again); every member,
    first or joined, equals its standalone run (stopped where it was stopped)."""
    p = problem(torch.float64)
    first = [c.model_copy(update={"epochs": 4}) for c in members(kind)]
    late = [
        variant(
            first[i % 3], 20 + i, first[i % 3].optimizer.lr * (1.5 - 0.4 * i), ((0.3, 0.7), (1.1, 0.2), (0.6, 0.6))[i]
        )
        for i in range(3)
    ]
    cs = first + late
    stops = {0: 0, 1: 1, 3: 1}  # by member: the epoch its reporter raises at
    recs = [Recorder(stops.get(i)) for i in range(len(cs))]
    log: list[tuple[int, int]] = []  # (member, epoch) in the order reported
    for i, rec in enumerate(recs):
        report = rec.report
        rec.report = lambda e, m, i=i, report=report: (log.append((i, e)), report(e, m))[1]  # type: ignore[method-assign]
    refills = Refills(list(zip(late, recs[3:], strict=True)), 3)
    results = refills.train(first, recs, p)
    assert len(results) == 6
    for i, c in enumerate(cs):
        ref, expected = alone(c, p, stops.get(i))
        assert_same(ref, recs[i], F64)
        assert type(results[i]) is type(expected)
        if isinstance(expected, dict):
            assert results[i] == recs[i].metrics[-1]
    # Joined at the ends of group epochs 0 and 1: their epoch 0 beside member 2's epochs 1 and 2; never 4 at once.
    assert log.index((2, 1)) < log.index((3, 0)) < log.index((2, 2)) < log.index((4, 0)) < log.index((2, 3))
    assert all(live < 3 for what, live in refills.events if what == "refill")
    # Each end told before the freed row is asked for; every member's end told once.
    assert refills.events[0] == ("end", 0) and refills.events[1][0] == "refill"
    assert sorted(i for what, i in refills.events if what == "end") == list(range(6))


def test_members_that_finish_free_their_rows() -> None:
    """Members that train all their epochs leave; the next ones train in their rows, from their own epoch 0."""
    p = problem(torch.float64)
    first = [c.model_copy(update={"epochs": 2}) for c in members("adam")[:2]]
    late = [variant(first[i], 30 + i, 0.004 * (i + 1), (0.4, 0.9)) for i in range(2)]
    recs = [Recorder() for _ in range(4)]
    refills = Refills(list(zip(late, recs[2:], strict=True)), 2)
    results = refills.train(first, recs, p)
    for c, rec, result in zip(first + late, recs, results, strict=True):
        assert_same(alone(c, p)[0], rec, F64)
        assert result == rec.metrics[-1]
    assert [e for e in refills.events if e[0] == "end"] == [("end", 0), ("end", 1), ("end", 2), ("end", 3)]


def test_a_joiner_that_diverges_stops_at_its_own_step() -> None:
    """A joiner's running-loss check counts its own steps (epochs of 48 steps here): it stops with the epoch and
    step of its standalone run, not the group's."""
    p = problem(torch.float64)
    first = [c.model_copy(update={"epochs": 2, "batch_size": 2, "grad_clip": None}) for c in members("sgd")[:2]]
    bad = first[0].model_copy(update={"seed": 40, "optimizer": first[0].optimizer.model_copy(update={"lr": 1e8})})
    recs = [Recorder(0), Recorder(), Recorder()]
    refills = Refills([(bad, recs[2])], 2)
    checkpoints = [r.checkpoint for r in recs[:2]]
    results = train_group(
        first, [r.report for r in recs[:2]], problem=p, checkpoints=checkpoints, refill=refills, on_end=refills.on_end
    )
    _, expected = alone(bad, p)
    assert (
        isinstance(results[2], NonFiniteLossError)
        and str(expected) == "a training loss is not finite at epoch 0, step 31"
    )
    assert str(results[2]) == str(expected)
    assert_same(alone(first[1], p)[0], recs[1], F64)


def test_a_joiner_that_does_not_fit_is_not_trained() -> None:
    """``fits`` says no to a config the group cannot take; one handed over anyway ends at once with why, untrained,
    and its row is asked for again."""
    p = problem(torch.float64)
    first = members("adam")[:2]
    other = variant(first[0], 50, 0.01, (0.5, 0.5)).model_copy(update={"batch_size": 8})
    good = variant(first[0], 51, 0.01, (0.5, 0.5))
    answers: list[bool] = []
    recs = [Recorder(0), Recorder(), Recorder(), Recorder()]
    queue = [(other, recs[2]), (good, recs[3])]

    def refill(fits: Any, free: int) -> Joiner | None:
        if not queue:
            return None
        c, rec = queue.pop(0)
        answers.append(fits(c))
        return Joiner(c, rec.report, rec.checkpoint)

    results = train_group(first, [r.report for r in recs[:2]], problem=p, refill=refill)
    assert answers == [False, True]
    assert isinstance(results[2], ValueError) and "batch_size" in str(results[2]) and not recs[2].metrics
    assert_same(alone(good, p)[0], recs[3], F64)


@pytest.mark.parametrize("kind", ["sgd", "adam", "adamw"])
def test_a_joined_optimizer_row_steps_as_torch_optim(kind: str) -> None:
    """A member that joins after three steps gets torch's first step (SGD's buffer, Adam's bias corrections)."""
    torch.manual_seed(0)
    cfgs = [
        OptimizerConfig(type=kind, lr=0.01, weight_decay=0.1, momentum=0.9, betas=(0.8, 0.99)),
        OptimizerConfig(type=kind, lr=0.003, weight_decay=0.0, momentum=0.5, betas=(0.5, 0.9)),
    ]
    starts = torch.randn(2, 3, 4, dtype=torch.float64)
    grads = torch.randn(6, 2, 3, 4, dtype=torch.float64)
    params = {"w": starts[:1].clone()}
    opt = JoinableOptimizer(cfgs[:1], params)
    for step in range(6):
        if step == 3:
            params["w"] = torch.cat([params["w"], starts[1:]])
            opt.join(cfgs[1])
        k = params["w"].shape[0]
        row = {key: t[0] for key, t in opt.tables([[c.lr for c in cfgs[:k]]], torch.device("cpu")).items()}
        opt.step({"w": grads[step, :k]}, row)
    for member, first_step in ((0, 0), (1, 3)):
        ref = torch.nn.Parameter(starts[member].clone())
        c = cfgs[member]
        kw = {"lr": c.lr, "weight_decay": c.weight_decay, "foreach": False}
        if kind == "sgd":
            torch_opt: torch.optim.Optimizer = torch.optim.SGD([ref], momentum=c.momentum, **kw)
        else:
            torch_opt = (torch.optim.Adam if kind == "adam" else torch.optim.AdamW)([ref], betas=c.betas, **kw)
        for step in range(first_step, 6):
            ref.grad = grads[step, member].clone()
            torch_opt.step()
        torch.testing.assert_close(params["w"][member], ref.detach(), rtol=1e-12, atol=1e-12)
    assert isinstance(opt, BatchedOptimizer) and opt.counts == [6, 3]


def test_the_alternating_loop_tells_each_end_and_never_asks_to_refill() -> None:
    cs = alternating_members("alternate", "adam")

    def stop(epoch: int, _metrics: Any) -> None:
        if epoch == 0:
            raise Stop

    asked: list[Any] = []
    ends: list[tuple[int, Any]] = []
    reports = [stop, None, None]
    results = train_group(
        cs,
        reports,
        problem=problem64(),
        refill=lambda fits, free: asked.append(free),
        on_end=lambda i, r: ends.append((i, r)),
    )
    assert not asked and sorted(i for i, _ in ends) == [0, 1, 2]
    assert ends[0] == (0, results[0]) and isinstance(results[0], Stop)
    assert dict(ends)[1] == results[1] and isinstance(results[1], dict) and results[1]


def test_without_refill_nothing_changes() -> None:
    """No ``refill``: the group trains its members and ends (``on_end`` alone does not change a result)."""
    p = problem(torch.float64)
    cs = members("sgd")
    plain = train_group(cs, [None] * 3, problem=p)
    ends: dict[int, Any] = {}
    told = train_group(cs, [None] * 3, problem=p, on_end=ends.__setitem__)
    drop = [{k: v for k, v in r.items() if k != "peak_memory_mb"} for r in (*plain, *told)]  # type: ignore[union-attr]
    assert drop[:3] == drop[3:] and ends == dict(enumerate(told))
    assert cfg().epochs == 3


@pytest.mark.parametrize(
    "more",
    [
        {"weighting": {"type": "dwa", "temperature": 1.5}},
        {"weighting": {"type": "rlw"}, "mixing": "accumulate"},
        {"grad_accum_steps": 3},
        {"optimizer.schedule": {"type": "plateau", "patience": 0, "threshold": 0.05}},
    ],
    ids=["dwa", "rlw-accumulate", "accum3", "plateau"],
)
def test_joiners_with_stateful_strategies_schedules_and_accumulation_equal_their_standalone_runs(more: dict) -> None:
    """DWA and RLW (state and a generator of their own), gradient accumulation and the plateau LR schedule: a
    joiner, at its own epoch 0 beside a member at its epoch 1 or 2, equals its standalone run, as do the others."""
    p = problem(torch.float64)

    def with_more(c: DualLossConfig) -> DualLossConfig:
        data = c.model_dump()
        for key, value in more.items():
            if key.startswith("optimizer."):
                data["optimizer"][key.removeprefix("optimizer.")] = value
            else:
                data[key] = value
        return DualLossConfig.model_validate(data)

    first = [with_more(c.model_copy(update={"epochs": 3})) for c in members("adam")[:2]]
    late = [with_more(variant(first[i], 70 + i, 0.004 * (i + 2), (0.3 + 0.2 * i, 0.8))) for i in range(2)]
    stops = {0: 0, 2: 1}
    recs = [Recorder(stops.get(i)) for i in range(4)]
    refills = Refills(list(zip(late, recs[2:], strict=True)), 2)
    results = refills.train(first, recs, p)
    assert len(results) == 4
    for i, c in enumerate(first + late):
        ref, expected = alone(c, p, stops.get(i))
        assert_same(ref, recs[i], F64)
        assert type(results[i]) is type(expected)
