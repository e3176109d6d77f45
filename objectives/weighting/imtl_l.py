"""``imtl_l``: impartial loss balancing, Liu et al. (2021), "Towards Impartial Multi-task Learning" (ICLR),
the loss half (IMTL-L; the gradient half is ``imtl_g``).

Learns one scale s_i per loss and minimises Σ_i w_i (e^{s_i} L_i − s_i) over the model and the s_i (the s_i
join the model's optimizer through :meth:`parameters`). The paper's (and torchjd's ``IMTLL``) objective is
Σ_i (e^{s_i} L_i − s_i); here the static weight w_i multiplies task i's whole term, so the effective weight
of loss i is w_i e^{s_i} (= ∂L/∂L_i) and ∂L/∂s_i = w_i (e^{s_i} L_i − 1). At the s-optimum e^{s_i} = 1/L_i
(the paper's impartial balance: every scaled loss e^{s_i} L_i equals 1), so training tends to the gradient
Σ_i w_i ∇L_i / L_i: the searched preference w stays on top of the balance. A zero w_i drops the loss and its
s_i entirely. With w = 1 this is the paper's formula.

Why both this and ``uncertainty``: torchjd notes that the paper's IMTL-L is twice Kendall et al.'s
uncertainty loss at s = −log σ² (the same weighting up to a factor 2 and a sign). ``uncertainty`` keeps
the static weight on the loss only, w_i L_i / (2σ_i²) + log σ_i² / 2, whose σ-optimum 2σ_i² = w_i L_i
cancels w_i (it tends to Σ_i ∇L_i / (2 L_i), whatever the preference); here the preference survives, and
the default start (s = 0) is the plain weighted sum Σ w_i L_i (``uncertainty`` starts at half of it).
Written here (the one-line formula), pinned against torchjd's ``IMTLL`` at w = 1 in the tests.

Cost per step: nothing measurable (k exponentials in the one backward of the model); no host sync.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from pydantic import Field

from objectives.frozen import Frozen
from objectives.weighting.base import Weighting


class Config(Frozen):
    type: Literal["imtl_l"] = Field("imtl_l", description="selects `imtl_l`: IMTL-L, learned loss scales e^s")
    init: float = Field(0.0, ge=-10, le=10, description="the initial learned scale s_i of every loss (e^s scales L_i)")


class IMTLL(Weighting):
    weights_before_step = False  # the weights alone are not the step: backward also trains s (the −s term)

    def __init__(self, cfg: Config, n_losses: int, device: torch.device, seed: int) -> None:
        self.scale = torch.nn.Parameter(torch.full((n_losses,), cfg.init, device=device))

    def parameters(self) -> list[torch.nn.Parameter]:
        return [self.scale]

    def _scale(self, losses: torch.Tensor) -> torch.Tensor:
        """s in the wider of its own and the losses' dtype (float64 losses get float64 e^s)."""
        return self.scale.to(torch.promote_types(self.scale.dtype, losses.dtype))

    def weights(self, losses: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        return (base * torch.exp(self._scale(losses))).detach()

    def backward(self, losses: torch.Tensor, base: torch.Tensor, params: Sequence[torch.Tensor]) -> torch.Tensor:
        s = self._scale(losses)
        (base * (torch.exp(s) * losses - s)).sum().backward()
        return self.weights(losses, base)


build = IMTLL
