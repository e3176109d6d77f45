"""Repeats (objectives/repeats.py, objectives.loops.train): a configuration trained with S seeds reports, every
epoch, the exact mean of its seeds' standalone runs — vectorized or one after another — and stops every seed
when its reporter raises."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from typing import Any

import pytest
import torch

from objectives import dual_loss, repeats
from objectives.config import AlternatingConfig
from objectives.helpers import NonFiniteLossError
from objectives.loops import LOOPS, train, why_not
from tests.objectives.test_batched import F64, cfg, problem


class Stop(Exception):
    """What a reporter raises to stop training (pruning, early stopping)."""


def _standalone(c: Any, p: Any) -> list[dict[str, float]]:
    """Each epoch's metrics of one seed trained alone."""
    epochs: list[dict[str, float]] = []
    dual_loss.train(c, lambda e, m: epochs.append(dict(m)), problem=p)
    return epochs


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=F64["rtol"], abs_tol=F64["atol"])


def test_seeds_are_the_configs_own_then_derived_distinct_and_stable() -> None:
    c = cfg(seed=11, repeats=4)
    seeds = repeats.seeds(c)
    assert seeds[0] == 11 and len(set(seeds)) == 4
    assert repeats.seeds(cfg(seed=11, repeats=4)) == seeds  # the same on every run
    assert repeats.seeds(cfg(seed=12, repeats=4))[1:] != seeds[1:]
    assert [m.seed for m in repeats.members(c)] == seeds and all(m.repeats == 1 for m in repeats.members(c))


@pytest.mark.parametrize("weighting", ["static", "gradnorm"])  # vectorized / one after another (why_not)
def test_every_epoch_reports_the_mean_of_the_seeds_standalone_runs(weighting: str) -> None:
    p = problem()
    c = cfg(repeats=3, epochs=3, weighting={"type": weighting})
    vectorized = not why_not(repeats.members(c), p)
    assert vectorized == (weighting == "static")
    alone = [_standalone(m, p) for m in repeats.members(c)]
    seen: list[tuple[int, dict[str, float]]] = []
    last = train(c, lambda e, m: seen.append((e, dict(m))), problem=p)
    assert [e for e, _ in seen] == [0, 1, 2]
    for epoch, metrics in seen:
        for name in alone[0][epoch]:
            if name == "peak_memory_mb":  # a group's own peak (see test_mean_metrics)
                continue
            values = [run[epoch][name] for run in alone]
            assert _close(metrics[name], sum(values) / 3), (epoch, name)
            if name.startswith("val_"):
                assert _close(metrics[f"{name}_sd"], statistics.stdev(values)), (epoch, name)
            else:
                assert f"{name}_sd" not in metrics
    assert last == seen[-1][1]


@pytest.mark.parametrize("weighting", ["static", "gradnorm"])
def test_checkpoints_get_the_mean_and_the_first_seeds_models(weighting: str) -> None:
    """The first seed's model at each epoch (its parameters as the first seed alone has them then), with the
    mean's metrics, before the report of the same epoch."""
    p = problem()
    c = cfg(repeats=2, epochs=2, weighting={"type": weighting})
    first: list[dict[str, torch.Tensor]] = []

    def keep(epoch: int, metrics: Mapping[str, float], models: Mapping[str, torch.nn.Module]) -> None:
        first.append({k: v.detach().clone() for k, v in models["model"].state_dict().items()})

    dual_loss.train(repeats.members(c)[0], problem=p, checkpoint=keep)
    calls: list[tuple[str, int, Any]] = []

    def save(epoch: int, metrics: Mapping[str, float], models: Mapping[str, torch.nn.Module]) -> None:
        state = {k: v.detach().clone() for k, v in models["model"].state_dict().items()}
        calls.append(("save", epoch, (dict(metrics), state)))

    train(c, lambda e, m: calls.append(("report", e, dict(m))), problem=p, checkpoint=save)
    assert [(kind, e) for kind, e, _ in calls] == [("save", 0), ("report", 0), ("save", 1), ("report", 1)]
    for (_, epoch, (metrics, state)), (_, _, reported) in zip(calls[::2], calls[1::2], strict=True):
        assert metrics == reported
        for name, value in state.items():
            torch.testing.assert_close(value, first[epoch][name], **F64)


