"""``sweep.results.scoring``: a trial's value (last or best epoch, both directions), early stopping at its
boundaries, the weights a :class:`Keeper` keeps, and the mode :func:`keeper` picks from ``objective.checkpoint``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from objectives.config import EarlyStopping
from objectives.loops import LOOPS
from sweep.results.scoring import EarlyStop, Keeper, Score, keeper


def _feed(score: Score, values: list[float]) -> int | None:
    """Add ``values`` as epochs 0, 1, ...; the epoch :class:`EarlyStop` was raised at, or ``None``."""
    for epoch, value in enumerate(values):
        try:
            score.add(epoch, value)
        except EarlyStop:
            return epoch
    return None


@pytest.mark.parametrize(
    ("direction", "rule", "value", "best_epoch"),
    [
        ("minimize", "last", 0.7, 1),
        ("minimize", "best", 0.2, 1),
        ("maximize", "last", 0.7, 2),
        ("maximize", "best", 0.9, 2),
    ],
)
def test_the_value_is_the_last_or_the_best_epochs_in_the_studys_direction(
    direction: str, rule: str, value: float, best_epoch: int
) -> None:
    """Curve 0.5, 0.2, 0.9, 0.7: the last epoch's value, or the lowest (minimize) or highest (maximize)."""
    score = Score(direction, rule, None)
    assert _feed(score, [0.5, 0.2, 0.9, 0.7]) is None
    assert score.value() == value and score.best_epoch == best_epoch
    assert score.uses_best is (rule == "best") and score.stopped_at is None


def test_a_tie_keeps_the_earlier_epoch_as_the_best() -> None:
    """A later epoch equal to the best is not better: the best epoch is the first to reach the value."""
    for direction in ("minimize", "maximize"):
        score = Score(direction, "best", None)
        _feed(score, [0.5, 0.3, 0.3, 0.7] if direction == "minimize" else [0.5, 0.7, 0.7, 0.3])
        assert score.best_epoch == 1 and score.value() == score.values[1]
        assert score.is_best(score.values[1]) is False  # equal is not a new best


def test_is_best_follows_the_direction() -> None:
    """The first value is always the best; after it, lower is better when minimising, higher when maximising."""
    low, high = Score("minimize", "last", None), Score("maximize", "last", None)
    assert low.is_best(123.0) and high.is_best(-123.0)  # nothing recorded yet: anything is the best
    low.add(0, 1.0)
    high.add(0, 1.0)
    assert low.is_best(0.5) and not low.is_best(2.0)
    assert high.is_best(2.0) and not high.is_best(0.5)


def test_early_stopping_stops_after_patience_epochs_without_improvement() -> None:
    """``patience: 2``: the second epoch in a row that does not improve raises, not the first; an
    improvement in between starts the count again."""
    score = Score("minimize", "last", EarlyStopping(patience=2))
    assert _feed(score, [1.0, 1.0, 0.5, 1.0, 1.0, 0.1]) == 4
    assert score.stopped_at == 4 and score.values == [1.0, 1.0, 0.5, 1.0, 1.0]
    assert score.uses_best and score.value() == 0.5 and score.best_epoch == 2  # reports its best, rule last
    one = Score("minimize", "last", EarlyStopping(patience=1))
    assert _feed(one, [1.0, 1.0]) == 1


def test_an_improvement_of_exactly_min_delta_does_not_count() -> None:
    """``min_delta: 0.5``: 1.0 → 0.5 (by exactly 0.5) is a stall, 1.0 → 0.25 (by more) an improvement; the
    best epoch still moves with any strict improvement."""
    at = Score("minimize", "last", EarlyStopping(patience=1, min_delta=0.5))
    assert _feed(at, [1.0, 0.5]) == 1 and at.best_epoch == 1 and at.value() == 0.5
    past = Score("minimize", "last", EarlyStopping(patience=1, min_delta=0.5))
    assert _feed(past, [1.0, 0.25]) is None and not past.uses_best
    up = Score("maximize", "last", EarlyStopping(patience=1, min_delta=0.5))
    assert _feed(up, [0.0, 0.5]) == 1
    up = Score("maximize", "last", EarlyStopping(patience=1, min_delta=0.5))
    assert _feed(up, [0.0, 0.75]) is None


def test_small_improvements_are_measured_from_the_last_counted_one() -> None:
    """Improvements smaller than ``min_delta`` add up: each epoch is compared with the last value that
    counted as an improvement, not with the epoch before it."""
    score = Score("minimize", "last", EarlyStopping(patience=3, min_delta=0.5))
    assert _feed(score, [2.0, 1.75, 1.5, 1.25, 1.0]) is None  # 2.0 → 1.25 improves by 0.75 at epoch 3
    assert score.best_epoch == 4
    back = Score("minimize", "last", EarlyStopping(patience=2))
    assert _feed(back, [1.0, 0.5, 0.75, 0.75]) == 3  # 0.75 is better than 1.0 but not than 0.5, the last counted
    worse = Score("maximize", "last", EarlyStopping(patience=2))
    assert _feed(worse, [1.0, 0.5, 0.25]) == 2  # getting worse is no improvement in either direction


