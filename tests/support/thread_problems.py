"""A problem whose model notes, and depends on, torch's thread count (``tests.support.thread_problems:probe``)."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from objectives.problems import Problem, Task


class ThreadProbe(nn.Linear):
    """A linear model that records ``torch.get_num_threads()`` at each forward pass and adds it, scaled, to
    its output. Real models do the same at rounding level: their sums are split over the threads, so
    another thread count adds them in another order (an image study's values changed in the third digit);
    on a model this small torch does not split anything, so the probe makes the dependence visible."""

    seen: ClassVar[list[int]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        threads = torch.get_num_threads()
        ThreadProbe.seen.append(threads)
        return super().forward(x) + 1e-3 * threads


def probe(seed: int) -> Problem:
    """A linear two-task problem (train, validation and test splits) learnt by a :class:`ThreadProbe`."""
    g = torch.Generator().manual_seed(seed)
    w = torch.tensor([[1.0], [-2.0], [0.5], [3.0]])

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randn(n, 4, generator=g)
        return x, x @ w + 0.1 * torch.randn(n, 1, generator=g)

    def task() -> Task:
        return Task(train=split(96), val=split(32), test=split(48), loss=nn.functional.mse_loss)

    return Problem(make_model=lambda: ThreadProbe(4, 1), a=task(), b=task())
