"""``digits_codes``: two coupled models on scikit-learn's bundled digits (the alternating loop).

Model A maps an 8×8 image to a small code and has a target of its own: the image's top principal
components (PCA fitted on the training images, each component scaled to unit variance). Model B
classifies the digit from A's code. With few training images, B's loss alone lets A's code overfit
the labels; A's PCA target keeps the code a faithful summary of the image. So the loss weights, the
alternation schedule (how many steps A takes per step of B) and the mode (A trained through B or on
its own target only) change the validation loss and accuracy measurably.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field, PositiveInt
from torch import nn

from objectives.helpers import accuracy
from objectives.problems.base import Builtin, CoupledProblem
from objectives.problems.common import cross_entropy, digits, mse


class Options(BaseModel):
    """Options of ``digits_codes``."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    n_train: PositiveInt = Field(
        default=300, le=1500, description="training images; the rest are halved into validation and test"
    )
    code_dim: PositiveInt = Field(
        default=6, le=64, description="numbers in A's code, whose target is the image's top principal components"
    )
    hidden: PositiveInt = Field(32, description="hidden width of the models")


def build(options: Options, seed: int) -> CoupledProblem:
    images, labels = digits()
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    # The images past the training ones, halved: validation (what trials are scored on), then test.
    middle = options.n_train + (len(order) - options.n_train) // 2
    train, val, test = order[: options.n_train], order[options.n_train : middle], order[middle:]

    # A's target: PCA codes from the training images only (no validation leakage).
    mean = images[train].mean(dim=0)
    _, _, v = torch.linalg.svd(images[train] - mean, full_matrices=False)
    components = v[: options.code_dim].T  # (64, code_dim)
    codes = (images - mean) @ components
    codes = codes / codes[train].std(dim=0)

    h, k = options.hidden, options.code_dim
    return CoupledProblem(
        make_model_a=lambda: nn.Sequential(nn.Linear(64, h), nn.ReLU(), nn.Linear(h, k)),
        make_model_b=lambda: nn.Sequential(nn.Linear(k, h), nn.ReLU(), nn.Linear(h, 10)),
        train=(images[train], labels[train], codes[train]),
        val=(images[val], labels[val], codes[val]),
        test=(images[test], labels[test], codes[test]),
        loss_a=mse,
        loss_b=cross_entropy,
        metrics={"acc": accuracy},
    )


BUILTIN = Builtin(
    options=Options,
    build=build,
    metrics=("acc",),
    model_options=("hidden",),
    summary="digits: A encodes an image to a PCA-like code (its own target), B classifies from the code",
    loop="alternating",
    kind=CoupledProblem,
)
