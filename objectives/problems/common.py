"""Losses and data shared by the built-in problems."""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np
import torch
from torch import nn


def mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return nn.functional.mse_loss(pred, target)


def cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(logits, target)


def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's bundled 8×8 digits (no download): images scaled to [0, 1] (n, 64) and labels (n,).

    Read from the CSV file scikit-learn ships (what ``sklearn.datasets.load_digits`` reads), without
    importing scikit-learn: half a second of every run's start-up.
    """
    data = digits_array()
    return torch.from_numpy(data[:, :-1]).float() / 16.0, torch.from_numpy(data[:, -1]).long()


def digits_array() -> np.ndarray:
    """The digits as one float64 array: 64 pixel columns (0-16), then the label."""
    spec = importlib.util.find_spec("sklearn")  # finds the package without running it
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the digits problems read scikit-learn's bundled digits: pip install scikit-learn")
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "digits.csv.gz"
    with gzip.open(path, "rt") as handle:
        return np.loadtxt(handle, delimiter=",", dtype=np.float64)
