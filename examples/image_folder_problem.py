"""A user problem on your own images: two ImageFolder-style folders, one classification task each.

Named in a study file as::

    problem:
      name: examples.image_folder_problem:make
      options: {folder_a: data/shapes, folder_b: data/colours, n_val: 200}

Each folder holds one subfolder per class (``folder_a/cat/001.png``, ``folder_a/dog/002.png``...), as
torchvision's ImageFolder expects; class indices follow the sorted subfolder names. Images are read in
grayscale, one file per item, so the folders can be larger than memory; every image of one folder must
have the same size. Task a classifies folder_a's classes, task b folder_b's; each folder's validation
split is ``n_val`` of its images held out at random (drawn from the data seed). The model is one small
CNN with a shared trunk and a head per task, sized by each folder's number of classes.

Demo mode: with ``demo: true``, a folder that does not exist yet is first filled with demo images
(scikit-learn's digits upscaled to 32×32: folder_a by digit, 1,200 images; folder_b by parity, the
other 597 images), so ``studies/image_folder.yaml`` runs anywhere. Existing folders are never
touched, with or without demo mode.
"""

from __future__ import annotations

from pathlib import Path

import torch

from objectives.helpers import accuracy
from objectives.problems import Problem, Task
from objectives.problems.common import cross_entropy
from objectives.problems.images import ImageFolderDataset, TwoHeadCNN, is_complete, upscale_digits, write_png_folder

# Pixel mean and std (in [0, 1]) used to normalise the images: set them to your own images' values.
MEAN, STD = 0.305, 0.323
DEMO_SPLIT = 1200  # demo digits [0, 1200) go to folder_a, the rest to folder_b


def write_demo_folders(folder_a: str | Path, folder_b: str | Path) -> None:
    """Fill whichever of the two folders is missing with demo digits (by class, resp. by parity)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images, digits = upscale_digits(data.images, 32), data.target.tolist()
    if not is_complete(Path(folder_a)):
        write_png_folder(images[:DEMO_SPLIT], digits[:DEMO_SPLIT], folder_a)
    if not is_complete(Path(folder_b)):
        parity = ["odd" if d % 2 else "even" for d in digits[DEMO_SPLIT:]]
        write_png_folder(images[DEMO_SPLIT:], parity, folder_b)


def _task(folder: str | Path, n_val: int, generator: torch.Generator, head: int) -> tuple[Task, int]:
    """One task on ``folder``: a random ``n_val`` of its images validate, the rest train (augmented)."""
    full = ImageFolderDataset(folder, mean=MEAN, std=STD)
    if not 0 < n_val < len(full):
        raise ValueError(f"n_val={n_val} must be between 0 and the {len(full)} images of {folder}")
    order = torch.randperm(len(full), generator=generator).tolist()
    task = Task(
        train=ImageFolderDataset(folder, sorted(order[n_val:]), augment=True, mean=MEAN, std=STD),
        val=ImageFolderDataset(folder, sorted(order[:n_val]), mean=MEAN, std=STD),
        loss=cross_entropy,
        head=head,
        metrics={"acc": accuracy},
    )
    return task, len(full.classes)


def make(seed: int, folder_a: str, folder_b: str, n_val: int = 200, channels: int = 16, demo: bool = False) -> Problem:
    """Build the problem. ``seed`` is the data seed sweep passes; the rest are the study's options.

    Args:
        seed: Data seed: which images of each folder are held out for validation.
        folder_a: ImageFolder root of task a (relative paths are relative to the working directory).
        folder_b: ImageFolder root of task b.
        n_val: Images of each folder held out for validation.
        channels: Width of the CNN.
        demo: Write demo digits into a missing folder first (see the module docstring).
    """
    if demo:
        write_demo_folders(folder_a, folder_b)
    for folder in (folder_a, folder_b):
        if not Path(folder).is_dir():
            raise FileNotFoundError(f"no image folder at {folder} (demo: true writes demo images there)")
    generator = torch.Generator().manual_seed(seed)
    a, classes_a = _task(folder_a, n_val, generator, head=0)
    b, classes_b = _task(folder_b, n_val, generator, head=1)
    return Problem(make_model=lambda: TwoHeadCNN((classes_a, classes_b), channels), a=a, b=b)
