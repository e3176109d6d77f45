"""``sigmoid``: the sigmoid-shaped ramp-up of Laine & Aila (2017, "Temporal Ensembling for
Semi-Supervised Learning"), used for consistency weights.

m(t) = start + (1 − start) · exp(−5 (1 − x)²), x = min(1, t / (ramp_fraction · T)).
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import Field

from objectives.frozen import Frozen


class Config(Frozen):
    type: Literal["sigmoid"] = Field("sigmoid", description="selects `sigmoid`: a sigmoid-shaped ramp")
    target: str = Field("a", description="the loss whose weight moves (`a`, `b`, or `consistency`)")
    start: Annotated[float, Field(ge=0, le=1, description="the multiplier at the start of training")] = 0.0
    ramp_fraction: Annotated[
        float, Field(gt=0, le=1, description="the fraction of training over which the multiplier rises to 1")
    ] = 0.3


def multiplier(cfg: Config, step: int, total: int) -> float:
    x = min(1.0, step / (cfg.ramp_fraction * total))
    return cfg.start + (1.0 - cfg.start) * math.exp(-5.0 * (1.0 - x) ** 2)
