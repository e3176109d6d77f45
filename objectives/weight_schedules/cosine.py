"""``cosine``: a half-cosine ramp of the target weight from ``start`` to 1 over ``ramp_fraction`` of training.

m(t) = start + (1 − start) · (1 − cos(π x)) / 2, x = min(1, t / (ramp_fraction · T)).
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import Field

from objectives.frozen import Frozen


class Config(Frozen):
    type: Literal["cosine"] = Field("cosine", description="selects `cosine`: a half-cosine ramp")
    target: str = Field("a", description="the loss whose weight moves (`a`, `b`, or `consistency`)")
    start: Annotated[float, Field(ge=0, le=1, description="the multiplier at the start of training")] = 0.0
    ramp_fraction: Annotated[
        float, Field(gt=0, le=1, description="the fraction of training over which the multiplier rises to 1")
    ] = 0.3


def multiplier(cfg: Config, step: int, total: int) -> float:
    x = min(1.0, step / (cfg.ramp_fraction * total))
    return cfg.start + (1.0 - cfg.start) * (1.0 - math.cos(math.pi * x)) / 2.0