def _model(value: float) -> torch.nn.Linear:
    model = torch.nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.fill_(value)
        model.bias.fill_(value)
    return model


def _train(keep: Keeper, values: list[float], model: torch.nn.Module) -> None:
    """As the loops do: each epoch sets the weights to the epoch's value, calls the checkpoint, then reports
    the target (``val_loss``: the value; ``other``: its negative)."""
    for epoch, value in enumerate(values):
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(value)
        metrics = {"val_loss": value, "other": -value}
        keep(epoch, metrics, {"model": model})
        keep.score.add(epoch, metrics[keep.target])


def test_a_best_keeper_keeps_a_copy_of_the_best_epochs_weights(tmp_path: Path) -> None:
    """Mode ``best``: the weights of the best epoch by the target, not the last, and a copy that the
    training going on after that epoch does not change."""
    model = _model(0.0)
    keep = Keeper("best", "val_loss", Score("minimize", "last", None))
    _train(keep, [0.5, 0.25, 0.75, 0.375], model)
    assert keep.epoch == 1
    state = keep.state()
    assert set(state) == {"model"} and torch.equal(state["model"]["weight"], torch.full((1, 2), 0.25))
    assert torch.equal(model.weight, torch.full((1, 2), 0.375))  # the live model moved on
    with torch.no_grad():
        model.weight.fill_(9.0)
    assert torch.equal(keep.state()["model"]["weight"], torch.full((1, 2), 0.25))
    saved = keep.save(tmp_path / "w.pt")
    assert saved == tmp_path / "w.pt"
    loaded = torch.load(saved, weights_only=True)
    assert torch.equal(loaded["model"]["bias"], torch.full((1,), 0.25))


def test_a_best_keeper_follows_the_target_not_another_metric() -> None:
    """Maximising ``other`` (minus ``val_loss``) keeps the epoch of the lowest ``val_loss``, not the highest."""
    keep = Keeper("best", "other", Score("maximize", "last", None))
    _train(keep, [0.5, 0.25, 0.75], _model(0.0))
    assert keep.epoch == 1 and torch.equal(keep.state()["model"]["bias"], torch.full((1,), 0.25))


def test_a_last_keeper_keeps_the_last_epochs_weights() -> None:
    """Mode ``last``: the last epoch's weights whatever the target did, copied when read."""
    model = _model(0.0)
    keep = Keeper("last", "val_loss", Score("minimize", "last", None))
    _train(keep, [0.5, 0.25, 0.75], model)
    assert keep.epoch == 2
    state = keep.state()
    assert torch.equal(state["model"]["weight"], torch.full((1, 2), 0.75))
    with torch.no_grad():
        model.weight.fill_(9.0)
    assert torch.equal(state["model"]["weight"], torch.full((1, 2), 0.75))  # what state() gave is a copy


def test_a_keeper_with_no_finished_epoch_writes_nothing(tmp_path: Path) -> None:
    """A trial that fails in its first epoch has no weights: nothing is written, none can be read."""
    for mode in ("best", "last"):
        keep = Keeper(mode, "val_loss", Score("minimize", "best", None))
        assert keep.save(tmp_path / f"{mode}.pt") is None and not (tmp_path / f"{mode}.pt").exists()
        with pytest.raises(AssertionError, match="no epoch finished"):
            keep.state()


def _cfg(**fields: Any) -> Any:
    return LOOPS["dual_loss"].config.model_validate({"problem": "linear_pair", **fields})


@pytest.mark.parametrize(
    ("fields", "rule", "mode"),
    [
        ({}, "last", "last"),  # the epoch the trial reports: the last
        ({}, "best", "best"),  # score: best
        ({"early_stopping": {"patience": 2}}, "last", "best"),  # early stopping reports its best epoch
        ({"checkpoint": "last"}, "best", "last"),  # as asked, whatever the score
        ({"checkpoint": "best"}, "last", "best"),
        ({"checkpoint": "none"}, "best", None),
    ],
)
def test_keeper_takes_its_mode_from_objective_checkpoint(fields: dict, rule: str, mode: str | None) -> None:
    """``objective.checkpoint`` wins; unset, the epoch the trial reports (best with score: best or early stopping)."""
    score = Score("minimize", rule, None)
    made = keeper(_cfg(**fields), score, "val_total_loss")
    if mode is None:
        assert made is None
    else:
        assert made is not None and (made.mode, made.target, made.score) == (mode, "val_total_loss", score)
