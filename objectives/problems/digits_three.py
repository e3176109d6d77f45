"""``digits_three``: scikit-learn's bundled 8×8 digits, three tasks of different kinds and sizes.

One 8×8 digit image in (64 pixels), one shared encoder, one head per task:

- ``digit``: which digit (10-way classification, cross-entropy); 300 labelled images;
- ``value``: the digit's value as a number scaled to [0, 1] (regression, mean squared error); 1000
  labelled images — plentiful and related to ``digit``, so it teaches the encoder the order of the
  digits at a small weight and pulls it off the class boundaries at a large one;
- ``parity``: odd or even (2-way classification); 60 labelled images — scarce, so it borrows from the
  other two.

Each task draws its own training images (disjoint from the validation and test images: 1200, 300 and 297
of the 1797, drawn with the data seed), so the three training sets differ in size as well as in kind;
validation and test images carry all three labels. The losses live on different scales (a 10-way
cross-entropy starts near 2.3, the regression near 0.1), so equal weights are not equal effort: the
example of a problem where N weights must be searched.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field, PositiveInt
from torch import nn

from objectives.helpers import accuracy
from objectives.problems.base import Builtin, Problem, Task
from objectives.problems.common import cross_entropy, digits, mse

TASKS = ("digit", "value", "parity")


class Options(BaseModel):
    """Options of ``digits_three``."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    n_digit: PositiveInt = Field(300, description="task digit's labelled images (10-way classification)")
    n_value: PositiveInt = Field(1000, description="task value's labelled images (regression of the digit's value)")
    n_parity: PositiveInt = Field(60, description="task parity's labelled images (odd or even)")
    hidden: PositiveInt = Field(32, description="width of the shared encoder")


class ThreeHeads(nn.Module):
    """A shared encoder and one linear head per task: 10 logits, 1 value, 2 logits."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.digit = nn.Linear(hidden, 10)
        self.value = nn.Linear(hidden, 1)
        self.parity = nn.Linear(hidden, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        features = self.encoder(x)
        return self.digit(features), self.value(features).squeeze(-1), self.parity(features)


def mean_absolute_error(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean |prediction − target| (in the scaled value's units: 1/9 is one digit)."""
    return (pred - target).abs().mean()


def build(options: Options, seed: int) -> Problem:
    images, labels = digits()
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(images), generator=g)
    train_ids, val_ids, test_ids = order[:1200], order[1200:1500], order[1500:]

    def draw(n: int) -> torch.Tensor:
        return train_ids[torch.randint(len(train_ids), (n,), generator=g)]

    def targets(ids: torch.Tensor) -> dict[str, torch.Tensor]:
        y = labels[ids]
        return {"digit": y, "value": y.float() / 9.0, "parity": y % 2}

    val, test = targets(val_ids), targets(test_ids)
    kinds = {
        "digit": (cross_entropy, {"acc": accuracy}),
        "value": (mse, {"mae": mean_absolute_error}),
        "parity": (cross_entropy, {"acc": accuracy}),
    }
    sizes = {"digit": options.n_digit, "value": options.n_value, "parity": options.n_parity}
    tasks = {}
    for head, name in enumerate(TASKS):
        ids = draw(sizes[name])
        loss, metrics = kinds[name]
        tasks[name] = Task(
            train=(images[ids], targets(ids)[name]),
            val=(images[val_ids], val[name]),
            test=(images[test_ids], test[name]),
            loss=loss,
            head=head,
            metrics=metrics,
        )
    return Problem(make_model=lambda: ThreeHeads(options.hidden), tasks=tasks)


BUILTIN = Builtin(
    options=Options,
    build=build,
    metrics={"digit": ("acc",), "value": ("mae",), "parity": ("acc",)},
    model_options=("hidden",),
    tasks=TASKS,
    summary="sklearn digits, three tasks: digit (10 classes, 300), value (regression, 1000), parity (2 classes, 60)",
)
