"""Losses and data shared by the built-in problems."""

from __future__ import annotations

import torch
from torch import nn


def mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return nn.functional.mse_loss(pred, target)


def cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(logits, target)


def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's bundled 8×8 digits (no download): images scaled to [0, 1] (n, 64) and labels (n,)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    return torch.tensor(data.data, dtype=torch.float32) / 16.0, torch.tensor(data.target, dtype=torch.long)
