"""``constant``: the weight as given, throughout."""

from __future__ import annotations

from typing import Literal

from objectives.frozen import Frozen


class Config(Frozen):
    type: Literal["constant"] = "constant"
    target: str = "a"


def multiplier(cfg: Config, step: int, total: int) -> float:
    return 1.0
