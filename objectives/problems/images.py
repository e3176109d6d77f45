"""Image utilities shared by image problems: PNG folders on disk, a Dataset that decodes them, a small CNN.

Nothing here is a registered problem. The layout is torchvision's ImageFolder one (``root/<class>/<file>``),
read with Pillow (torchvision is not required). A :class:`ImageFolderDataset` decodes one file per item,
so a DataLoader's workers share the decoding and the images never sit in memory as one tensor.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import Dataset

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")

# Pixel mean and std (in [0, 1]) of scikit-learn's digits upscaled bilinearly (16 to 64 pixels: within 0.002).
DIGITS_MEAN = 0.305
DIGITS_STD = 0.323

MAX_SHIFT = 2  # pixels, each direction
CONTRAST = 0.2  # contrast factor drawn from 1 ± CONTRAST
BRIGHTNESS = 0.1  # brightness offset drawn from ± BRIGHTNESS (in [0, 1] pixel units)


def upscale_digits(images: np.ndarray, size: int) -> np.ndarray:
    """Scikit-learn's 8×8 digits (values 0-16) as ``size``×``size`` grayscale uint8 images (Pillow bilinear).

    Args:
        images: Array ``(n, 8, 8)`` of intensities in [0, 16] (``load_digits().images``).
        size: Side of the output images in pixels.

    Returns:
        Array ``(n, size, size)`` of dtype uint8.
    """
    pixels = np.clip(np.round(np.asarray(images, dtype=np.float64) * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    resample = Image.Resampling.BILINEAR
    return np.stack([np.asarray(Image.fromarray(im).resize((size, size), resample)) for im in pixels])


def is_complete(folder: Path) -> bool:
    """Whether ``folder`` exists and is not empty: :func:`write_png_folder` puts it in place in one rename."""
    return folder.is_dir() and any(folder.iterdir())


def write_png_folder(images: np.ndarray, labels: Sequence[Any], folder: str | os.PathLike[str]) -> Path:
    """Write grayscale images as ``folder/<label>/<index:05d>.png``, atomically; nothing when it is there.

    The files go into a temporary sibling directory that is then renamed to ``folder`` in one step, so a
    reader sees all of them or none. When another process renamed its copy first, this one is discarded:
    several workers may build the same cache at once.

    Args:
        images: Array ``(n, height, width)`` of dtype uint8.
        labels: ``n`` labels; each becomes a subfolder name (``str(label)``).
        folder: The folder to create. An existing non-empty folder is left as it is.

    Returns:
        ``folder`` as a :class:`~pathlib.Path`.
    """
    folder = Path(folder)
    if is_complete(folder):
        return folder
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 3 or len(images) != len(labels):
        raise ValueError(f"need uint8 images (n, height, width) and n labels, got {images.shape} {images.dtype}")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    tmp.chmod(0o755)  # mkdtemp's 0o700 would keep a shared cache to its first writer
    try:
        for label in sorted({str(label) for label in labels}):
            (tmp / label).mkdir()
        for index, (image, label) in enumerate(zip(images, labels, strict=True)):
            Image.fromarray(image).save(tmp / str(label) / f"{index:05d}.png")
        try:
            os.rename(tmp, folder)  # replaces an empty folder; fails on a non-empty one
        except OSError:
            if not is_complete(folder):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already after a successful rename
    return folder


def class_folders(root: str | os.PathLike[str]) -> list[str]:
    """The class names of an ImageFolder root: its subfolders, sorted (their positions are the class indices)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no image folder at {root}")
    classes = sorted(entry.name for entry in os.scandir(root) if entry.is_dir() and not entry.name.startswith("."))
    if not classes:
        raise FileNotFoundError(f"{root} has no class subfolders (expected {root}/<class>/<image>)")
    return classes


