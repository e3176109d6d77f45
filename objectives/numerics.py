"""Numerics both loops share: mixed precision, ``torch.compile``, one update step, peak memory.

Kept apart from the loops so they cannot drift: each loop calls :func:`backward` and :func:`step`
for every optimizer update, under :func:`autocast` for its forward passes.
"""

from __future__ import annotations

import contextlib
import resource
import sys
from collections.abc import Sequence
from typing import Any

import torch

from objectives.config import CompileConfig
from objectives.weighting.base import Weighting

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """``torch.autocast`` for ``bf16``/``fp16`` forward passes; nothing at all for ``fp32``."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=_DTYPES[precision])


def scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """A ``GradScaler``, enabled for ``fp16`` only (disabled, its calls are the plain optimizer calls).

    Raises:
        ValueError: ``fp16`` on a device that is not CUDA (the study file check catches an explicit
            ``device: cpu``; this one an ``auto`` device that resolved to the CPU).
    """
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(f"precision fp16 needs a CUDA device (GradScaler); this trial runs on {device.type}: use bf16")
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


def compiled(model: torch.nn.Module, option: bool | CompileConfig) -> torch.nn.Module:
    """The model, ``torch.compile``-d when ``objective.compile`` asks (compilation happens at first call:
    an error there fails the trial with its reason)."""
    if option is False:
        return model
    cfg = option if isinstance(option, CompileConfig) else CompileConfig()
    return torch.compile(model, mode=cfg.mode, backend=cfg.backend, fullgraph=cfg.fullgraph, dynamic=cfg.dynamic)  # type: ignore[return-value]


def backward(
    strategy: Weighting,
    grad_scaler: torch.amp.GradScaler,
    losses: torch.Tensor,
    base: torch.Tensor,
    params: Sequence[torch.Tensor],
    factor: float = 1.0,
) -> torch.Tensor:
    """Fill the step's gradients; return the effective weights (detached).

    The strategy's own backward, unless the sum must be scaled: by the GradScaler (``fp16``) or by
    ``factor`` (gradient accumulation). The study file allows those only for strategies whose gradient
    is a plain weighted sum with weights known before the step, so ``(w · losses).sum()`` is what their
    backward would propagate.
    """
    if not grad_scaler.is_enabled() and factor == 1.0:
        return strategy.backward(losses, base, params)
    if not grad_scaler.is_enabled() and strategy.parameters():
        # Learned terms (uncertainty's s_i/2, IMTL-L's −s_i) are part of the strategy's loss, not of Σ w_i L_i:
        # the whole backward, scaled by the batch's share of its accumulation group, added to the group's sum.
        every = [*params, *strategy.parameters()]
        before = [p.grad for p in every]
        for p in every:
            p.grad = None
        w = strategy.backward(losses, base, params)
        for p, earlier in zip(every, before, strict=True):
            if p.grad is not None:
                p.grad = p.grad * factor if earlier is None else earlier + p.grad * factor
            else:
                p.grad = earlier
        return w
    w = strategy.weights(losses, base).detach()
    grad_scaler.scale((w * losses).sum() * factor).backward()
    return w


def step(
    optimizer: torch.optim.Optimizer,
    grad_scaler: torch.amp.GradScaler,
    clip: Sequence[tuple[torch.nn.Module, float | None]] = (),
) -> None:
    """One optimizer step: unscale (``fp16``), clip each model's gradient norm, step (skipped by the scaler
    when an ``fp16`` gradient overflowed). No host sync: clipping scales by a clamped device tensor."""
    if grad_scaler.is_enabled() and any(max_norm is not None for _, max_norm in clip):
        grad_scaler.unscale_(optimizer)
    for model, max_norm in clip:
        if max_norm is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    grad_scaler.step(optimizer)


def reset_peak_memory(device: torch.device) -> None:
    """Start counting this trial's peak device memory (CUDA)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory so far, MiB: allocated on the GPU (since :func:`reset_peak_memory`) on CUDA, else the
    process's peak resident set (host RSS; DataLoader workers are processes of their own)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes on macOS, KiB on Linux
