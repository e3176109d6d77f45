"""The closed registry of training loops, by the ``loop`` name a study file gives."""

from __future__ import annotations

from collections.abc import Callable

from objectives import alternating, dual_loss

LOOPS: dict[str, Callable[..., dict[str, float]]] = {
    "dual_loss": dual_loss.train,
    "alternating": alternating.train,
}
