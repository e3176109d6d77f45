"""``stch``: smooth Tchebycheff scalarization, Lin et al. (2024), "Smooth Tchebycheff Scalarization for
Multi-Objective Optimization" (ICML).

The paper's scalarization of objectives f_i with preference λ and ideal point z* is
μ log Σ_i exp(λ_i (f_i − z_i*) / μ), a smooth maximum of the weighted objectives that tends to the
Tchebycheff max_i λ_i (f_i − z_i*) as μ → 0 (torchjd's ``STCH``, used here). Its multi-task experiments
(the official code, Xi-L/STCH ``STCH_MTL``, also LibMTL's ``STCH``) do not scalarize the raw losses:

- warm-up: for the first ``warmup_epochs`` epochs the model trains on the log losses Σ_i λ_i log(L_i + ε);
- the mean training losses of the last warm-up epoch become the nadir point N (a normaliser);
- after it: f_i = log(L_i / N_i + ε) (the log loss relative to the nadir, so z* = 0), and the loss is
  k · μ log Σ_i exp(λ_i f_i / μ), with k losses.

ε = 1e-20 as in the official code. The official ``STCH_warmup_epoch`` = 4 counts the log-loss epochs
before the measuring one, so its default is ``warmup_epochs`` = 5 here; a run with no more epochs than
that never leaves the warm-up. The official code has no preference (λ_i = 1, then ×k); here λ = k w / Σw,
the static weights normalised to the simplex and scaled by k, so equal static weights are the official
code exactly (``mu`` means its ``STCH_mu``) and the scale of w does not matter. A zero w_i drops the loss.

Effective weights are ∂loss/∂L_i: λ_i / (L_i + ε) in the warm-up, then
k λ_i softmax(λ f / μ)_i / (L_i + ε N_i) (the softmax of the smooth maximum, through the logarithm).
The losses must be positive.

Cost per step: nothing measurable (k logarithms and a log-sum-exp); no host sync.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from pydantic import Field

from objectives.frozen import Frozen
from objectives.weighting.base import Weighting

EPS = 1e-20  # the official code's, inside the logarithms


class Config(Frozen):
    type: Literal["stch"] = Field("stch", description="selects `stch`: smooth Tchebycheff of the log losses")
    mu: float = Field(1.0, gt=0, le=100, description="smoothing μ of the log-sum-exp (→ 0: the Tchebycheff max)")
    warmup_epochs: int = Field(
        5, ge=1, le=10_000, description="epochs of log-loss training; the last one's mean losses are the nadir point"
    )


class STCH(Weighting):
    weights_from_losses = True  # the weights are functions of the step's loss values
    weights_before_step = False  # the weights depend on the step's losses

    def __init__(self, cfg: Config, n_losses: int, device: torch.device, seed: int) -> None:
        self.mu = cfg.mu
        self.warmup_epochs = cfg.warmup_epochs
        self.epochs = 0  # epochs finished
        self.nadir: torch.Tensor | None = None  # the last warm-up epoch's mean losses, once known
        from torchjd.scalarization import STCH  # lazily: torchjd imports cvxpy, when installed (~1 s)

        self.scalarize = STCH(cfg.mu)

    def preference(self, base: torch.Tensor) -> torch.Tensor:
        """λ = k w / Σw (mean 1; equal static weights give 1)."""
        return len(base) * base / base.sum().clamp_min(torch.finfo(base.dtype).tiny)

    @staticmethod
    def relative(losses: torch.Tensor, nadir: torch.Tensor) -> torch.Tensor:
        """f = log(L / N + ε), with the graph of ``losses``."""
        return torch.log(losses / nadir + EPS)

    def loss(self, losses: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        """The scalarized loss of this step, with the graph of ``losses``."""
        lam = self.preference(base)
        if self.nadir is None:
            return (lam * torch.log(losses + EPS)).sum()
        self.scalarize.weights = lam
        return len(base) * self.scalarize(self.relative(losses, self.nadir))

    def weights(self, losses: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        losses, lam = losses.detach(), self.preference(base)
        if self.nadir is None:
            return lam / (losses + EPS)
        soft = torch.softmax(lam * self.relative(losses, self.nadir) / self.mu, dim=0)
        return len(base) * lam * soft / (losses + EPS * self.nadir)

    def backward(self, losses: torch.Tensor, base: torch.Tensor, params: Sequence[torch.Tensor]) -> torch.Tensor:
        self.loss(losses, base).backward()
        return self.weights(losses, base)

    def end_epoch(self, mean_losses: torch.Tensor) -> None:
        self.epochs += 1
        if self.epochs == self.warmup_epochs:
            self.nadir = mean_losses.detach().clone().clamp_min(torch.finfo(mean_losses.dtype).tiny)


build = STCH