class ImageFolderDataset(Dataset):
    """Grayscale images in an ImageFolder layout, decoded with Pillow one item at a time.

    Class indices follow the sorted subfolder names, as in torchvision's ImageFolder; samples are
    ordered by class, then file name. Each item is ``(image, target)``: a float tensor ``1×H×W``
    normalised with fixed constants, and ``target_transform(class_index)``.

    Augmentation (training splits) draws from torch's global RNG, so a DataLoader's per-worker seeding
    (or :func:`torch.manual_seed` without workers) makes it reproducible: a random shift of up to
    :data:`MAX_SHIFT` pixels (edges replicated) and a small random contrast and brightness jitter.

    Attributes:
        root: The folder the images are read from.
        classes: Class names, by index.
        samples: ``(path, class_index)`` of every item, in item order.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        indices: Sequence[int] | None = None,
        target_transform: Callable[[int], Any] | None = None,
        augment: bool = False,
        mean: float = DIGITS_MEAN,
        std: float = DIGITS_STD,
    ) -> None:
        """Scan ``root`` (file names only; nothing is decoded here).

        Args:
            root: A folder with one subfolder of images per class.
            indices: Positions (in the full, sorted sample list) of the samples to use; ``None`` = all.
            target_transform: Applied to the class index to give the target (module-level functions
                pickle, so they reach DataLoader workers; lambdas do not under spawn).
            augment: Apply the random shift and jitter to every item.
            mean: Pixel mean subtracted (pixels in [0, 1]).
            std: Pixel std divided by.
        """
        self.root = Path(root)
        self.classes = class_folders(self.root)
        samples = [
            (str(self.root / name / file), index)
            for index, name in enumerate(self.classes)
            for file in sorted(os.listdir(self.root / name))
            if file.lower().endswith(IMAGE_EXTENSIONS)
        ]
        self.samples = samples if indices is None else [samples[int(i)] for i in indices]
        self.target_transform = target_transform
        self.augment = augment
        self.mean, self.std = mean, std

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Any]:
        path, label = self.samples[index]
        with Image.open(path) as file:
            pixels = np.array(file.convert("L"))
        image = torch.from_numpy(pixels).unsqueeze(0).float().div_(255.0)
        if self.augment:
            image = augment(image)
        image = image.sub_(self.mean).div_(self.std)
        return image, label if self.target_transform is None else self.target_transform(label)

    def targets(self) -> list[Any]:
        """Every item's target (no decoding)."""
        return [label if self.target_transform is None else self.target_transform(label) for _, label in self.samples]


def augment(image: torch.Tensor) -> torch.Tensor:
    """A random shift of up to :data:`MAX_SHIFT` pixels (edges replicated) and a contrast (around mid-grey)
    and brightness jitter of a ``1×H×W`` image in [0, 1], drawn from torch's global RNG (one draw)."""
    _, height, width = image.shape
    shift_y, shift_x, contrast, brightness = torch.rand(4).tolist()
    dy, dx = int(shift_y * (2 * MAX_SHIFT + 1)), int(shift_x * (2 * MAX_SHIFT + 1))
    padded = nn.functional.pad(image, (MAX_SHIFT,) * 4, mode="replicate")
    factor = 1.0 + CONTRAST * (2.0 * contrast - 1.0)
    offset = 0.5 * (1.0 - factor) + BRIGHTNESS * (2.0 * brightness - 1.0)
    return padded[:, dy : dy + height, dx : dx + width].mul(factor).add_(offset).clamp_(0.0, 1.0)


class TwoHeadCNN(nn.Module):
    """A small CNN for ``1×H×W`` images (any size): a shared trunk of two conv layers with pooling, and
    one linear head per task. Returns a tuple of the heads' logits (head 0, head 1)."""

    def __init__(self, classes: tuple[int, int], channels: int = 16) -> None:
        """Build the layers.

        Args:
            classes: Output width of head 0 and of head 1.
            channels: Width of the first conv layer (the second has twice as many).
        """
        super().__init__()
        hidden = 4 * channels
        self.trunk = nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(channels, 2 * channels, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
            nn.Linear(2 * channels * 16, hidden),
            nn.ReLU(),
        )
        self.heads = nn.ModuleList(nn.Linear(hidden, n) for n in classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        features = self.trunk(x)
        return tuple(head(features) for head in self.heads)
