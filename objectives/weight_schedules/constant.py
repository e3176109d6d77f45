"""``constant``: the weight as given, throughout."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from objectives.frozen import Frozen


class Config(Frozen):
    type: Literal["constant"] = Field("constant", description="selects `constant`: every weight as given")
    target: str = Field("a", description="a loss of the loop (`a`, `b`, or `consistency`); nothing moves")


def multiplier(cfg: Config, step: int, total: int) -> float:
    return 1.0
