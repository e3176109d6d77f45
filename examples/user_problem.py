"""A user problem: one synthetic dataset with two targets, one model with two heads.

Named in a study file as ``problem: {name: "examples.user_problem:make", options: {n: 2000}}``.
sweep imports this module (running its code) and calls ``make(seed=<data seed>, **options)``.
"""

from __future__ import annotations

import torch
from torch import nn

from objectives.helpers import accuracy
from objectives.problems import Problem, Task


class TwoHeads(nn.Module):
    """A shared trunk, a regression head (task a) and a two-class head (task b)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh())
        self.regress = nn.Linear(hidden, 1)
        self.classify = nn.Linear(hidden, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.trunk(x)
        return self.regress(h), self.classify(h)


def make(seed: int, n: int = 2000, dim: int = 10, hidden: int = 32) -> Problem:
    """Build the problem. ``seed`` is the data seed sweep passes; the rest are the study's options."""
    g = torch.Generator().manual_seed(seed)
    n_val = n // 4
    x = torch.randn(n + n_val, dim, generator=g)
    w = torch.randn(dim, 1, generator=g)
    y_reg = x @ w + 0.1 * torch.randn(n + n_val, 1, generator=g)
    # A held-out test set (drawn last, from the same distribution): only sweep.evaluate reads it.
    x_test = torch.randn(n_val, dim, generator=g)
    y_reg_test = x_test @ w + 0.1 * torch.randn(n_val, 1, generator=g)

    def parity(x: torch.Tensor) -> torch.Tensor:
        return (x[:, 0] * x[:, 1] > 0).long()  # needs a non-linear feature the regression does not

    y_cls = parity(x)
    train, val = slice(0, n), slice(n, n + n_val)
    regression = Task(
        train=(x[train], y_reg[train]),
        val=(x[val], y_reg[val]),
        test=(x_test, y_reg_test),
        loss=nn.functional.mse_loss,
        head=0,
    )
    classification = Task(
        train=(x[train], y_cls[train]),
        val=(x[val], y_cls[val]),
        test=(x_test, parity(x_test)),
        loss=nn.functional.cross_entropy,
        head=1,
        metrics={"acc": accuracy},
    )
    return Problem(make_model=lambda: TwoHeads(dim, hidden), a=regression, b=classification)
