"""A user coupled problem (the alternating loop): an encoder A feeding a classifier B, each with its own optimizer.

The data is generated from a few hidden factors ``f``: the 64-number input ``x`` is a noisy non-linear
mixture of them, the class ``y`` is read off them, and A's own target ``t_a`` is a noisy measurement of
them. A encodes ``x`` to a code ``z`` of the factors' size, B classifies ``y`` from the code. A's
target tells A what its code should mean; B's loss tells it what the classifier needs.

The consistency term is the user's: B's class distribution on A's code should match its distribution
on A's target (a KL divergence, a better fit for a classifier's logits than the default squared
difference). With ``consistency: views`` it is instead a term on two views of the input, the seed
article's kind: B's distribution on A's code of a noisy copy of ``x`` against its distribution on the
batch; such a term takes ``x`` and ``model_a`` by keyword. A's metric ``cos`` (cosine between code and
target) is logged as ``val_a_cos``.

Named in a study file as ``problem: {name: "examples.coupled_problem:make", options: {n: 1500}}``
with ``loop: alternating``; sweep imports this module (running its code) and calls
``make(seed=<data seed>, **options)``.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from objectives.helpers import accuracy
from objectives.problems import CoupledProblem


def consistency(
    z: torch.Tensor, y_hat: torch.Tensor, y: torch.Tensor, t_a: torch.Tensor, model_b: nn.Module
) -> torch.Tensor:
    """KL(B(t_a) ‖ B(z)), batch mean: B should answer on A's code as it answers on A's target."""
    return F.kl_div(
        F.log_softmax(y_hat, dim=-1), F.log_softmax(model_b(t_a), dim=-1), reduction="batchmean", log_target=True
    )


def views(
    z: torch.Tensor,
    y_hat: torch.Tensor,
    y: torch.Tensor,
    t_a: torch.Tensor,
    model_b: nn.Module,
    *,
    x: torch.Tensor,
    model_a: nn.Module,
) -> torch.Tensor:
    """KL(B(A(x)) ‖ B(A(x + noise))), batch mean: B should answer alike on two views of the input.

    It draws its noise from torch's RNG (seeded per trial, so a trial replays), which is why a
    vectorized group (``parallel_trials``) trains such trials one after another.
    """
    other = model_b(model_a(x + 0.1 * torch.randn_like(x)))
    return F.kl_div(F.log_softmax(other, dim=-1), F.log_softmax(y_hat, dim=-1), reduction="batchmean", log_target=True)


TERMS = {"target": consistency, "views": views}  # the ``consistency`` option of make


def cosine(z: torch.Tensor, t_a: torch.Tensor) -> torch.Tensor:
    """Mean cosine similarity of each code with its target (a per-sample mean, so chunked means add up)."""
    return F.cosine_similarity(z, t_a, dim=-1).mean()


def make(
    seed: int,
    n: int = 1500,
    n_val: int = 500,
    factors: int = 4,
    classes: int = 5,
    hidden: int = 32,
    noise: float = 0.3,
    consistency: Literal["target", "views"] = "target",
) -> CoupledProblem:
    """Build the problem. ``seed`` is the data seed sweep passes; the rest are the study's options
    (``consistency``: which term above, :func:`consistency` on A's target or :func:`views` of x)."""
    g = torch.Generator().manual_seed(seed)
    rows = n + n_val
    f = torch.randn(rows, factors, generator=g)
    mixing = torch.randn(factors, 64, generator=g) / factors**0.5
    x = torch.tanh(f @ mixing) + noise * torch.randn(rows, 64, generator=g)
    y = (f @ torch.randn(factors, classes, generator=g)).argmax(dim=1)
    t_a = f + noise * torch.randn(rows, factors, generator=g)  # a noisy measurement of the factors
    train, val = slice(0, n), slice(n, rows)
    return CoupledProblem(
        make_model_a=lambda: nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, factors)),
        make_model_b=lambda: nn.Sequential(nn.Linear(factors, hidden), nn.ReLU(), nn.Linear(hidden, classes)),
        train=(x[train], y[train], t_a[train]),
        val=(x[val], y[val], t_a[val]),
        loss_a=F.mse_loss,
        loss_b=F.cross_entropy,
        metrics={"acc": accuracy},
        consistency=TERMS[consistency],
        metrics_a={"cos": cosine},
    )
