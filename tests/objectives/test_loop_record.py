"""One Loop record: the vectorized form is the record's ``train_group`` (no second registry), the loss
terms a config trains are decided once (``LoopCommon.loss_terms``), and ``objective.data.steps_per_epoch``
is applied by the standalone and the vectorized loops alike."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Literal

import pytest

import objectives
import objectives.batched
from objectives import dual_loss
from objectives.config import AlternatingConfig, DualLossConfig
from objectives.loops import LOOPS, Loop, train_group, why_not
from objectives.problems import Problem
from tests.objectives.group_cases import Recorder, cases, coupled_problem, dual_problem

SOURCE = Path(objectives.__file__).parent


class HalvedConfig(DualLossConfig):
    """A loop registered without a vectorized form."""

    loop: Literal["halved"] = "halved"  # type: ignore[assignment]


@pytest.fixture
def halved(monkeypatch: pytest.MonkeyPatch) -> None:
    record = Loop("halved", dual_loss.train, HalvedConfig, Problem, dual_loss.logged_metrics, dual_loss.test_metrics)
    monkeypatch.setitem(LOOPS, "halved", record)


def _halved_members() -> list[HalvedConfig]:
    first = cases()["dual_loss/adam-constant"]
    return [HalvedConfig.model_validate({**c.model_dump(mode="json"), "loop": "halved"}) for c in first]


@pytest.mark.usefixtures("halved")
def test_a_loop_without_a_vectorized_form_is_refused_for_groups_with_a_reason() -> None:
    """A newly registered loop without ``train_group`` is refused by the group check (its trials then
    train one after another, with the reason as the note) instead of failing every member."""
    cfgs, p = _halved_members(), dual_problem()
    reason = why_not(cfgs, p)  # what sweep's grouping asks
    assert reason == "loop halved has no vectorized form (its Loop record gives no train_group)"
    with pytest.raises(ValueError, match="loop halved has no vectorized form"):
        train_group(cfgs, [None, None], problem=p)


def test_the_record_is_the_only_registry_of_vectorized_loops() -> None:
    from objectives.batched import alternating
    from objectives.batched import dual_loss as batched_dual

    assert not hasattr(objectives.batched, "GROUP_LOOPS")
    assert LOOPS["dual_loss"].train_group is batched_dual.train_group
    assert LOOPS["alternating"].train_group is alternating.train_group
    cfgs = cases()["alternating/joint-plateau"]
    p = coupled_problem()
    assert why_not(cfgs, p) == ""
    results = train_group(cfgs, [None, None], problem=p)
    assert all(isinstance(r, dict) and "val_consistency_loss" in r for r in results)
    # No module of objectives names a loop to pick its group trainer.
    for path in SOURCE.rglob("*.py"):
        assert "GROUP_LOOPS" not in path.read_text(), path


def test_which_losses_a_config_trains_is_decided_once() -> None:
    """``loss_terms``: the loop's losses up to its weights; the consistency term is on with a third
    weight, read as ``"consistency" in cfg.loss_terms`` everywhere, never from a count of weights."""
    two, three = cases()["alternating/alternate-constant"][0], cases()["alternating/joint-plateau"][0]
    assert two.loss_terms == ("a", "b") and three.loss_terms == ("a", "b", "consistency")
    assert cases()["dual_loss/adam-constant"][0].loss_terms == DualLossConfig.LOSSES
    weight_count = re.compile(r"len\([^()]*weights\)\s*(==|!=|>=|<=|>|<)\s*\d|\bn_(losses|weights)\s*==\s*\d")
    formula = re.compile(r"\(\s*y_hat\s*-\s*model_b\(\s*t_a\s*\)\s*\)\s*\*\*\s*2")
    found = []
    for path in SOURCE.rglob("*.py"):
        text = path.read_text()
        assert not weight_count.search(text), f"{path}: a weight count decides which losses there are"
        found += [path.name for line in text.splitlines() if formula.search(line) and "``" not in line]
    assert found == ["base.py"]  # the default consistency term, written once: CoupledProblem.consistency_term


def _run(cfg: object, p: object) -> list[dict[str, float]]:
    rec = Recorder()
    LOOPS[cfg.loop].train(cfg, rec.report, problem=p)  # type: ignore[attr-defined]
    return rec.metrics


def _grouped(cfgs: list, p: object) -> list[list[dict[str, float]]]:
    recs = [Recorder() for _ in cfgs]
    train_group(cfgs, [r.report for r in recs], problem=p)
    return [r.metrics for r in recs]


def _same(a: list[dict[str, float]], b: list[dict[str, float]]) -> bool:
    drop = "peak_memory_mb"
    return [{k: v for k, v in m.items() if k != drop} for m in a] == [
        {k: v for k, v in m.items() if k != drop} for m in b
    ]


@pytest.mark.parametrize("steps", [1, 2, 7])
def test_steps_per_epoch_on_tensor_data_is_applied_alone_and_in_groups(steps: int) -> None:
    """Fewer steps than a pass take the pass's first batches, more repeat re-shuffled passes: the same in
    a standalone run and in a vectorized group (a grouped trial trains as its exported replay)."""
    cfgs = cases()["alternating/alternate-constant"]
    capped = [c.model_copy(update={"data": c.data.model_copy(update={"steps_per_epoch": steps})}) for c in cfgs]
    p = coupled_problem()
    alone = [_run(c, p) for c in capped]
    assert alone[0][-1]["opt_steps_a"] + alone[0][-1]["opt_steps_b"] == cfgs[0].epochs * steps  # applied
    assert not _same(alone[0], _run(cfgs[0], p))
    grouped = _grouped(capped, p)
    for want, got in zip(alone, grouped, strict=True):
        assert [m["opt_steps_a"] for m in want] == [m["opt_steps_a"] for m in got]
        assert all(abs(w["val_total_loss"] - g["val_total_loss"]) < 1e-12 for w, g in zip(want, got, strict=True))


def test_a_problems_steps_per_epoch_on_tensor_data_is_applied_alone_and_in_groups() -> None:
    """``Task.steps_per_epoch`` (and ``CoupledProblem.steps_per_epoch``) on tensor splits: as above."""
    dual = dual_problem()
    dual = dataclasses.replace(dual, a=dataclasses.replace(dual.a, steps_per_epoch=5))
    cfgs = cases()["dual_loss/adam-constant"]
    alone = [_run(c, dual) for c in cfgs]
    assert not _same(alone[0], _run(cfgs[0], dual_problem()))
    for want, got in zip(alone, _grouped(cfgs, dual), strict=True):
        assert all(abs(w["val_total_loss"] - g["val_total_loss"]) < 1e-12 for w, g in zip(want, got, strict=True))
    coupled = dataclasses.replace(coupled_problem(), steps_per_epoch=2)
    cfgs2: list[AlternatingConfig] = cases()["alternating/alternate-constant"]  # type: ignore[assignment]
    alone = [_run(c, coupled) for c in cfgs2]
    assert alone[0][-1]["opt_steps_a"] + alone[0][-1]["opt_steps_b"] == cfgs2[0].epochs * 2
    for want, got in zip(alone, _grouped(cfgs2, coupled), strict=True):
        assert all(abs(w["val_total_loss"] - g["val_total_loss"]) < 1e-12 for w, g in zip(want, got, strict=True))
