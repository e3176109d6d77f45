"""``linear_pair``: two synthetic regression datasets, one shared linear model, loss scales far apart.

Dataset a has targets ``y = X θ_a + ε``; dataset b has ``y = s (X θ_b + ε)`` with ``s² = scale``, so
its loss is about ``scale`` times larger. Each dataset has its own input covariance. The model is a
bias-free linear map, so the minimiser of ``w L_a + (1 − w) L_b`` (mean squared errors) has the closed
form ``θ(w) = (w Σ_a + (1 − w) Σ_b)⁻¹ (w b_a + (1 − w) b_b)`` with ``Σ = XᵀX / n``, ``b = Xᵀy / n``
(:func:`optimum`), which the tests check the loop against.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, PositiveFloat, PositiveInt

from objectives.problems.base import Builtin, Problem, Task
from objectives.problems.common import mse


class Options(BaseModel):
    """Options of ``linear_pair``."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    dim: PositiveInt = Field(8, description="input dimension")
    n_a: PositiveInt = Field(512, description="task a's training samples")
    n_b: PositiveInt = Field(2048, description="task b's training samples")
    n_val: PositiveInt = Field(1024, description="validation samples")
    n_test: PositiveInt = Field(1024, description="held-out test samples")
    scale: PositiveFloat = Field(30.0, description="how many times apart the two losses' scales are")
    noise: NonNegativeFloat = Field(0.1, description="noise of the regression targets")
    related: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="how much task b's true map shares task a's: θ_b = related·θ_a + √(1 − related²)·θ_b' (0: "
        "independent tasks; near 1 with few samples of a, b helps a at a small weight: an auxiliary task)",
    )


def build(options: Options, seed: int) -> Problem:
    g = torch.Generator().manual_seed(seed)
    d = options.dim
    theta = torch.randn(2, d, 1, generator=g)
    if options.related:  # task b's map leans towards a's (the data drawn below stay the same)
        theta[1] = options.related * theta[0] + (1.0 - options.related**2) ** 0.5 * theta[1]
    # Different input scales per dataset make Σ_a ≠ Σ_b, so θ(w) is not a plain interpolation.
    spread = torch.exp(torch.randn(2, d, generator=g) * 0.5)
    factor = (1.0, options.scale**0.5)

    def sample(i: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randn(n, d, generator=g) * spread[i]
        y = factor[i] * (x @ theta[i] + options.noise * torch.randn(n, 1, generator=g))
        return x, y

    def model() -> torch.nn.Module:
        return torch.nn.Linear(d, 1, bias=False)

    a = Task(train=sample(0, options.n_a), val=sample(0, options.n_val), loss=mse)
    b = Task(train=sample(1, options.n_b), val=sample(1, options.n_val), loss=mse)
    # Drawn last, so the training and validation data are what they were before test splits existed.
    a, b = (replace(t, test=sample(i, options.n_test)) for i, t in enumerate((a, b)))
    return Problem(make_model=model, a=a, b=b)


def optimum(problem: Problem, w: float) -> torch.Tensor:
    """Closed-form minimiser θ(w) of ``w L_a + (1 − w) L_b`` on the training sets (float64, shape (d,))."""
    xa, ya = (t.double().cpu() for t in problem.a.train)
    xb, yb = (t.double().cpu() for t in problem.b.train)
    sigma = w * xa.T @ xa / len(xa) + (1 - w) * xb.T @ xb / len(xb)
    b = w * xa.T @ ya / len(xa) + (1 - w) * xb.T @ yb / len(xb)
    return torch.linalg.solve(sigma, b).squeeze(1)


BUILTIN = Builtin(
    options=Options,
    build=build,
    metrics=(),
    summary="synthetic regression pair, shared linear model, loss scales 30x apart; closed-form optimum",
)
