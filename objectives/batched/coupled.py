"""A coupled problem's models and loss terms for one member of a vectorized group, and whether the
problem's own consistency term can run vectorized (:func:`why_not_vmapped`).

Inside ``torch.vmap`` a member's models are its parameters applied to a template
(:func:`torch.func.functional_call`); the consistency term gets them as plain functions, called as the
modules would be (``model_b(inputs)``, ``model_a(x)``).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, vmap

from objectives.alternating import losses as standalone_losses
from objectives.config import AlternatingConfig
from objectives.data import take
from objectives.helpers import first_line
from objectives.problems import CoupledProblem


def call(template: nn.Module, params: dict[str, torch.Tensor], inputs: Any) -> Any:
    """The member's model on a batch's inputs, as :func:`objectives.data.call` calls a module."""
    if isinstance(inputs, dict):
        return functional_call(template, params, (), inputs)
    return functional_call(template, params, tuple(inputs) if isinstance(inputs, list | tuple) else (inputs,))


def model(template: nn.Module, params: dict[str, torch.Tensor]) -> Callable[..., Any]:
    """The member's model as a function, called as the module is: ``model(*args, **kwargs)``."""
    return lambda *args, **kwargs: functional_call(template, params, args, kwargs)


def losses(
    problem: CoupledProblem,
    tmpl_a: nn.Module,
    p_a: dict[str, torch.Tensor],
    tmpl_b: nn.Module,
    p_b: dict[str, torch.Tensor],
    batch: tuple[Any, ...],
    z: torch.Tensor,
    terms: tuple[str, ...],
) -> torch.Tensor:
    """:func:`objectives.alternating.losses` with the member's parameters ``p_a``, ``p_b`` for A's output
    ``z`` on ``batch`` = ``(x, y, t_a)`` and the config's ``loss_terms``; the consistency term gets
    ``model_a`` with ``p_a`` (pass them detached where the standalone step freezes A)."""
    x, y, t = batch
    return standalone_losses(problem, model(tmpl_b, p_b), z, y, t, terms, x=x, model_a=model(tmpl_a, p_a))


def why_not_vmapped(problem: CoupledProblem, model_a: nn.Module, model_b: nn.Module) -> str:
    """Why the problem's own consistency function cannot run in a vectorized group; ``""`` when it can
    (or the problem has none: the default term is vectorized).

    It runs once under ``torch.vmap`` (random operations refused, as in the group's step) on two training
    rows, with ``model_a`` and ``model_b``'s parameters as a one-member group. Refused: a function that
    draws random numbers (an augmentation: its draws would differ from each member's standalone run) or
    that vmap cannot run (``.item()``, data-dependent Python branches...); the group then trains one
    trial after another.
    """
    if problem.consistency is None:
        return ""
    device = problem.train[1].device
    rows = torch.arange(min(2, len(problem.train[1])), device=device).unsqueeze(0)
    batch = take(problem.train, rows)
    templates = [copy.deepcopy(m).to("meta") for m in (model_a, model_b)]
    p_a, p_b = ({n: p.detach().to(device).unsqueeze(0) for n, p in m.named_parameters()} for m in (model_a, model_b))

    def member(pa: dict[str, torch.Tensor], pb: dict[str, torch.Tensor], b: tuple[Any, ...]) -> torch.Tensor:
        z = call(templates[0], pa, b[0])
        return losses(problem, templates[0], pa, templates[1], pb, b, z, AlternatingConfig.LOSSES)  # all on

    try:
        # Its warnings (vmap's "performance drop" fallbacks) are the group's to show when it trains.
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            vmap(member, randomness="error")(p_a, p_b, batch)
    except Exception as e:
        return (
            f"the problem's own consistency function does not run under torch.vmap ({first_line(e)}); "
            "a deterministic term that only calls its arguments is vectorized"
        )
    return ""
