"""``gradnorm``: GradNorm, Chen et al. (2018), "GradNorm: Gradient Normalization for Adaptive Loss
Balancing in Deep Multitask Networks" (ICML).

Learned task weights ω_i (start at 1) scale the static weights. Each step, with G_i = ω_i ‖∇_W L_i‖
over the parameters W that every loss reaches (the shared ones; the paper uses the last shared
layer), r_i = (L_i / L_i(0)) / mean_j(L_j / L_j(0)) and the target Ḡ r_i^α (held constant), ω takes
one step of its own Adam on Σ_i |G_i − Ḡ r_i^α|, is floored at :data:`FLOOR` and is renormalised to
sum to K. The model trains on Σ_i w_i ω_i L_i. Costs one extra backward pass per loss each step.

G_i uses the task's own loss L_i, not w_i L_i: the paper's G_W^(i) = ‖∇_W w_i(t) L_i(t)‖ has the
*learned* weight as its w_i(t) (here ω_i, renormalised to sum to K as the paper's weights sum to T),
and the static weights w_i (the searched ratio, after the weight schedule) are a preference applied
on top. Were w_i inside G_i, GradNorm would equalise the weighted gradients and so undo whatever
ratio the search chose (with equal raw gradient norms ω_a/ω_b → w_b/w_a: 10^-3 at the searched
ratio 10^3, which an Adam step of ~lr overshoots into ω_a < 0).

Positivity: the paper's weights are positive, but an Adam step of size ~lr can carry a small ω_i
below 0 (the raw update has no barrier), which turns that task's descent into ascent. ω is clamped
to at least :data:`FLOOR` after the Adam step and before renormalising, so every weight stays in
(0, K). A floor, not a positive parametrisation (Adam on log ω): it changes nothing while ω stays
above the floor, so the update is exactly the paper's wherever the paper's update is well defined,
whereas Adam on log ω would take multiplicative steps and alter every update.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

import torch
from pydantic import Field

from objectives.frozen import Frozen
from objectives.weighting.base import Weighting, weighted_backward
from objectives.weighting.jacobian import Reaches

FLOOR = 1e-3
"""Least ω_i after an update, before renormalising (ω's mean is 1, so a task is down-weighted at most ~K/FLOOR×)."""


class Config(Frozen):
    type: Literal["gradnorm"] = Field("gradnorm", description="selects `gradnorm`: GradNorm")
    alpha: Annotated[float, Field(ge=0, description="GradNorm's α: how strongly slower losses are favoured")] = 1.5
    lr: Annotated[float, Field(gt=0, description="learning rate of ω (its own Adam)")] = 0.025


class GradNorm(Weighting):
    weights_before_step = False  # backward also moves ω, from the step's per-loss gradient norms
    own_backward = True

    def __init__(self, cfg: Config, n_losses: int, device: torch.device, seed: int) -> None:
        self.alpha = cfg.alpha
        self.omega = torch.ones(n_losses, device=device, requires_grad=True)
        self.optimizer = torch.optim.Adam([self.omega], lr=cfg.lr)  # ω has its own optimizer, not the model's
        self.initial: torch.Tensor | None = None
        self.reaches = Reaches()  # which losses reach which parameters, found once per parameter set

    def weights(self, losses: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        return base * self.omega.detach()

    def backward(self, losses: torch.Tensor, base: torch.Tensor, params: Sequence[torch.Tensor]) -> torch.Tensor:
        weights = self.weights(losses, base)  # this step trains with ω(t); ω(t+1) is for the next (Alg. 1)
        params = [p for p in params if p.requires_grad]
        reach = self.reaches(losses, params) if losses.requires_grad else None
        if reach is not None and reach.shared and len(reach.active) > 1:
            active, index = reach.active, reach.index
            detached = losses.detach()
            if self.initial is None:
                self.initial = detached.clamp_min(1e-12)
            shared = [params[j] for j in reach.shared]
            norms = torch.stack(
                [
                    torch.linalg.vector_norm(
                        torch.cat([g.reshape(-1) for g in torch.autograd.grad(losses[i], shared, retain_graph=True)])
                    )
                    for i in active
                ]
            )  # ‖∇_W L_i‖ of the task's own loss: the static weight is not part of G_i (module docstring)
            g = self.omega.index_select(0, index) * norms  # G_i, differentiable in ω
            ratio = detached.index_select(0, index) / self.initial.index_select(0, index)
            target = (g.mean() * (ratio / ratio.mean()) ** self.alpha).detach()
            self.optimizer.zero_grad(set_to_none=True)
            (g - target).abs().sum().backward(inputs=[self.omega])
            self.optimizer.step()
            with torch.no_grad():
                # Floor, then renormalise: every ω_i ≥ FLOOR > 0 before the division, so ω stays positive.
                self.omega.clamp_(min=FLOOR)
                self.omega.mul_(len(self.omega) / self.omega.sum())
        return weighted_backward(weights, losses)


build = GradNorm
