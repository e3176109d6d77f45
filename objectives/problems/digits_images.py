"""``digits_images``: scikit-learn's digits as PNG files on disk, read through DataLoaders; two tasks.

On first use the 1,797 bundled 8×8 digits are upscaled (``size``×``size``, bilinear) and written as an
ImageFolder tree of PNG files to a cache (``cache_dir``, else ``$SWEEP_CACHE_DIR``, else
``~/.cache/sweep``; subfolder ``digits_png_<size>``), never rewritten afterwards. Every split is an
:class:`~objectives.problems.images.ImageFolderDataset` that decodes one file per item, so this problem
exercises the Dataset path of the loops the way a real image dataset does (decoding, augmentation,
workers). Task a classifies the digit (``n_a`` images, 10 classes), task b its parity (``n_b`` other
images, 2 classes); both validate on the same ``n_val`` held-out images. Training images are augmented
(random shift, contrast and brightness), validation images are not. One small CNN with a shared trunk
and a head per task.
"""

from __future__ import annotations

from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationInfo, field_validator

from objectives.helpers import accuracy, cache_root
from objectives.problems.base import Builtin, Problem, Task
from objectives.problems.common import cross_entropy, digits_array
from objectives.problems.images import ImageFolderDataset, TwoHeadCNN, is_complete, upscale_digits, write_png_folder

N_DIGITS = 1797  # images in scikit-learn's bundled digits


class Options(BaseModel):
    """Options of ``digits_images``."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    n_a: PositiveInt = Field(1000, description="task a's images (the digit)")
    n_b: PositiveInt = Field(400, description="task b's images (its parity; other images than task a's)")
    n_val: PositiveInt = Field(
        default=300, validate_default=True, description="validation images (`n_a + n_b + n_val` ≤ the 1,797 digits)"
    )
    n_test: PositiveInt | None = Field(
        None, description="held-out test images; unset: every image left over (97 by default)"
    )
    size: int = Field(default=32, ge=8, le=128, description="the digits are upscaled to `size`×`size`")
    channels: PositiveInt = Field(16, description="channels of the small CNN")
    cache_dir: str | None = Field(
        None,
        description="where the PNG files are written once (~7 MB); unset: `$SWEEP_CACHE_DIR`, else `~/.cache/sweep`",
    )

    @field_validator("n_val")
    @classmethod
    def _fits(cls, n_val: int, info: ValidationInfo) -> int:
        total = info.data.get("n_a", 0) + info.data.get("n_b", 0) + n_val
        if total > N_DIGITS:
            raise ValueError(f"n_a + n_b + n_val = {total} images, but there are only {N_DIGITS} digits")
        return n_val

    @field_validator("n_test")
    @classmethod
    def _test_fits(cls, n_test: int | None, info: ValidationInfo) -> int | None:
        used = sum(info.data.get(k, 0) for k in ("n_a", "n_b", "n_val"))
        if n_test is not None and used + n_test > N_DIGITS:
            raise ValueError(f"n_a + n_b + n_val + n_test = {used + n_test} images, but there are only {N_DIGITS}")
        return n_test


def digits_png(cache_dir: str | None, size: int) -> Path:
    """The digits' PNG folder for ``size``, written on first use (atomically; see :func:`write_png_folder`)."""
    folder = cache_root(cache_dir) / f"digits_png_{size}"
    if is_complete(folder):
        return folder
    data = digits_array()
    images, labels = data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int)
    return write_png_folder(upscale_digits(images, size), labels.tolist(), folder)


def parity(digit: int) -> int:
    """Task b's target: 0 for an even digit, 1 for an odd one (module level, so it pickles)."""
    return digit % 2


def build(options: Options, seed: int) -> Problem:
    root = digits_png(options.cache_dir, options.size)
    n = len(ImageFolderDataset(root))
    if options.n_a + options.n_b + options.n_val > n:
        raise ValueError(f"{root} holds {n} images, fewer than n_a + n_b + n_val")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    cuts = (options.n_val, options.n_val + options.n_a, options.n_val + options.n_a + options.n_b)
    val_ids, a_ids, b_ids = (sorted(order[start:stop]) for start, stop in zip((0, *cuts[:2]), cuts, strict=True))
    rest = order[cuts[-1] :]
    test_ids = sorted(rest if options.n_test is None else rest[: options.n_test])

    metrics = {"acc": accuracy}
    a = Task(
        train=ImageFolderDataset(root, a_ids, augment=True),
        val=ImageFolderDataset(root, val_ids),
        test=ImageFolderDataset(root, test_ids) if test_ids else None,
        loss=cross_entropy,
        head=0,
        metrics=metrics,
    )
    b = Task(
        train=ImageFolderDataset(root, b_ids, target_transform=parity, augment=True),
        val=ImageFolderDataset(root, val_ids, target_transform=parity),
        test=ImageFolderDataset(root, test_ids, target_transform=parity) if test_ids else None,
        loss=cross_entropy,
        head=1,
        metrics=metrics,
    )
    return Problem(make_model=lambda: TwoHeadCNN((10, 2), options.channels), a=a, b=b)


BUILTIN = Builtin(
    options=Options,
    build=build,
    metrics=("acc",),
    model_options=("channels",),
    summary="sklearn digits as PNG files read by DataLoaders: digit (task a, 10-way) and parity (task b)",
)