@pytest.mark.parametrize("weighting", ["static", "gradnorm"])
def test_what_the_reporter_raises_stops_every_seed(weighting: str) -> None:
    """Pruned at epoch 1 of 6: the error comes out, no later epoch is reported, and no seed trains on: in a
    group, members that reported epoch 1 before the mean was known leave at their next report (epoch 2);
    one after another, the first seed (trained last) stops at epoch 1."""
    p = problem()
    c = cfg(repeats=3, epochs=6, weighting={"type": weighting})
    trained: dict[int, list[int]] = {}  # each seed's epochs, as its own reporter saw them

    def counted(seed: int, rep: Any) -> Any:
        def wrapped(e: int, m: Mapping[str, float]) -> None:
            trained.setdefault(seed, []).append(e)
            if rep is not None:
                rep(e, m)

        return wrapped

    def one(cfg_: Any, rep: Any, problem: Any = None, checkpoint: Any = None) -> dict[str, float]:
        return dual_loss.train(cfg_, counted(cfg_.seed, rep), problem=problem, checkpoint=checkpoint)

    def group(cfgs: Any, reps: Any, problem: Any = None, checkpoints: Any = None) -> list[Any]:
        wrapped = [counted(m.seed, r) for m, r in zip(cfgs, reps, strict=True)]
        return LOOPS["dual_loss"].train_group(cfgs, wrapped, problem=problem, checkpoints=checkpoints)

    reported: list[int] = []

    def report(epoch: int, metrics: Mapping[str, float]) -> None:
        reported.append(epoch)
        if epoch == 1:
            raise Stop

    vectorized = not why_not(repeats.members(c), p)
    with pytest.raises(Stop):
        repeats.train_repeats(
            c, report, problem=p, checkpoint=None, train=one, train_group=group if vectorized else None
        )
    assert reported == [0, 1]
    first, *others = repeats.seeds(c)
    if vectorized:
        assert trained[first] == [0, 1, 2] and all(trained[s] == [0, 1, 2] for s in others[:-1])
        assert trained[others[-1]] == [0, 1]  # the member whose report made the mean
    else:
        assert trained[first] == [0, 1] and all(trained[s] == list(range(6)) for s in others)


def test_a_seed_that_diverges_fails_the_configuration() -> None:
    """One member's non-finite loss (a vectorized group returns it as that member's result) is raised."""
    c = cfg(repeats=3, epochs=2)
    boom = NonFiniteLossError("val_a_loss is nan at epoch 0")

    def group(cfgs: Any, reports: Any, problem: Any = None, checkpoints: Any = None) -> list[Any]:
        for m, report in enumerate(reports):
            if m != 1:
                report(0, {"val_total_loss": 1.0})
        return [{"val_total_loss": 1.0}, boom, {"val_total_loss": 1.0}]

    with pytest.raises(NonFiniteLossError) as info:
        repeats.train_repeats(c, None, problem=None, checkpoint=None, train=dual_loss.train, train_group=group)
    assert info.value is boom


def test_the_plain_loops_refuse_repeats_and_groups_of_trials_with_repeats_are_refused() -> None:
    p = problem()
    with pytest.raises(ValueError, match=r"objectives\.loops\.train"):
        dual_loss.train(cfg(repeats=2), problem=p)
    assert "repeats" in why_not([cfg(repeats=2), cfg(repeats=2, seed=1)], p)
    assert not why_not([cfg(), cfg(seed=1)], p)


def test_the_alternating_loop_reports_the_mean_too() -> None:
    c = AlternatingConfig(
        problem={"name": "digits_codes", "options": {"n_train": 200}},
        epochs=2, batch_size=16, seed=3, data_seed=0, device="cpu", repeats=2,
    )  # fmt: skip
    built = LOOPS["alternating"]
    alone = []
    for m in repeats.members(c):
        epochs: list[dict[str, float]] = []
        built.train(m, lambda e, x, into=epochs: into.append(dict(x)))
        alone.append(epochs)
    seen: list[dict[str, float]] = []
    train(c, lambda e, m: seen.append(dict(m)))
    for epoch, metrics in enumerate(seen):
        for name in alone[0][epoch]:
            if name == "peak_memory_mb":
                continue
            want = (alone[0][epoch][name] + alone[1][epoch][name]) / 2
            assert math.isclose(metrics[name], want, rel_tol=1e-5, abs_tol=1e-6), (epoch, name)


def test_repeats_is_bounded_and_one_by_default() -> None:
    assert cfg().repeats == 1
    for bad in (0, 65):
        with pytest.raises(ValueError, match="repeats"):
            cfg(repeats=bad)


