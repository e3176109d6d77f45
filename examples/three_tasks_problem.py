"""A user problem with three named tasks: one synthetic scene, three heads, each task with its own data.

Named in a study file as ``problem: {name: "examples.three_tasks_problem:make", options: {n: 1500}}``, with
``objective.tasks: [depth, edges, kind]`` (or the weights given by task name). sweep imports this module
(running its code) and calls ``make(seed=<data seed>, **options)``.

The tasks, as a multi-task vision model would have them, in miniature:

- ``depth``: a regression of 4 values (mean squared error), ``n`` labelled inputs;
- ``edges``: 8 binary labels (binary cross-entropy, several labels per input), ``n // 2``;
- ``kind``: a 5-way classification (cross-entropy), ``n // 10`` — scarce, so it leans on the others.

Each task has its own inputs (three datasets, different sizes), all read through the one shared trunk.
"""

from __future__ import annotations

import torch
from torch import nn

from objectives.helpers import accuracy
from objectives.problems import Problem, Task


class ThreeHeads(nn.Module):
    """A shared trunk and one head per task; returns the three outputs as a tuple (``Task.head`` picks)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh())
        self.depth = nn.Linear(hidden, 4)
        self.edges = nn.Linear(hidden, 8)
        self.kind = nn.Linear(hidden, 5)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = self.trunk(x)
        return self.depth(h), self.edges(h), self.kind(h)


def bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return nn.functional.binary_cross_entropy_with_logits(logits, target)


def label_accuracy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Fraction of the binary labels predicted right."""
    return ((logits > 0).float() == target).float().mean()


def make(seed: int, n: int = 1500, dim: int = 12, hidden: int = 32) -> Problem:
    """Build the problem. ``seed`` is the data seed sweep passes; the rest are the study's options."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(dim, 6, generator=g)  # the scene's 6 latent factors, seen through a linear mix
    w_depth, w_edges, w_kind = (torch.randn(6, k, generator=g) for k in (4, 8, 5))

    def scenes(m: int) -> tuple[torch.Tensor, torch.Tensor]:
        z = torch.randn(m, 6, generator=g)
        return z @ mix.T + 0.1 * torch.randn(m, dim, generator=g), z

    def split(m: int, label: str) -> tuple[torch.Tensor, torch.Tensor]:
        x, z = scenes(m)
        if label == "depth":
            return x, z @ w_depth + 0.1 * torch.randn(m, 4, generator=g)
        if label == "edges":
            return x, (z @ w_edges > 0).float()
        return x, (z @ w_kind).argmax(dim=1)

    sizes = {"depth": n, "edges": n // 2, "kind": n // 10}
    losses = {"depth": nn.functional.mse_loss, "edges": bce, "kind": nn.functional.cross_entropy}
    metrics = {"depth": {}, "edges": {"acc": label_accuracy}, "kind": {"acc": accuracy}}
    tasks = {}
    for head, name in enumerate(sizes):
        train, val, test = split(sizes[name], name), split(300, name), split(300, name)
        tasks[name] = Task(train=train, val=val, test=test, loss=losses[name], head=head, metrics=metrics[name])
    return Problem(make_model=lambda: ThreeHeads(dim, hidden), tasks=tasks)
