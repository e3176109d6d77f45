"""``famo``: Fast Adaptive Multitask Optimization, Liu et al. (2023), "FAMO: Fast Adaptive Multitask
Optimization" (NeurIPS).

Keeps logits ξ (z = softmax ξ) and trains on Σ_i z_i log(L_i − L_i^min) / c with
c = Σ_i z_i / (L_i − L_i^min) (held constant), i.e. the gradient Σ_i (z_i / (c D_i)) ∇L_i. After the
optimizer step it recomputes the step's losses and moves ξ (its own Adam, weight decay γ) so that
losses that fell less get more weight: ∇_ξ = J_softmax(ξ)ᵀ δ, δ_i = log D_i(before) − log D_i(after).
Costs one extra forward pass per step. The loss logarithm makes the static weights irrelevant
(log(w L) differs from log L by a constant), so FAMO replaces them; L_i^min = 0.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Literal

import torch
from pydantic import Field, NonNegativeFloat

from objectives.frozen import Frozen
from objectives.weighting.base import Weighting


class Config(Frozen):
    type: Literal["famo"] = Field("famo", description="selects `famo`: Fast Adaptive Multitask Optimization")
    lr: Annotated[float, Field(gt=0, description="learning rate of the weight logits (their own Adam)")] = 0.025
    gamma: NonNegativeFloat = Field(0.001, description="weight decay γ of the weight logits")


EPS = 1e-8


class FAMO(Weighting):
    weights_from_losses = True  # the weights are functions of the step's loss values
    weights_before_step = False  # the weights z / (c L_i) depend on the step's losses
    losses_after_step = True

    def __init__(self, cfg: Config, n_losses: int, device: torch.device, seed: int) -> None:
        self.logits = torch.zeros(n_losses, device=device, requires_grad=True)
        self.optimizer = torch.optim.Adam([self.logits], lr=cfg.lr, weight_decay=cfg.gamma)  # ξ's own, not the model's
        self.before: torch.Tensor | None = None

    def weights(self, losses: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        z = torch.softmax(self.logits.detach(), dim=0)
        d = losses.detach() + EPS
        return z / ((z / d).sum() * d)

    def backward(self, losses: torch.Tensor, base: torch.Tensor, params: Sequence[torch.Tensor]) -> torch.Tensor:
        z = torch.softmax(self.logits.detach(), dim=0)
        d = losses + EPS
        c = (z / d.detach()).sum()
        (torch.log(d) * z / c).sum().backward()
        self.before = losses.detach()
        return self.weights(losses, base)

    def after_step(self, losses_after: Callable[[], torch.Tensor]) -> None:
        if self.before is None:
            return
        delta = torch.log(self.before + EPS) - torch.log(losses_after().detach() + EPS)
        with torch.enable_grad():
            grad = torch.autograd.grad(torch.softmax(self.logits, dim=0), self.logits, grad_outputs=delta)[0]
        self.optimizer.zero_grad(set_to_none=True)
        self.logits.grad = grad
        self.optimizer.step()


build = FAMO
