"""Problems that fail on purpose, for fault tests (named as ``tests.fault_problems:<function>``)."""

from __future__ import annotations

import os
from dataclasses import replace

import torch
from torch import nn

from objectives.problems import Problem, Task


def _task(g: torch.Generator, n: int = 64) -> Task:
    x = torch.randn(n, 4, generator=g)
    return Task(
        train=(x, x.sum(1, keepdim=True)), val=(x[:16], x[:16].sum(1, keepdim=True)), loss=nn.functional.mse_loss
    )


class _OutOfMemory(nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")


def oom(seed: int, fail: bool = True) -> Problem:
    """A linear problem whose model runs out of (simulated) CUDA memory when ``fail``."""
    g = torch.Generator().manual_seed(seed)
    model = (lambda: _OutOfMemory(4, 1)) if fail else (lambda: nn.Linear(4, 1))
    return Problem(make_model=model, a=_task(g), b=_task(g))


class _Explodes(nn.Linear):
    """Fine for 40 forward passes, then infinite outputs (a divergence in the middle of an epoch)."""

    calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        type(self).calls += 1
        out = super().forward(x)
        return out * float("inf") if type(self).calls > 40 else out


def explodes(seed: int) -> Problem:
    g = torch.Generator().manual_seed(seed)
    _Explodes.calls = 0
    return Problem(make_model=lambda: _Explodes(4, 1), a=_task(g, 2048), b=_task(g, 2048))


class _Crashes(nn.Linear):
    """Kills its process at the first forward pass (a segfault or an OOM kill, as a worker sees it)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        os._exit(3)


def crashes(seed: int) -> Problem:
    g = torch.Generator().manual_seed(seed)
    return Problem(make_model=lambda: _Crashes(4, 1), a=_task(g), b=_task(g))


def empty(seed: int, which: str = "a_train") -> Problem:
    """A problem whose ``which`` split (``a_train``, ``b_val``...) has no samples: a Dataset of length 0."""
    g = torch.Generator().manual_seed(seed)
    tasks = {"a": _task(g), "b": _task(g)}
    name, split = which.split("_")
    tasks[name] = replace(tasks[name], **{split: torch.utils.data.TensorDataset(torch.zeros(0, 4), torch.zeros(0, 1))})
    return Problem(make_model=lambda: nn.Linear(4, 1), a=tasks["a"], b=tasks["b"])


class _Stream(torch.utils.data.IterableDataset):
    def __iter__(self):  # type: ignore[no-untyped-def]
        g = torch.Generator().manual_seed(0)
        while True:
            x = torch.randn(4, generator=g)
            yield x, x.sum(0, keepdim=True)


def stream_without_length(seed: int) -> Problem:
    """Task a's training data is an endless stream and nobody says how many steps an epoch has."""
    g = torch.Generator().manual_seed(seed)
    a = replace(_task(g), train=_Stream())
    return Problem(make_model=lambda: nn.Linear(4, 1), a=a, b=_task(g))


class _Noisy(torch.utils.data.Dataset):
    """A map-style Dataset whose items carry fresh noise from torch's, numpy's and python's RNGs (as data
    augmentation does), so only seeded loaders and workers make a run replay."""

    def __init__(self, x: torch.Tensor) -> None:
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        import random

        import numpy as np

        noise = 0.01 * (torch.randn(4) + float(np.random.randn()) + random.random())
        return self.x[i] + noise, self.x[i].sum(0, keepdim=True)


def augmented(seed: int) -> Problem:
    """Both tasks' training splits are Datasets with random augmentation (the DataLoader path)."""
    g = torch.Generator().manual_seed(seed)
    a, b = _task(g, 96), _task(g, 160)
    a, b = replace(a, train=_Noisy(a.train[0])), replace(b, train=_Noisy(b.train[0]))
    return Problem(make_model=lambda: nn.Linear(4, 1), a=a, b=b)
