"""``hypergrad``: loss weights that follow the hypergradient of the validation loss, one training.

Du et al. (2018), "Adapting Auxiliary Losses Using Gradient Similarity" (arXiv:1812.02224), and Lin et al.
(2019), "Adaptive Auxiliary Task Weighting for Reinforcement Learning" (NeurIPS): weight each loss by how
well its gradient agrees with the gradient of the loss one cares about. The update is exponentiated
gradient, Kivinen & Warmuth (1997), "Exponentiated Gradient versus Gradient Descent for Linear Predictors".

One SGD step θ' = θ − η Σ_i w_i g_i (g_i = ∇_θ L_i on the step's training batch, over every parameter the
step trains) changes the reference loss L_ref by ∂L_ref(θ')/∂w_i = −η ∇L_ref(θ')·g_i ≈ −η g_ref·g_i with
g_ref = ∇L_ref(θ) (first order in η). Every ``every`` steps the strategy computes the g_i (one backward per
loss) and g_ref (one forward and backward of a fresh reference batch), takes one step down that
hypergradient, and trains *this* step with the moved weights (the step the hypergradient is about):

    s_i ← s_i + lr · a_i,     w = Σ_j base_j · (base ⊙ e^s) / Σ_j base_j e^{s_j}

with a_i = cos(g_ref, g_i) (``normalize: cosine``, Du et al.: scale-free, so one ``lr`` fits losses of any
scale) or a_i = g_ref·g_i = −(1/η) ∂L_ref/∂w_i (``normalize: none``; ``lr`` absorbs η). s starts at 0, so
the weights start from the study's static weights (``base``, after the weight schedule) and the first
update moves from them; the learned factor e^s multiplies the schedule from then on. The step is greedy:
it lowers the reference loss one step ahead, not at the end of training (short-horizon bias, Wu et al.
2018), so it need not find the best static ratio even where one fixed ratio is best.

Why multiplicative (mirror descent with the entropy, not ``w_i += lr · a_i``): every weight stays positive
whatever the gradients — an additive step, like GradNorm's unfloored Adam step, can carry a weight below 0
and turn that task's descent into ascent — and a weight near 0 moves by a factor, so it can come back. s is
kept within :data:`LOG_FLOOR` of its largest entry, so no weight underflows to 0 and none grows without
bound. Why the weights keep the static weights' sum: the searched weights are a ratio and the learning rate
is searched on its own; without it, two tasks that both help would both grow, turning the strategy into a
learning-rate schedule (and under Adam an overall factor on the loss changes almost nothing).

``target``: ``total`` makes L_ref = L_a + L_b, the unweighted sum (``val_total_loss``); ``a`` or ``b`` one
task's loss (``val_a_loss``...); the alternating loop's consistency term is never part of it.

``reference: val`` (default): the loop gives each update a fresh batch of the validation split, on the
device, the model in eval mode as the validation is evaluated (:meth:`use_reference`). The weights are
then fitted to the validation split, so its values (the search's target) are no longer an unbiased
estimate of held-out loss, and comparing them with trials that never trained on it favours this
strategy: compare on the held-out test split (``sweep.evaluate``), which nothing here reads.
``reference: train``: the step's own training batch (no extra pass; validation stays unbiased) — but
then the target task's own gradient always agrees with itself, so the weights drift towards fitting the
target task's training data (overfitting where it has few samples). A caller of :meth:`backward` that
gave no reference (e.g. a unit test) gets the step's own batch too.

Costs per updating step: one backward per loss, plus one forward and backward of the reference batch
(``val``); between updates (``every`` > 1) nothing beyond ``static``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Literal

import torch
from pydantic import Field, PositiveInt

from objectives.frozen import Frozen
from objectives.weighting.base import Weighting, assign_gradient, task_gradients, weighted_backward

LOG_FLOOR = -40.0
"""Least log-weight factor s_i − max_j s_j: a weight is down-weighted at most e^40 ≈ 2·10^17× (never 0)."""


class Config(Frozen):
    type: Literal["hypergrad"] = Field(
        "hypergrad", description="selects `hypergrad`: weights following the validation loss's hypergradient"
    )
    lr: Annotated[
        float,
        Field(gt=0, description="step size of the log-weights per update (absorbs the model's learning rate)"),
    ] = 0.1
    normalize: Literal["cosine", "none"] = Field(
        "cosine",
        description="`cosine`: step by cos(g_ref, g_i), scale-free (Du et al.); `none`: by g_ref·g_i, the raw "
        "first-order hypergradient",
    )
    target: Literal["total", "a", "b"] = Field(
        "total", description="the reference loss: `total` (L_a + L_b, as val_total_loss), or one task's (`a`, `b`)"
    )
    reference: Literal["val", "train"] = Field(
        "val",
        description="`val`: a fresh validation batch per update (one more forward and backward; the validation "
        "values are then fitted, compare on the test split); `train`: the step's own training batch",
    )
    every: PositiveInt = Field(1, description="update the weights every this many steps (the others cost nothing)")


class Hypergrad(Weighting):
    weights_before_step = False  # the weights move with the step's own gradients before it trains
    own_backward = True
    reference_losses = True

    def __init__(self, cfg: Config, n_losses: int, device: torch.device, seed: int) -> None:
        self.cfg = cfg
        self.log_w = torch.zeros(n_losses, device=device)
        pick = {"total": [0, 1], "a": [0], "b": [1]}[cfg.target]
        self.pick = torch.zeros(n_losses, device=device)
        self.pick[[i for i in pick if i < n_losses]] = 1.0
        self.reference: Callable[[], torch.Tensor] | None = None
        self.steps = 0

    def use_reference(self, losses: Callable[[], torch.Tensor]) -> None:
        self.reference = losses if self.cfg.reference == "val" else None

    def weights(self, losses: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        scaled = base * torch.exp(self.log_w)
        return scaled * (base.sum() / scaled.sum())

    def backward(self, losses: torch.Tensor, base: torch.Tensor, params: Sequence[torch.Tensor]) -> torch.Tensor:
        params = [p for p in params if p.requires_grad]
        update, self.steps = self.steps % self.cfg.every == 0 and losses.requires_grad, self.steps + 1
        if not update:
            return weighted_backward(self.weights(losses, base), losses)
        grads = torch.stack(task_gradients(losses, params))  # (k, n): g_i of the training batch
        if self.reference is None:
            g_ref = self.pick.to(grads.dtype) @ grads  # the step's own batch (reference: train)
        else:
            target = (self.reference() * self.pick).sum()
            g_ref = torch.cat(
                [
                    (g if g is not None else torch.zeros_like(p)).reshape(-1)
                    for g, p in zip(torch.autograd.grad(target, params, allow_unused=True), params, strict=True)
                ]
            ).to(grads.dtype)
        align = grads @ g_ref  # −(1/η) ∂L_ref/∂w_i at first order
        if self.cfg.normalize == "cosine":
            align = align / (torch.linalg.vector_norm(grads, dim=1) * torch.linalg.vector_norm(g_ref)).clamp_min(1e-30)
        s = self.log_w.to(align.dtype) + self.cfg.lr * align
        self.log_w = (s - s.max()).clamp_min(LOG_FLOOR).detach()
        w = self.weights(losses, base).detach()
        assign_gradient((w.to(grads.dtype) @ grads).to(params[0].dtype), params)
        return w


build = Hypergrad
