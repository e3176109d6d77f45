"""Problems for the evaluation tests (named as ``tests.support.evaluation_problems:<function>``)."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import Dataset

from objectives.problems import Problem, Task


class Tripwire(Dataset):
    """A test split that counts its reads and, while ``armed``, fails any read: a search that completes
    with it armed never touched the test data."""

    armed = False
    reads = 0

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def _check(self) -> None:
        if type(self).armed:
            raise AssertionError("the test split was read during the search")

    def __len__(self) -> int:
        self._check()
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        self._check()
        type(self).reads += 1
        return self.x[i], self.y[i]


def _split(g: torch.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(n, 4, generator=g)
    return x, x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]) + 0.1 * torch.randn(n, 1, generator=g)


def guarded(seed: int, with_test: bool = True) -> Problem:
    """A linear two-task problem whose test splits are :class:`Tripwire` datasets (or absent)."""
    g = torch.Generator().manual_seed(seed)

    def task() -> Task:
        test = Tripwire(*_split(g, 48)) if with_test else None
        return Task(train=_split(g, 96), val=_split(g, 32), test=test, loss=nn.functional.mse_loss)

    return Problem(make_model=lambda: nn.Linear(4, 1), a=task(), b=task())
