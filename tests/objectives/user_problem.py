"""A user problem reachable as ``tests.objectives.user_problem:make`` (used by test_problems.py)."""

from __future__ import annotations

from typing import Any

import torch

from objectives.problems import Problem, Task

CALLS: list[dict[str, Any]] = []
"""Every call of :func:`make`, as its keyword arguments, so tests can see how it was called."""


def _mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.mse_loss(pred, target)


def make(seed: int, n: int = 32) -> Problem:
    """Two small linear regression tasks of ``n`` samples each, drawn from ``seed``."""
    CALLS.append({"seed": seed, "n": n})
    g = torch.Generator().manual_seed(seed)

    def sample() -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randn(n, 3, generator=g)
        return x, x.sum(dim=1, keepdim=True)

    a = Task(train=sample(), val=sample(), loss=_mse)
    b = Task(train=sample(), val=sample(), loss=_mse)
    return Problem(make_model=lambda: torch.nn.Linear(3, 1), a=a, b=b)


def make_any(seed: int, **options: Any) -> Problem:
    """Takes any option (``**options``), so no option name can be refused up front."""
    return make(seed)


def not_a_problem(seed: int) -> dict[str, int]:
    """Returns something that is not a Problem."""
    return {"seed": seed}


NOT_CALLABLE = 3
