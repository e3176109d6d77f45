"""``digits_pair``: scikit-learn's bundled 8×8 digits, two digits side by side, two labels.

Each input is a left and a right digit image (128 pixels). Task a predicts the left digit and has
plenty of labelled pairs; task b predicts the right digit and has few. One model encodes each half
with the same encoder and has one head per task, so task a's many labels teach the encoder that task b
relies on: the loss weights trade task b's overfitting against what it borrows from task a, and the
best weights are visibly not (0.5, 0.5). Train, validation and test pairs are built from disjoint images
(1200, 300 and 297 of the 1797, drawn with the data seed).
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field, PositiveInt
from torch import nn

from objectives.helpers import accuracy
from objectives.problems.base import Builtin, Problem, Task
from objectives.problems.common import cross_entropy, digits


class Options(BaseModel):
    """Options of ``digits_pair``."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    n_a: PositiveInt = Field(1000, description="task a's labelled pairs (the left digit)")
    n_b: PositiveInt = Field(60, description="task b's labelled pairs (the right digit)")
    n_val: PositiveInt = Field(500, description="validation pairs")
    n_test: PositiveInt = Field(500, description="held-out test pairs")
    hidden: PositiveInt = Field(32, description="width of the shared per-half encoder")


class PairNet(nn.Module):
    """A shared per-half encoder and one linear head per task."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.head_a = nn.Linear(2 * hidden, 10)
        self.head_b = nn.Linear(2 * hidden, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = torch.cat([self.encoder(x[:, :64]), self.encoder(x[:, 64:])], dim=1)
        return self.head_a(features), self.head_b(features)


def build(options: Options, seed: int) -> Problem:
    images, labels = digits()
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(images), generator=g)
    train_ids, val_ids, test_ids = order[:1200], order[1200:1500], order[1500:]

    def pairs(pool: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        left = pool[torch.randint(len(pool), (n,), generator=g)]
        right = pool[torch.randint(len(pool), (n,), generator=g)]
        return torch.cat([images[left], images[right]], dim=1), labels[left], labels[right]

    xa, ya, _ = pairs(train_ids, options.n_a)
    xb, _, yb = pairs(train_ids, options.n_b)
    xv, yv_left, yv_right = pairs(val_ids, options.n_val)
    xt, yt_left, yt_right = pairs(test_ids, options.n_test)
    metrics = {"acc": accuracy}
    a = Task(train=(xa, ya), val=(xv, yv_left), test=(xt, yt_left), loss=cross_entropy, head=0, metrics=metrics)
    b = Task(train=(xb, yb), val=(xv, yv_right), test=(xt, yt_right), loss=cross_entropy, head=1, metrics=metrics)
    return Problem(make_model=lambda: PairNet(options.hidden), a=a, b=b)


BUILTIN = Builtin(
    options=Options,
    build=build,
    metrics=("acc",),
    model_options=("hidden",),
    summary="sklearn digits side by side: left label plentiful (task a), right label scarce (task b)",
)
