"""``cagrad``: conflict-averse gradient descent, Liu et al. (2021), "Conflict-Averse Gradient Descent for
Multi-task Learning" (NeurIPS).

On the shared parameters (those every loss reaches: :mod:`objectives.weighting.jacobian`), with the
weighted task gradients g_i = ∇(w_i L_i) and their mean g_0, the step d maximises the worst task's
improvement min_i g_iᵀ d within the ball ‖d − g_0‖ ≤ c ‖g_0‖. The paper's dual (Algorithm 1): w =
argmin_{w ∈ Δ} g_wᵀ g_0 + c ‖g_0‖ ‖g_w‖ with g_w = Σ_i w_i g_i, then d = g_0 + (c ‖g_0‖ / ‖g_w‖) g_w.
Each task's own head keeps its own ∇(w_i L_i). The maths is torchjd's ``CAGrad`` (the dual solved by
cvxpy's Clarabel on the trace-normalised Gramian, which leaves w and d unchanged), whose d is the
paper's, without the 1 / (1 + c²) rescaling that the authors' code and LibMTL apply by default: the
optimizer's learning rate absorbs that constant. Where ‖g_w‖ is below ``norm_eps`` (relative to the
Jacobian's Frobenius norm: approximately Pareto-stationary) torchjd's convention is a zero update.
Effective weights are w_i (1/m + c ‖g_0‖ w_i' / ‖g_w‖), w' the dual's solution.

Needs cvxpy (``pip install 'sweep[solvers]'``); a config naming ``cagrad`` without it fails on load.
Cost per step: one vectorized backward pass (the Jacobian), the m×m Gramian's SVD and one small conic
problem solved by cvxpy on the CPU (one host sync per step on a GPU, and cvxpy's set-up, milliseconds).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator

from objectives.frozen import Frozen
from objectives.weighting.jacobian import Aggregating


def require_solvers(method: str, modules: tuple[str, ...]) -> None:
    """Raise the one-line error a study file's author reads when a solver ``method`` needs is missing.

    Raises:
        ValueError: a module of ``modules`` does not import.
    """
    for name in modules:
        try:
            __import__(name)
        except ImportError:
            raise ValueError(f"weighting {method} needs {name}: pip install 'sweep[solvers]'") from None


class Config(Frozen):
    type: Literal["cagrad"] = Field("cagrad", description="selects `cagrad`: conflict-averse gradient descent")
    c: float = Field(
        0.4, ge=0, le=10, description="radius of the ball around the mean gradient, in units of ‖g_0‖ (paper: c < 1)"
    )
    norm_eps: float = Field(
        0.0001, ge=0, le=1, description="below this relative ‖g_w‖ the step counts as Pareto-stationary (zero update)"
    )

    @model_validator(mode="after")
    def _solvers_installed(self) -> Config:
        require_solvers("cagrad", ("cvxpy", "clarabel"))
        return self


class CAGradStrategy(Aggregating):
    def __init__(self, cfg: Config, n_losses: int, device: torch.device, seed: int) -> None:
        from torchjd.aggregation import CAGrad  # lazily: torchjd imports cvxpy, when installed (~1 s)

        super().__init__(CAGrad(c=cfg.c, norm_eps=cfg.norm_eps))


build = CAGradStrategy
