"""``step``: the target weight is ``start`` times its value until ``at_fraction`` of training, then its full value.

m(t) = start if t < at_fraction · T else 1.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from objectives.frozen import Frozen


class Config(Frozen):
    type: Literal["step"] = "step"
    target: str = "a"
    start: Annotated[float, Field(ge=0, le=1)] = 0.0
    at_fraction: Annotated[float, Field(ge=0, le=1)] = 0.5


def multiplier(cfg: Config, step: int, total: int) -> float:
    return cfg.start if step < cfg.at_fraction * total else 1.0
