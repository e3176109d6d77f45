"""``db_mtl``: dual balancing, Lin et al. (2023), "Dual-Balancing for Multi-Task Learning"
(arXiv:2308.12029).

Loss-scale balancing: every task loss enters as its logarithm, so task i's gradient is
∇(w_i log L_i) = w_i ∇L_i / L_i, in every parameter it reaches (a task's head gets exactly that).
Gradient-magnitude balancing, on the shared parameters (those every loss reaches:
:mod:`objectives.weighting.jacobian`): an EMA of each task's log-loss gradient, ĝ_i ← β_t ĝ_i + (1 − β_t)
∇(w_i log L_i) from ĝ_i = 0, with β_t = ``beta`` / t^``beta_sigma`` at the t-th step, and the shared
parameters step with Σ_i α_i ĝ_i, α_i = max_j ‖ĝ_j‖ / ‖ĝ_i‖: every task's EMA gradient is scaled to the
largest norm. Not in torchjd: written here on :func:`~objectives.weighting.jacobian.jacobian_step`,
matching LibMTL's ``DB_MTL`` (log(L_i + 1e-8), α_i = max_j ‖ĝ_j‖ / (‖ĝ_i‖ + 1e-8), the buffer and the step
counter t starting at 0 and 1). Differences: LibMTL's command line defaults β_σ to 0 (a constant β);
here the paper's decaying β_t with σ = 0.5 is the default. The static weights w_i scale each task's
log-loss row (the searched preference, as in every gradient method here); the magnitude balancing
rescales the shared rows to one norm, so on the shared parameters they set only the step's size (the
largest ‖ĝ_j‖), while the heads get w_i ∇L_i / L_i. A step with fewer than two active losses or no shared
parameter back-propagates Σ_i w_i log(L_i + 1e-8) (the loss-scale half only). The losses must be positive.

State: the EMA ĝ (one float per shared parameter and task) and t are kept per parameter set the loop
steps (the alternating loop's A and B steps differ), for the strategy's life (one trial).
Effective weights are w_i α_i / (L_i + 1e-8) (α_i = 1 for a loss the step does not balance): the weight
of this step's ∇L_i when the EMA is off (β = 0).

Cost per step: one vectorized backward pass (the Jacobian) and a few element-wise passes over it; no
host sync.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from pydantic import Field

from objectives.frozen import Frozen
from objectives.weighting.base import Weighting, weighted_backward
from objectives.weighting.jacobian import Reach, Reaches, jacobian_step

EPS = 1e-8  # LibMTL's: inside the logarithm and under the norms


class Config(Frozen):
    type: Literal["db_mtl"] = Field("db_mtl", description="selects `db_mtl`: dual balancing (log losses, EMA norms)")
    beta: float = Field(0.9, ge=0, le=1, description="EMA rate β of the log-loss gradients (β_t = β / t^σ)")
    beta_sigma: float = Field(0.5, ge=0, le=10, description="decay exponent σ of the EMA rate (0: constant β)")


class DBMTL(Weighting):
    weights_from_losses = True  # the weights are functions of the step's loss values
    weights_before_step = False  # the update depends on the step's gradients and on the EMA
    own_backward = True

    def __init__(self, cfg: Config, n_losses: int, device: torch.device, seed: int) -> None:
        self.beta = cfg.beta
        self.sigma = cfg.beta_sigma
        self.reaches = Reaches()
        self.state: dict[int, tuple[int, torch.Tensor]] = {}  # per parameter set: t and the EMA ĝ

    def weights(self, losses: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        return base / (losses.detach() + EPS)

    def balance(self, reach: Reach, matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One EMA step of the parameter set's ĝ with the rows ``matrix``; the update Σ α_i ĝ_i and α."""
        t, ema = self.state.get(id(reach), (0, torch.zeros_like(matrix)))
        t += 1
        rate = self.beta / t**self.sigma
        ema = matrix + rate * (ema - matrix)  # β_t ĝ + (1 − β_t) g, as LibMTL writes it
        norms = ema.norm(dim=1)
        alpha = norms.max() / (norms + EPS)
        self.state[id(reach)] = (t, ema)
        return alpha @ ema, alpha

    def backward(self, losses: torch.Tensor, base: torch.Tensor, params: Sequence[torch.Tensor]) -> torch.Tensor:
        params = [p for p in params if p.requires_grad]
        logs = torch.log(losses + EPS)
        reach = self.reaches(losses, params) if losses.requires_grad else None
        if reach is None or len(reach.active) < 2 or not reach.shared:
            weighted_backward(base, logs)
            return self.weights(losses, base)
        alpha = jacobian_step(base * logs, params, reach, lambda matrix: self.balance(reach, matrix))
        factors = torch.ones_like(base).index_copy(0, reach.index, alpha.to(base.dtype))
        return (self.weights(losses, base) * factors).detach()


build = DBMTL
