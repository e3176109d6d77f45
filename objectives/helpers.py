"""Small pure helpers shared by every loop: weights, seeds, devices, optimizers, batching, metrics.

Keeping them here (not in each loop) is what stops the loops from drifting apart.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import random
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from objectives.config import OptimizerConfig


class Reporter(Protocol):
    """Called once per epoch with that epoch's metrics (plain floats). May raise to stop training."""

    def __call__(self, epoch: int, metrics: Mapping[str, float]) -> None: ...


class Checkpoint(Protocol):
    """Called once per epoch, before the reporter, with that epoch's metrics and the loop's models by name
    (``{"model": ...}``; ``{"model_a": ..., "model_b": ...}``), the models unwrapped from ``torch.compile``.
    It decides what to keep (a copy of the weights, or a reference to copy at the end)."""

    def __call__(self, epoch: int, metrics: Mapping[str, float], models: Mapping[str, torch.nn.Module]) -> None: ...


def plain(model: torch.nn.Module) -> torch.nn.Module:
    """The module itself, not its ``torch.compile`` wrapper (whose state_dict keys carry a prefix)."""
    return getattr(model, "_orig_mod", model)


class NonFiniteLossError(FloatingPointError):
    """A training or validation loss became NaN or infinite."""


def first_line(e: BaseException, with_type: bool = True) -> str:
    """An exception as one line: ``Type: first line of its message`` (the type alone when it has none)."""
    lines = str(e).strip().splitlines()
    if not with_type:
        return lines[0] if lines else type(e).__name__
    return f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__


def is_out_of_memory(e: BaseException) -> bool:
    """A CUDA (or host allocator) out-of-memory error: other settings may fit, so it is told apart."""
    return isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower()


