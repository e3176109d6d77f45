"""``step``: the target weight is ``start`` times its value until ``at_fraction`` of training, then its full value.

m(t) = start if t < at_fraction · T else 1.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from objectives.frozen import Frozen


class Config(Frozen):
    type: Literal["step"] = Field("step", description="selects `step`: one jump to the full weight")
    target: str = Field("a", description="the loss whose weight moves (`a`, `b`, or `consistency`)")
    start: Annotated[float, Field(ge=0, le=1, description="the multiplier before `at_fraction`")] = 0.0
    at_fraction: Annotated[
        float, Field(ge=0, le=1, description="the fraction of training at which the weight jumps to its full value")
    ] = 0.5


def multiplier(cfg: Config, step: int, total: int) -> float:
    return cfg.start if step < cfg.at_fraction * total else 1.0
