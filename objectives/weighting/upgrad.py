"""``upgrad``: unconflicting projection of gradients, Quinton & Rey (2024), "Jacobian Descent for
Multi-Objective Optimization" (arXiv:2406.16232).

Each weighted task gradient g_i = ∇(w_i L_i) of the shared parameters (those every loss reaches:
:mod:`objectives.weighting.jacobian`) is projected onto the dual cone {x : J x ≥ 0} of all of them, and
the shared parameters step with the mean of the projections, (1/m) Σ_i π_J(g_i): a direction that
conflicts with no task. Each task's own head keeps its own ∇(w_i L_i). The maths is torchjd's ``UPGrad``
with its default preference vector (the mean), solved in its dual form on the Gramian G = J Jᵀ: one
quadprog QP per task, min_v vᵀ G̃ v subject to v ≥ e_i / m, where torchjd's convention is
G̃ = G / tr(G) + ``reg_eps`` I (G̃ = ``reg_eps`` I when tr(G) < ``norm_eps``). The scale of G does not
change the projection; ``reg_eps`` makes the QP strictly convex and moves the result by O(reg_eps)
relative to the exact projection (0 gives the exact one, but quadprog then fails on a singular G, e.g.
two identical task gradients). Effective weights are w_i times the row weights Σ_i v_i.

Cost per step: one vectorized backward pass (the Jacobian), the m×m Gramian and m small QPs solved on
the CPU with numpy (one host sync per step on a GPU).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from objectives.frozen import Frozen
from objectives.weighting.jacobian import Aggregating


class Config(Frozen):
    type: Literal["upgrad"] = Field("upgrad", description="selects `upgrad`: unconflicting projection of gradients")
    norm_eps: float = Field(
        0.0001, ge=0, le=1e6, description="below this trace the Gramian counts as zero (the update is the mean row)"
    )
    reg_eps: float = Field(
        0.0001, ge=0, le=1, description="added to the trace-normalised Gramian's diagonal so each QP is solvable"
    )


class UPGradStrategy(Aggregating):
    def __init__(self, cfg: Config, n_losses: int, device: torch.device, seed: int) -> None:
        from torchjd.aggregation import UPGrad  # lazily: torchjd imports cvxpy, when installed (~1 s)
        from torchjd.linalg import QuadprogProjector

        super().__init__(UPGrad(projector=QuadprogProjector(norm_eps=cfg.norm_eps, reg_eps=cfg.reg_eps)))


build = UPGradStrategy
