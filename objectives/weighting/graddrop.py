"""``graddrop``: gradient sign dropout, Chen et al. (2020), "Just Pick a Sign: Optimizing Deep Multitask
Models with Gradient Sign Dropout" (NeurIPS).

On the shared parameters (those every loss reaches: :mod:`objectives.weighting.jacobian`), with the
weighted task gradients g_i = ∇(w_i L_i), each coordinate's positive sign purity is
P = ½ (1 + Σ_i g_i / Σ_i |g_i|); with a uniform draw U per coordinate, the positive entries survive
where P > U and the negative ones where P < U, and the shared parameters step with
Σ_i (ℓ + (1 − ℓ) M_i) g_i, ℓ the ``leak`` (the paper's ℓ_i, one value for every task here). Each task's
own head keeps its own ∇(w_i L_i). The maths is torchjd's ``GradDrop`` (the paper's Algorithm 1, lines
10–15, with f the identity), applied to the shared parameters' gradients rather than to a layer's
activations (the paper's placement); it is not a weighted combination, so the effective weights are the
static ones.

Randomness: torchjd draws U with the global ``torch.rand``. Here every step first draws a seed from the
strategy's own CPU generator (seeded with ``build``'s ``seed``), then runs torchjd's aggregator under
``torch.random.fork_rng`` with the global generators of the CPU and of the Jacobian's device seeded with
it (:func:`~objectives.weighting.jacobian.seeded_rng`): the draws are deterministic per trial seed and
the global RNG's state is left as it was. No host sync: the seed comes from a CPU generator and the RNG
states are host-side.

Cost per step: one vectorized backward pass (the Jacobian) and a few element-wise passes over it.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from objectives.frozen import Frozen
from objectives.weighting.jacobian import Aggregating, seeded_rng


class Config(Frozen):
    type: Literal["graddrop"] = Field("graddrop", description="selects `graddrop`: gradient sign dropout")
    leak: float = Field(
        0.0, ge=0, le=1, description="fraction of every task gradient kept whatever its sign (0: pure sign dropout)"
    )


class GradDropStrategy(Aggregating):
    def __init__(self, cfg: Config, n_losses: int, device: torch.device, seed: int) -> None:
        from torchjd.aggregation import GradDrop  # lazily: torchjd imports cvxpy, when installed (~1 s)

        super().__init__(GradDrop())
        self.leak = cfg.leak
        self.generator = torch.Generator().manual_seed(seed)

    def combine(self, matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.leak > 0:  # one leak per row, on the Jacobian's device (torchjd indexes it per row)
            self.aggregator.leak = torch.full((len(matrix),), self.leak, dtype=matrix.dtype, device=matrix.device)
        with seeded_rng(self.generator, matrix.device):
            return super().combine(matrix)


build = GradDropStrategy
