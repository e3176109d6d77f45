"""``nash_mtl``: multi-task learning as a bargaining game, Navon et al. (2022), "Multi-Task Learning as a
Bargaining Game" (ICML).

On the shared parameters (those every loss reaches: :mod:`objectives.weighting.jacobian`), with the
weighted task gradients g_i = ∇(w_i L_i) stacked in J and G = J Jᵀ, the step is d = Σ_i α_i g_i with α
the Nash bargaining solution, Gα = 1/α (element-wise; then ‖d‖² = αᵀGα = m). Each task's own head keeps
its own ∇(w_i L_i). The maths is torchjd's ``NashMTL`` (adapted from the authors' code): the sequence
of convex approximations of the paper's Algorithm 1, solved by cvxpy's ECOS on G / ‖G‖_F for at most
``optim_niter`` rounds (an approximate solution, warm-started from the previous α), recomputed every
``update_weights_every`` steps (the α in between is the last one); then, like the authors' code, which
clips the shared gradient to ``max_norm`` (``clip_grad_norm_``), α is scaled down so that ‖d‖ ≤
``max_norm`` (0: no clipping). With the default 1, d has norm 1 (the exact α gives √m).

State: torchjd's ``NashMTL`` is stateful (its step counter, its last α and its cvxpy problem, built for
a fixed number of rows). A strategy object lives for one trial, so every trial starts fresh; within it
one ``NashMTL`` is kept per parameter set the loop steps (the alternating loop's A and B steps have
different active losses), each built for its own number of active losses and never reset.
Effective weights are w_i α_i.

Needs cvxpy and ecos (``pip install 'sweep[solvers]'``); a config naming ``nash_mtl`` without them fails
on load. Cost per step: one vectorized backward pass (the Jacobian), the m×m Gramian, and on update
steps up to ``optim_niter`` ECOS solves on the CPU (one host sync per step on a GPU, a few ms each).
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Literal

import torch
from pydantic import Field, model_validator

from objectives.frozen import Frozen
from objectives.weighting.cagrad import require_solvers
from objectives.weighting.jacobian import PerReach

if TYPE_CHECKING:
    pass


class Config(Frozen):
    type: Literal["nash_mtl"] = Field("nash_mtl", description="selects `nash_mtl`: Nash bargaining of the tasks")
    update_weights_every: int = Field(1, ge=1, le=10_000, description="recompute α every this many steps")
    optim_niter: int = Field(20, ge=1, le=1_000, description="most convex-approximation rounds per recomputation")
    max_norm: float = Field(1.0, ge=0, le=1e6, description="largest norm of the shared step Σ α_i g_i (0: no limit)")

    @model_validator(mode="after")
    def _solvers_installed(self) -> Config:
        require_solvers("nash_mtl", ("cvxpy", "ecos"))
        return self


class NashMTLStrategy(PerReach):
    def __init__(self, cfg: Config, n_losses: int, device: torch.device, seed: int) -> None:
        from torchjd.aggregation import NashMTL  # lazily: torchjd imports cvxpy, when installed (~1 s)

        # one NashMTL per parameter set, sized to its active losses (the alternating loop's B steps have two)
        super().__init__(
            lambda m: NashMTL(max(m, 1), cfg.max_norm, cfg.update_weights_every, cfg.optim_niter), n_losses
        )  # builds one now: checks the solvers at build time too

    def combine(self, matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        with warnings.catch_warnings():  # cvxpy's note that torchjd's problem is not DPP (nothing to act on)
            warnings.filterwarnings("ignore", message=".*not DPP.*", category=UserWarning)
            return super().combine(matrix)


build = NashMTLStrategy
