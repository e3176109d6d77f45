"""``static``: the (tuned, possibly scheduled) weights as they are — the baseline the others are compared with."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch

from objectives.frozen import Frozen
from objectives.weighting.base import weighted_backward


class Config(Frozen):
    type: Literal["static"] = "static"


class Static:
    """L = Σ w_i L_i with the configured weights."""

    def __init__(self, cfg: Config, n_losses: int, device: torch.device, seed: int) -> None:
        pass

    def parameters(self) -> list[torch.nn.Parameter]:
        return []

    def weights(self, losses: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        return base

    def backward(self, losses: torch.Tensor, base: torch.Tensor, params: Sequence[torch.Tensor]) -> torch.Tensor:
        return weighted_backward(self.weights(losses, base), losses)

    def after_step(self, losses_after: Callable[[], torch.Tensor]) -> None:
        pass

    def end_epoch(self, mean_losses: torch.Tensor) -> None:
        pass


build = Static
