"""What a study may optimise: validation metrics the loop logs, never the searched weights themselves.

One rule, used when a file is loaded (a built-in problem's metrics are known) and again before a run
(a user problem's metrics are known once it is built): the target must be one of the validation
metrics the loop's record (:data:`objectives.loops.LOOPS`) says it logs, and must not be refused by
:func:`refuse_reason`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from sweep.core.errors import ConfigError

Direction = Literal["minimize", "maximize"]


def infer_direction(metric: str) -> Direction | None:
    """``*_loss`` is minimised, ``*_acc`` maximised; anything else must be given."""
    if metric.endswith("_loss"):
        return "minimize"
    if metric.endswith("_acc"):
        return "maximize"
    return None


def refuse_reason(metric: str) -> str | None:
    """Why a metric may not be a search target, or ``None`` if it may."""
    if "weighted" in metric:
        return (
            f"{metric} is computed with the searched loss weights, so the search would reward the weights "
            "themselves (e.g. shrinking the weight of the larger loss) instead of a better model; name an "
            "unweighted validation metric such as val_total_loss, val_a_loss or val_b_acc"
        )
    if metric.startswith("weight_") or metric == "lr" or metric.startswith("lr_"):
        return f"{metric} is a hyperparameter the trial sets, not a result; name a validation metric (val_...)"
    if metric.startswith("train_"):
        return f"{metric} measures fit to the training data; name a validation metric (val_...)"
    if not metric.startswith("val_"):
        return f"{metric} is not a validation metric; name one of the val_... metrics the loop logs"
    return None


def check_target(
    metrics: tuple[str, ...],
    directions: tuple[Direction, ...] | None,
    allowed: tuple[str, ...] | None,
    file: str | Path,
) -> None:
    """Refuse targets computed with the searched weights, unknown metrics and wrong directions.

    Args:
        metrics: ``study.metric``.
        directions: ``study.direction`` as written (``None``: inferred from the names).
        allowed: The validation metrics the loop logs for this problem; ``None`` when not known yet.
        file: The study file, for the error.

    Raises:
        ConfigError: naming ``study.metric`` or ``study.direction``.
    """
    key = "study.metric"
    if len(set(metrics)) != len(metrics):
        raise ConfigError(file, key, "a metric is named twice")
    for metric in metrics:
        reason = refuse_reason(metric)
        if reason:
            raise ConfigError(file, key, reason)
        if allowed is not None and metric not in allowed:
            raise ConfigError(file, key, f"unknown metric {metric!r}; this objective logs {', '.join(allowed)}")
    if directions is not None:
        if len(directions) != len(metrics):
            raise ConfigError(file, "study.direction", f"{len(directions)} directions for {len(metrics)} metrics")
        for metric, direction in zip(metrics, directions, strict=True):
            inferred = infer_direction(metric)
            if inferred and inferred != direction:
                raise ConfigError(file, "study.direction", f"{direction} for {metric} would search for the worst model")
    else:
        for metric in metrics:
            if infer_direction(metric) is None:
                raise ConfigError(file, "study.direction", f"cannot infer the direction for {metric}; give it")
