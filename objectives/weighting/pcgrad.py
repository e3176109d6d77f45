"""``pcgrad``: gradient surgery, Yu et al. (2020), "Gradient Surgery for Multi-Task Learning" (NeurIPS).

Each weighted loss's gradient g_i = ∇(w_i L_i) is projected, against the others in a random order,
onto the normal plane of any g_j it conflicts with: g_i ← g_i − min(g_i·g_j, 0) / ‖g_j‖² g_j. The
step uses Σ_i g_i. The projection is branch-free (no host sync); the order comes from a seeded CPU
generator. Costs one backward pass per loss each step. Effective weights are the static ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from pydantic import Field

from objectives.frozen import Frozen
from objectives.weighting.base import Weighting, assign_gradient, task_gradients


class Config(Frozen):
    type: Literal["pcgrad"] = Field("pcgrad", description="selects `pcgrad`: gradient surgery")


def project(grads: list[torch.Tensor], order: list[list[int]]) -> torch.Tensor:
    """PCGrad's combined gradient: ``order[i]`` lists the j's that g_i is projected against, in turn."""
    out = []
    for i, g in enumerate(grads):
        p = g.clone()
        for j in order[i]:
            dot = torch.dot(p, grads[j])
            p = p - torch.clamp(dot, max=0.0) / (grads[j].pow(2).sum() + 1e-20) * grads[j]
        out.append(p)
    return torch.stack(out).sum(dim=0)


class PCGrad(Weighting):
    weights_before_step = False  # the gradient is the projected sum, not Σ w_i ∇L_i
    own_backward = True

    def __init__(self, cfg: Config, n_losses: int, device: torch.device, seed: int) -> None:
        self.n = n_losses
        self.generator = torch.Generator().manual_seed(seed)

    def weights(self, losses: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        return base

    def backward(self, losses: torch.Tensor, base: torch.Tensor, params: Sequence[torch.Tensor]) -> torch.Tensor:
        params = [p for p in params if p.requires_grad]
        grads = task_gradients(base * losses, params)
        order = []
        for i in range(self.n):
            others = [j for j in torch.randperm(self.n, generator=self.generator).tolist() if j != i]
            order.append(others)
        assign_gradient(project(grads, order), params)
        return base.detach()


build = PCGrad
