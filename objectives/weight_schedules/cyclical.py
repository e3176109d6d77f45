"""``cyclical``: the cyclical annealing schedule of Fu et al. (2019, "Cyclical Annealing Schedule:
A Simple Approach to Mitigating KL Vanishing").

Training is split into ``cycles`` (M) equal cycles; within a cycle at position τ ∈ [0, 1) the weight
rises linearly for the first ``ramp_fraction`` (R) of the cycle and then stays at 1:
m(t) = start + (1 − start) · min(1, τ / R), τ = (t mod (T/M)) / (T/M).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, PositiveInt

from objectives.frozen import Frozen


class Config(Frozen):
    type: Literal["cyclical"] = Field("cyclical", description="selects `cyclical`: cyclical annealing")
    target: str = Field("a", description="the loss whose weight moves (`a`, `b`, or `consistency`)")
    start: Annotated[float, Field(ge=0, le=1, description="the multiplier at the start of each cycle")] = 0.0
    cycles: PositiveInt = Field(4, description="M, the number of equal cycles")
    ramp_fraction: Annotated[
        float, Field(gt=0, le=1, description="the fraction of each cycle over which the multiplier rises to 1")
    ] = 0.5


def multiplier(cfg: Config, step: int, total: int) -> float:
    period = total / cfg.cycles
    tau = (step % period) / period
    return cfg.start + (1.0 - cfg.start) * min(1.0, tau / cfg.ramp_fraction)