def test_mean_metrics_means_each_metric_spreads_the_validation_ones_and_keeps_the_highest_peak() -> None:
    rows = [{"val_a_loss": 1.0, "train_a_loss": 4.0, "peak_memory_mb": 10.0},
            {"val_a_loss": 2.0, "train_a_loss": 6.0, "peak_memory_mb": 30.0},
            {"val_a_loss": 6.0, "train_a_loss": 8.0, "peak_memory_mb": 20.0}]  # fmt: skip
    assert repeats.mean_metrics(rows) == {
        "val_a_loss": 3.0, "val_a_loss_sd": statistics.stdev([1.0, 2.0, 6.0]), "train_a_loss": 6.0,
        "peak_memory_mb": 30.0,
    }  # fmt: skip


def test_in_a_group_a_seed_that_diverges_stops_the_others_one_epoch_on() -> None:
    """Member 1 diverges at epoch 1 of 6: its error is the configuration's, and the other seeds stop at their
    next report (epoch 2) instead of training to the end unreported."""
    c = cfg(repeats=3, epochs=6)
    assert not why_not(repeats.members(c), problem())
    second = repeats.seeds(c)[1]
    trained: dict[int, list[int]] = {}
    boom = NonFiniteLossError("val_a_loss is nan at epoch 1")

    def group(cfgs: Any, reps: Any, problem: Any = None, checkpoints: Any = None) -> list[Any]:
        def counted(seed: int, rep: Any) -> Any:
            def wrapped(e: int, m: Mapping[str, float]) -> None:
                trained.setdefault(seed, []).append(e)
                if seed == second and e == 1:
                    raise boom  # as the loop's finiteness check would, before the report
                rep(e, m)

            return wrapped

        wrapped = [counted(m.seed, r) for m, r in zip(cfgs, reps, strict=True)]
        return LOOPS["dual_loss"].train_group(cfgs, wrapped, problem=problem, checkpoints=checkpoints)

    reported: list[int] = []
    with pytest.raises(NonFiniteLossError) as info:
        repeats.train_repeats(
            c, lambda e, m: reported.append(e), problem=problem(), checkpoint=None, train=dual_loss.train,
            train_group=group,
        )  # fmt: skip
    assert info.value is boom and reported == [0]
    assert trained[second] == [0, 1] and all(t == [0, 1, 2] for s, t in trained.items() if s != second)


def test_one_after_another_the_seeds_trained_first_are_progress() -> None:
    """The seeds trained before the first report nothing; the reporter's ``progress`` (the runner's watchdog
    clock) hears each of their epochs, so a ``stall_timeout`` does not take a healthy trial for a hung one."""
    p = problem()
    c = cfg(repeats=3, epochs=2, weighting={"type": "gradnorm"})
    assert why_not(repeats.members(c), p)  # one after another
    heard: list[tuple[str, int]] = []

    def report(epoch: int, metrics: Mapping[str, float]) -> None:
        heard.append(("report", epoch))

    train(c, report, problem=p, progress=lambda epoch: heard.append(("progress", epoch)))
    assert heard == [("progress", 0), ("progress", 1)] * 2 + [("report", 0), ("report", 1)]


def test_a_group_out_of_memory_before_its_first_report_trains_one_after_another() -> None:
    """S models need S× the memory of one: a group that runs out of it before reporting anything falls back
    to the seeds one after another (with a warning naming repeats), giving the exact mean; once an epoch was
    reported (the mean seen by pruning), the error is the trial's."""
    p = problem()
    c = cfg(repeats=2, epochs=2)
    alone = [_standalone(m, p) for m in repeats.members(c)]

    def too_big(cfgs: Any, reports: Any, problem: Any = None, checkpoints: Any = None) -> list[Any]:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    seen: list[dict[str, float]] = []
    with pytest.warns(UserWarning, match=r"objective\.repeats: 2 seeds as one vectorized group ran out of memory"):
        repeats.train_repeats(
            c, lambda e, m: seen.append(dict(m)), problem=p, checkpoint=None, train=dual_loss.train,
            train_group=too_big,
        )  # fmt: skip
    assert len(seen) == 2
    assert _close(seen[-1]["val_total_loss"], (alone[0][-1]["val_total_loss"] + alone[1][-1]["val_total_loss"]) / 2)

    def late(cfgs: Any, reports: Any, problem: Any = None, checkpoints: Any = None) -> list[Any]:
        for report in reports:
            report(0, {"val_total_loss": 1.0})
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(torch.cuda.OutOfMemoryError):
        repeats.train_repeats(c, None, problem=p, checkpoint=None, train=dual_loss.train, train_group=late)
