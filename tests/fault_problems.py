"""Problems that fail on purpose, for fault tests (named as ``tests.fault_problems:<function>``)."""

from __future__ import annotations

import os

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
