"""What every weighting strategy is (a protocol) and the two backward passes strategies share."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import ClassVar, Protocol

import torch


class Weighting(Protocol):
    """A weighting strategy: a small object with its own state that turns the per-loss values of a
    step into the gradient the optimizer applies.

    ``losses`` are the unweighted per-loss values of the step (a ``(k,)`` tensor with its graph);
    ``base`` the static weights at this step (after the loss-weight schedule). Nothing outside sets
    attributes on a strategy: its state changes only through these methods.

    Strategies subclass this protocol explicitly: only :meth:`weights` is required; the other hooks
    default to a plain weighted sum with no learned parameters and no state to update. What a
    strategy needs from the loop it declares in four class variables:

    Attributes:
        weights_before_step: The step's gradient is exactly ``Σ_i w_i ∇L_i`` with weights that do not
            depend on the step's losses or gradients, and the strategy learns nothing from the
            backward pass, so a loop may take :meth:`weights` first and back-propagate each loss on
            its own (``mixing=accumulate``) instead of calling :meth:`backward`.
        losses_after_step: :meth:`after_step` needs the step's losses recomputed after the optimizer
            step (an extra forward pass); loops call it only for such strategies.
        own_backward: :meth:`backward` computes per-loss gradients itself (one backward pass per
            loss) rather than one backward of a weighted sum.
        reference_losses: :meth:`backward` may ask for the losses of a fresh reference batch (the
            validation split's): loops give it a function that computes them through :meth:`use_reference`.
        weights_from_losses: :meth:`weights` depend on the step's own loss values (FAMO, GLS, STCH: the
            loss is not linear in the losses), so a step over several batches added up (gradient
            accumulation) is not the step over their union; a strategy without it whose backward is its
            own (uncertainty's learned terms) is scaled as a whole when accumulated.
    """

    weights_before_step: ClassVar[bool] = True
    losses_after_step: ClassVar[bool] = False
    own_backward: ClassVar[bool] = False
    reference_losses: ClassVar[bool] = False
    weights_from_losses: ClassVar[bool] = False

    def parameters(self) -> list[torch.nn.Parameter]:
        """Learned parameters the model's optimizer must also update (uncertainty's log-variances)."""
        return []

    def weights(self, losses: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        """The effective weights of this step, ``(k,)``."""
        ...

    def backward(self, losses: torch.Tensor, base: torch.Tensor, params: Sequence[torch.Tensor]) -> torch.Tensor:
        """Fill ``.grad`` of ``params`` for this step; return the effective weights (detached)."""
        return weighted_backward(self.weights(losses, base), losses)

    def use_reference(self, losses: Callable[[], torch.Tensor]) -> None:
        """Called once before training when :attr:`reference_losses` is set: ``losses()`` computes the
        per-loss values ``(k,)``, with their graph, of a fresh batch of the validation split (hypergrad)."""

    def after_step(self, losses_after: Callable[[], torch.Tensor]) -> None:
        """Called after the optimizer step when :attr:`losses_after_step` is set; ``losses_after()``
        recomputes the step's losses (FAMO)."""

    def end_epoch(self, mean_losses: torch.Tensor) -> None:
        """Called once per epoch with the epoch's mean training losses (DWA)."""


def weighted_backward(weights: torch.Tensor, losses: torch.Tensor, extra: torch.Tensor | float = 0.0) -> torch.Tensor:
    """``(weights · losses).sum() + extra`` back-propagated; returns the weights, detached."""
    ((weights * losses).sum() + extra).backward()
    return weights.detach()


def task_gradients(losses: torch.Tensor, params: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Each loss's gradient w.r.t. ``params``, flattened into one vector per loss (zeros where a loss
    does not reach a parameter, or has no graph at all). Costs one backward pass per loss."""
    flat = []
    for i in range(len(losses)):
        if not losses[i].requires_grad:
            flat.append(torch.cat([torch.zeros_like(p).reshape(-1) for p in params]))
            continue
        grads = torch.autograd.grad(losses[i], params, retain_graph=True, allow_unused=True)
        flat.append(
            torch.cat(
                [(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params, strict=True)]
            )
        )
    return flat


def assign_gradient(flat: torch.Tensor, params: Sequence[torch.Tensor]) -> None:
    """Write one flat gradient vector into ``params``' ``.grad`` (accumulating, like ``backward``)."""
    offset = 0
    for p in params:
        n = p.numel()
        g = flat[offset : offset + n].view_as(p)
        p.grad = g.clone() if p.grad is None else p.grad + g
        offset += n
