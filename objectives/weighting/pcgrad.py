"""``pcgrad``: gradient surgery, Yu et al. (2020), "Gradient Surgery for Multi-Task Learning" (NeurIPS).

Each weighted loss's gradient g_i = ∇(w_i L_i) of the shared parameters (those every loss reaches:
:mod:`objectives.weighting.jacobian`) is projected, against the others in a random order, onto the
normal plane of any g_j it conflicts with: g_i ← g_i − min(g_i·g_j, 0) / ‖g_j‖² g_j. The shared
parameters step with Σ_i g_i; a task's own head keeps its own gradient ∇(w_i L_i), as in the paper
(and LibMTL), whose surgery acts on the shared encoder. The projection is branch-free (no host sync);
the order comes from a seeded CPU generator. Costs one vectorized backward pass (the Jacobian) each
step. Effective weights are the static ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from pydantic import Field

from objectives.frozen import Frozen
from objectives.weighting.base import Weighting, weighted_backward
from objectives.weighting.jacobian import Reaches, jacobian_step


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
        self.reaches = Reaches()

    def weights(self, losses: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        return base

    def backward(self, losses: torch.Tensor, base: torch.Tensor, params: Sequence[torch.Tensor]) -> torch.Tensor:
        params = [p for p in params if p.requires_grad]
        reach = self.reaches(losses, params) if losses.requires_grad else None
        if reach is None or len(reach.active) < 2 or not reach.shared:
            return weighted_backward(base, losses)
        m = len(reach.active)

        def combine(matrix: torch.Tensor) -> tuple[torch.Tensor, None]:
            order = []
            for i in range(m):
                order.append([j for j in torch.randperm(m, generator=self.generator).tolist() if j != i])
            return project(list(matrix.unbind(0)), order), None

        jacobian_step(base * losses, params, reach, combine)
        return base.detach()


build = PCGrad
