"""Target rules: what a study may optimise, and in which direction."""

from __future__ import annotations

import pytest

from sweep.core.errors import ConfigError
from sweep.studyfile.targets import check_target, infer_direction, refuse_reason


@pytest.mark.parametrize(
    ("metric", "refused"),
    [
        ("train_weighted_loss", True),
        ("val_weighted_loss", True),
        ("weight_b", True),
        ("lr", True),
        ("train_b_loss", True),
        ("best_value", True),
        ("val_total_loss", False),
        ("val_b_acc", False),
    ],
)
def test_refuse_reason(metric: str, refused: bool) -> None:
    """Metrics computed with the searched weights (or not validation results) are refused."""
    assert (refuse_reason(metric) is not None) is refused


def test_infer_direction() -> None:
    """Losses are minimised, accuracies maximised, anything else must be stated."""
    assert infer_direction("val_a_loss") == "minimize"
    assert infer_direction("val_a_acc") == "maximize"
    assert infer_direction("val_a_f1") is None


def test_check_target_names_the_key() -> None:
    """An unknown metric, a refused one and a wrong direction each name their key."""
    allowed = ("val_total_loss", "val_a_loss")
    check_target(("val_a_loss",), None, allowed, "f.yaml")
    with pytest.raises(ConfigError, match=r"f\.yaml: study\.metric: unknown metric 'val_b_acc'"):
        check_target(("val_b_acc",), None, allowed, "f.yaml")
    with pytest.raises(ConfigError, match=r"study\.metric: train_weighted_loss is computed with the searched"):
        check_target(("train_weighted_loss",), None, None, "f.yaml")
    with pytest.raises(ConfigError, match=r"study\.direction: maximize for val_a_loss would search for the worst"):
        check_target(("val_a_loss",), ("maximize",), None, "f.yaml")
    with pytest.raises(ConfigError, match=r"study\.direction: cannot infer the direction for val_a_f1"):
        check_target(("val_a_f1",), None, None, "f.yaml")