def derive_seed(*keys: object) -> int:
    """A stable 31-bit seed from any keys (same keys → same seed, on every machine and run)."""
    digest = hashlib.sha256(repr(keys).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def seed_all(seed: int) -> None:
    """Seed torch, numpy and ``random`` in this process: model init, and a Dataset's augmentation when it
    runs here (``num_workers: 0``; DataLoader workers are seeded from the loader's generator)."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


def resolve_device(name: str) -> str:
    """``auto`` → ``cuda`` when available, else ``cpu``; anything else unchanged."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


# --- loss weights -------------------------------------------------------------------------------


def weights_from_log10_ratios(log10_ratios: Sequence[float]) -> tuple[float, ...]:
    """Weights summing to 1 from log10(w_i / w_last) for every loss but the last.

    Two losses: one value r gives (10^r, 1) / (10^r + 1). Computed stably for |r| up to hundreds.
    """
    logs = [x * math.log(10.0) for x in log10_ratios] + [0.0]
    top = max(logs)
    exps = [math.exp(x - top) for x in logs]
    total = sum(exps)
    return tuple(e / total for e in exps)


def weights_from_uniforms(uniforms: Sequence[float]) -> tuple[float, ...]:
    """Flat-Dirichlet weights from independent U(0, 1) draws (Optuna FAQ recipe).

    -log(u_i) are Exp(1) draws; normalised they are uniform on the simplex.
    """
    exps = [-math.log(max(u, 1e-300)) for u in uniforms]
    total = sum(exps)
    if total <= 0.0:  # every u_i == 1: no preference
        return tuple(1.0 / len(exps) for _ in exps)
    return tuple(e / total for e in exps)


# --- optimizers -----------------------------------------------------------------------------------


def build_optimizer(
    params: Iterable[torch.nn.Parameter] | Iterable[dict], cfg: OptimizerConfig
) -> torch.optim.Optimizer:
    """The torch optimizer a config names."""
    if cfg.type == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    cls = torch.optim.Adam if cfg.type == "adam" else torch.optim.AdamW
    return cls(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)


def param_group(model: torch.nn.Module, cfg: OptimizerConfig) -> dict:
    """One optimizer parameter group with the model's own LR, weight decay (and momentum for SGD)."""
    group: dict = {"params": list(model.parameters()), "lr": cfg.lr, "weight_decay": cfg.weight_decay}
    if cfg.type == "sgd":
        group["momentum"] = cfg.momentum
    else:
        group["betas"] = cfg.betas
    return group


@contextlib.contextmanager
def frozen(model: torch.nn.Module) -> Iterator[None]:
    """Within the block no gradient flows into ``model``'s parameters (their ``.grad`` is untouched)."""
    flags = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(flag)


# --- batching -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EpochPlan:
    """How one epoch pairs the batches of the tasks' datasets (two or more).

    Attributes:
        steps: Optimizer steps per epoch.
        cycles: For each dataset, whether it is repeated (re-shuffled each pass) to fill ``steps``.
        seen_fraction: For each dataset, the fraction of its samples seen in one epoch.
    """

    steps: int
    cycles: tuple[bool, ...]
    seen_fraction: tuple[float, ...]


def plan_epoch(
    sizes: Sequence[int | None],
    batch_sizes: Sequence[int],
    mixing: str,
    per_pass: Sequence[int] | None = None,
) -> EpochPlan:
    """Steps per epoch for ``zip`` (stop at the shorter) or ``cycle``/``accumulate`` (see all of the longer).

    Args:
        sizes: Samples in each training set (``None`` for a stream).
        batch_sizes: Each set's batch size.
        mixing: ``zip``, ``cycle`` or ``accumulate``.
        per_pass: Batches in one pass over each set, when not ``ceil(size / batch size)`` (a DataLoader
            that drops its last batch, a stream's or a capped steps per epoch).
    """
    passes = per_pass or tuple(math.ceil((n or 0) / b) for n, b in zip(sizes, batch_sizes, strict=True))
    steps = min(passes) if mixing == "zip" else max(passes)
    cycles = tuple(p < steps for p in passes)
    seen = tuple(
        min(1.0, steps * b / n) if n else min(1.0, steps / p)
        for n, b, p in zip(sizes, batch_sizes, passes, strict=True)
    )
    return EpochPlan(steps=steps, cycles=cycles, seen_fraction=seen)


def epoch_batches(
    n: int, batch_size: int, steps: int, generator: torch.Generator, device: torch.device | str
) -> tuple[torch.Tensor, ...]:
    """``steps`` index batches over a dataset of ``n`` samples, drawn on ``device``.

    The dataset is shuffled; when one pass gives fewer than ``steps`` batches it is re-shuffled and
    repeated (unlike ``itertools.cycle(loader)``, which replays the first pass's order). The last
    batch of a single pass may be smaller. No host sync: sizes are Python ints.
    """
    if steps <= math.ceil(n / batch_size):
        # One pass is enough (the longer set, or zip): a single permutation, last batch maybe smaller.
        return torch.split(torch.randperm(n, generator=generator, device=device), batch_size)[:steps]
    needed = steps * batch_size
    passes = math.ceil(needed / n)
    order = torch.cat([torch.randperm(n, generator=generator, device=device) for _ in range(passes)])
    return torch.split(order[:needed], batch_size)


# --- metrics --------------------------------------------------------------------------------------


def accuracy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Fraction of rows whose arg-max equals the target class."""
    return (logits.argmax(dim=-1) == target).float().mean()


def chunked_means(
    n: int, chunk: int, batch_means: Callable[[slice], Mapping[str, torch.Tensor]]
) -> dict[str, torch.Tensor]:
    """Means over ``n`` samples from per-chunk means, weighted by chunk size (no host sync).

    ``batch_means(rows)`` returns batch-mean tensors for the samples in ``rows``; chunking only bounds
    memory and never changes the result.
    """
    sums: dict[str, torch.Tensor] = {}
    for start in range(0, n, chunk):
        rows = slice(start, min(start + chunk, n))
        for key, value in batch_means(rows).items():
            weighted = value * (rows.stop - rows.start)
            sums[key] = sums[key] + weighted if key in sums else weighted
    return {key: total / n for key, total in sums.items()}


def to_floats(tensors: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """0-d device tensors to Python floats in one device→host transfer (the epoch's one sync)."""
    values = torch.stack([t.detach().float() for t in tensors.values()]).tolist()
    return dict(zip(tensors, values, strict=True))


FINITE_CHECK_EVERY = 32


def check_running_losses(sums: torch.Tensor, step: int, epoch: int) -> None:
    """Every ``FINITE_CHECK_EVERY`` steps, stop as soon as a running loss sum is NaN or infinite.

    One host sync per 32 steps (not per step): a diverged trial stops within 32 steps instead of
    burning the rest of its epoch.
    """
    if (step + 1) % FINITE_CHECK_EVERY == 0 and not bool(torch.isfinite(sums).all()):
        raise NonFiniteLossError(f"a training loss is not finite at epoch {epoch}, step {step}")


def check_finite(metrics: Mapping[str, float], epoch: int) -> None:
    """Raise :class:`NonFiniteLossError` naming the first loss that is NaN or infinite."""
    for name, value in metrics.items():
        if name.endswith("_loss") and not math.isfinite(value):
            raise NonFiniteLossError(f"{name} is {value} at epoch {epoch}")


def cache_root(cache_dir: str | None = None) -> Path:
    """Where sweep keeps files it can always make again (the digits as PNG, the MLflow template):
    ``cache_dir``, else ``$SWEEP_CACHE_DIR``, else ``~/.cache/sweep``."""
    return Path(cache_dir or os.environ.get("SWEEP_CACHE_DIR") or "~/.cache/sweep").expanduser()
