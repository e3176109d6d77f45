"""Image problems on disk: the PNG cache, ImageFolderDataset, digits_images and the two new examples.

Every cache is written under a temp folder (the ``cache_dir`` option or ``SWEEP_CACHE_DIR``). Nothing
here trains through a loop: items, batches and models are checked directly.
"""

from __future__ import annotations

import copy
import os
import pickle
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, default_collate

from examples import dict_inputs_problem, image_folder_problem
from objectives.problems import ProblemError, build_problem, check_problem
from objectives.problems import images as images_module
from objectives.problems.digits_images import N_DIGITS, digits_png
from objectives.problems.images import (
    DIGITS_MEAN,
    DIGITS_STD,
    ImageFolderDataset,
    TwoHeadCNN,
    upscale_digits,
    write_png_folder,
)
from tests.conftest import ROOT


def _digits() -> tuple[np.ndarray, list[int]]:
    from sklearn.datasets import load_digits

    data = load_digits()
    return data.images, data.target.tolist()


def _files(folder: Path) -> dict[str, int]:
    """Every path under ``folder`` (itself included) with its modification time in ns."""
    return {str(p): p.stat().st_mtime_ns for p in [folder, *folder.rglob("*")]}


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache folder holding the default (32 px) digits PNG tree, built once for this module."""
    root = tmp_path_factory.mktemp("cache")
    digits_png(str(root), 32)
    return root


@pytest.fixture(scope="module")
def problem(cache: Path):
    """digits_images with default sizes and data seed 0, reading ``cache``."""
    return build_problem("digits_images", {"cache_dir": str(cache)}, 0)


# --- the PNG cache --------------------------------------------------------------------------------


def test_cache_is_written_once(tmp_path: Path) -> None:
    """The first build writes <cache>/digits_png_<size>/<digit>/<index>.png; later builds touch nothing."""
    build_problem("digits_images", {"cache_dir": str(tmp_path), "size": 16}, 0)
    folder = tmp_path / "digits_png_16"
    assert sorted(p.name for p in folder.iterdir()) == [str(d) for d in range(10)]
    assert len(list(folder.glob("*/*.png"))) == N_DIGITS
    before = _files(folder)
    build_problem("digits_images", {"cache_dir": str(tmp_path), "size": 16}, 1)
    assert _files(folder) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digits_png_16"]  # no temporary folder left


def test_cache_dir_defaults_to_the_environment_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the option the cache goes under $SWEEP_CACHE_DIR; the option wins over it."""
    monkeypatch.setenv("SWEEP_CACHE_DIR", str(tmp_path / "env"))
    build_problem("digits_images", {"size": 8, "n_a": 10, "n_b": 10, "n_val": 10}, 0)
    assert (tmp_path / "env" / "digits_png_8").is_dir()
    build_problem("digits_images", {"size": 8, "cache_dir": str(tmp_path / "opt")}, 0)
    assert (tmp_path / "opt" / "digits_png_8").is_dir()
    assert sorted(p.name for p in (tmp_path / "env").iterdir()) == ["digits_png_8"]


def test_two_builders_racing_in_threads_leave_one_complete_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both threads finish writing before either renames (a barrier): one rename wins, the other copy is
    discarded without an error, and no temporary folder is left."""
    barrier = threading.Barrier(2, timeout=60)
    rename = os.rename

    def rename_together(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        barrier.wait()
        rename(src, dst)

    monkeypatch.setattr(images_module.os, "rename", rename_together)
    images, labels = _digits()
    pixels = upscale_digits(images[:50], 16)
    folder = tmp_path / "cache" / "digits"
    results, errors = [], []

    def build() -> None:
        try:
            results.append(write_png_folder(pixels, labels[:50], folder))
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=build) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == [] and results == [folder, folder]
    assert len(list(folder.glob("*/*.png"))) == 50
    assert sorted(p.name for p in folder.parent.iterdir()) == ["digits"]


@pytest.mark.slow
def test_two_processes_building_the_same_empty_cache(tmp_path: Path) -> None:
    """Two processes build the same cache at the same moment: both succeed and one complete copy remains."""
    code = "import sys; from objectives.problems.digits_images import digits_png; digits_png(sys.argv[1], 16)"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], env=env, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
    folder = tmp_path / "digits_png_16"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digits_png_16"]
    assert len(list(folder.glob("*/*.png"))) == N_DIGITS


def test_png_round_trip_equals_the_upscaled_image(tmp_path: Path, cache: Path) -> None:
    """PNG is lossless: a file decodes to exactly the uint8 image written, in the cache too."""
    images, labels = _digits()
    pixels = upscale_digits(images, 32)
    assert pixels.dtype == np.uint8 and pixels.shape == (N_DIGITS, 32, 32)
    write_png_folder(pixels[:5], labels[:5], tmp_path / "x")
    for index in (0, 4):
        with Image.open(tmp_path / "x" / str(labels[index]) / f"{index:05d}.png") as file:
            assert np.array_equal(np.array(file), pixels[index])
    for index in (0, 1000, N_DIGITS - 1):
        with Image.open(cache / "digits_png_32" / str(labels[index]) / f"{index:05d}.png") as file:
            assert np.array_equal(np.array(file), pixels[index])


def test_upscale_keeps_the_digit() -> None:
    """Intensities 0-16 become 0-255 (exactly, at size 8), and a 32-pixel image averaged back to 8×8
    matches the digit up to the bilinear blur."""
    images, _ = _digits()
    assert np.array_equal(upscale_digits(images[:20], 8), np.round(images[:20] * 255 / 16).astype(np.uint8))
    big = upscale_digits(images[:20], 32).astype(np.float64)
    small = big.reshape(20, 8, 4, 8, 4).mean(axis=(2, 4))
    assert np.corrcoef(small.ravel(), images[:20].ravel())[0, 1] > 0.95


# --- ImageFolderDataset ---------------------------------------------------------------------------


@pytest.fixture
def animals(tmp_path: Path) -> Path:
    """Six 12×10 images in three classes given out of order: dog, cat, ant, dog, ant, cat."""
    pixels = (np.arange(6 * 12 * 10) % 251).astype(np.uint8).reshape(6, 12, 10)
    return write_png_folder(pixels, ["dog", "cat", "ant", "dog", "ant", "cat"], tmp_path / "animals")


def test_class_indices_follow_sorted_folder_names(animals: Path) -> None:
    """Classes are the sorted subfolders; samples are ordered by class then file; indices select."""
    ds = ImageFolderDataset(animals)
    assert ds.classes == ["ant", "cat", "dog"]
    assert [Path(p).relative_to(animals).as_posix() for p, _ in ds.samples] == [
        "ant/00002.png",
        "ant/00004.png",
        "cat/00001.png",
        "cat/00005.png",
        "dog/00000.png",
        "dog/00003.png",
    ]
    assert [ds[i][1] for i in range(len(ds))] == [0, 0, 1, 1, 2, 2] == ds.targets()
    subset = ImageFolderDataset(animals, indices=[5, 0])
    assert len(subset) == 2 and [subset[0][1], subset[1][1]] == [2, 0]


def test_target_transform_maps_the_class_index(animals: Path) -> None:
    """target_transform receives the class index and gives the target."""
    ds = ImageFolderDataset(animals, target_transform=lambda c: 10 * c + 1)
    assert ds.targets() == [1, 1, 11, 11, 21, 21] == [ds[i][1] for i in range(len(ds))]


def test_item_is_a_normalised_grayscale_tensor(animals: Path) -> None:
    """An item is a float 1×H×W tensor: the file's pixels / 255, minus the mean, over the std."""
    ds = ImageFolderDataset(animals, mean=0.25, std=0.5)
    image, _ = ds[0]
    assert image.dtype == torch.float32 and image.shape == (1, 12, 10)
    with Image.open(ds.samples[0][0]) as file:
        expected = (torch.tensor(np.array(file), dtype=torch.float32) / 255 - 0.25) / 0.5
    torch.testing.assert_close(image[0], expected)


def test_a_missing_or_empty_folder_is_refused(tmp_path: Path) -> None:
    """No folder, or no class subfolders in it: FileNotFoundError naming it."""
    with pytest.raises(FileNotFoundError, match="no image folder"):
        ImageFolderDataset(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="no class subfolders"):
        ImageFolderDataset(tmp_path)


def test_augmentation_is_reproducible_under_the_global_seed(problem) -> None:
    """Augmented items depend only on torch's global RNG state: same seed, same items; another seed
    (or no augmentation) gives different ones. Pixel values stay in the normalised [0, 1] range."""
    ds = problem.a.train
    assert ds.augment

    def items(seed: int) -> torch.Tensor:
        torch.manual_seed(seed)
        return torch.stack([ds[i][0] for i in range(8)])

    first = items(0)
    assert torch.equal(first, items(0))
    assert not torch.equal(first, items(1))
    plain = copy.copy(ds)
    plain.augment = False
    assert not torch.equal(first, torch.stack([plain[i][0] for i in range(8)]))
    low, high = (0 - DIGITS_MEAN) / DIGITS_STD, (1 - DIGITS_MEAN) / DIGITS_STD
    assert first.min() >= low - 1e-5 and first.max() <= high + 1e-5


def test_augmentation_is_reproducible_through_dataloader_workers(problem) -> None:
    """Two passes of a 2-worker DataLoader with the same generator seed give the same batches: each
    worker's torch seed comes from that generator."""

    def first_batch() -> torch.Tensor:
        loader = DataLoader(problem.b.train, batch_size=16, num_workers=2, generator=torch.Generator().manual_seed(3))
        return next(iter(loader))[0]

    batch = first_batch()
    assert batch.shape == (16, 1, 32, 32)
    assert torch.equal(batch, first_batch())


def test_validation_items_are_deterministic(problem) -> None:
    """Validation splits do not augment: an item is the same whatever the RNG state."""
    for task in (problem.a, problem.b):
        assert not task.val.augment
        torch.manual_seed(0)
        first = task.val[7][0]
        torch.manual_seed(123)
        assert torch.equal(first, task.val[7][0])


def test_a_dataset_pickles(problem) -> None:
    """Splits reach spawned DataLoader workers: they pickle (parity is a module-level function)."""
    for split in (problem.a.train, problem.b.train, problem.b.val):
        again = pickle.loads(pickle.dumps(split))
        assert again.samples == split.samples
        assert again[3][1] == split[3][1]


# --- digits_images --------------------------------------------------------------------------------


def test_every_split_is_a_dataset_reading_files(problem) -> None:
    """No split is a tensor tuple, and no dataset holds tensors or arrays: the images stay on disk."""
    for task in (problem.a, problem.b):
        for split in (task.train, task.val):
            assert isinstance(split, Dataset) and not isinstance(split, tuple)
            held = list(vars(split).values())
            assert not any(isinstance(v, torch.Tensor | np.ndarray) for v in held)
            assert all(Path(p).suffix == ".png" for p, _ in split.samples)


def test_split_sizes_and_disjoint_subsets(problem) -> None:
    """Task a trains on n_a images, task b on n_b others, both validate on the same n_val further ones."""
    a_train = {p for p, _ in problem.a.train.samples}
    b_train = {p for p, _ in problem.b.train.samples}
    val = {p for p, _ in problem.a.val.samples}
    assert (len(a_train), len(b_train), len(val)) == (1000, 400, 300)
    assert not a_train & b_train and not a_train & val and not b_train & val
    assert problem.b.val.samples == problem.a.val.samples


def test_targets_are_the_digit_and_its_parity(problem) -> None:
    """Task a's target is the digit (its folder name), task b's its parity: same images, other targets."""
    for path, target in zip(problem.a.val.samples, problem.a.val.targets(), strict=True):
        assert int(Path(path[0]).parent.name) == target
    digits = torch.tensor(problem.a.val.targets())
    assert torch.equal(torch.tensor(problem.b.val.targets()), digits % 2)
    assert set(problem.b.train.targets()) == {0, 1}
    assert set(problem.a.train.targets()) == set(range(10))


def test_the_data_seed_picks_the_subsets(cache: Path) -> None:
    """Another data seed holds out other images; the same seed the same ones."""
    one = build_problem("digits_images", {"cache_dir": str(cache)}, 1)
    again = build_problem("digits_images", {"cache_dir": str(cache)}, 1)
    zero = build_problem("digits_images", {"cache_dir": str(cache)}, 0)
    assert one.a.val.samples == again.a.val.samples
    assert one.a.val.samples != zero.a.val.samples


def test_model_heads_have_the_task_widths(problem) -> None:
    """The CNN returns (digit logits: 10, parity logits: 2) for a batch; channels sets its width."""
    x, _ = default_collate([problem.a.val[i] for i in range(5)])
    torch.manual_seed(0)
    out_a, out_b = problem.make_model()(x)
    assert out_a.shape == (5, 10) and out_b.shape == (5, 2)
    n_params = sum(p.numel() for p in TwoHeadCNN((10, 2), 8).parameters())
    assert n_params < sum(p.numel() for p in problem.make_model().parameters())


def test_options_are_checked() -> None:
    """More images than the 1,797 digits, a tiny size or an unknown option: ProblemError naming the key."""
    with pytest.raises(ProblemError) as info:
        check_problem("digits_images", {"n_a": 1500, "n_b": 400})
    assert info.value.key == "n_val"
    with pytest.raises(ProblemError) as info:
        check_problem("digits_images", {"size": 4})
    assert info.value.key == "size"
    assert check_problem("digits_images", {"channels": 8, "cache_dir": "/x"}) == ("acc",)


# --- the examples ---------------------------------------------------------------------------------


def test_dict_inputs_model_takes_the_inputs_by_name() -> None:
    """Inputs are {input_ids, attention_mask}; model(**inputs) gives the sentiment (2) and topic (3) heads."""
    name = "examples.dict_inputs_problem:make"
    assert check_problem(name, {"n_a": 50, "n_b": 30}) is None
    problem = build_problem(name, {"n_a": 50, "n_b": 30, "n_val": 20}, 0)
    inputs, labels = problem.a.train
    assert set(inputs) == {"input_ids", "attention_mask"}
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    assert ids.dtype == torch.long and ids.shape == mask.shape == (50, 24)
    assert torch.equal(ids == 0, mask == 0)  # padding exactly where the mask is 0
    assert len(problem.b.train[1]) == 30 and len(problem.a.val[1]) == 20
    torch.manual_seed(0)
    model = problem.make_model()
    sentiment, topic = model(**inputs)
    assert sentiment.shape == (50, 2) and topic.shape == (50, 3)
    loss = problem.a.loss(sentiment, labels) + problem.b.loss(model(**problem.b.train[0])[1], problem.b.train[1])
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_dict_inputs_labels_depend_on_the_tokens() -> None:
    """Both labels vary, and the same tokens give the same labels (they are functions of the sequence)."""
    problem = dict_inputs_problem.make(seed=0, n_a=400, n_b=400, n_val=400)
    for task in (problem.a, problem.b):
        assert len(task.train[1].unique()) > 1
    # The validation set carries both labels of the same sequences.
    assert problem.a.val[0] is problem.b.val[0]


def test_image_folder_example_builds_from_demo_folders(tmp_path: Path) -> None:
    """demo: true writes the missing folders (digits by class, by parity), once; splits are disjoint."""
    a, b = tmp_path / "demo" / "a", tmp_path / "demo" / "b"
    problem = image_folder_problem.make(seed=0, folder_a=str(a), folder_b=str(b), n_val=100, demo=True)
    assert problem.a.train.classes == [str(d) for d in range(10)]
    assert problem.b.train.classes == ["even", "odd"]
    assert len(problem.a.val) == len(problem.b.val) == 100
    assert len(problem.a.train) == image_folder_problem.DEMO_SPLIT - 100
    assert len(problem.b.train) == N_DIGITS - image_folder_problem.DEMO_SPLIT - 100
    for task in (problem.a, problem.b):
        assert task.train.augment and not task.val.augment
        assert not {p for p, _ in task.train.samples} & {p for p, _ in task.val.samples}
    x, _ = default_collate([problem.b.val[i] for i in range(4)])
    out_a, out_b = problem.make_model()(x)
    assert out_a.shape == (4, 10) and out_b.shape == (4, 2)
    before = _files(a) | _files(b)
    image_folder_problem.make(seed=1, folder_a=str(a), folder_b=str(b), demo=True)
    assert _files(a) | _files(b) == before


def test_image_folder_example_sizes_heads_by_each_folders_classes(tmp_path: Path, animals: Path) -> None:
    """A user's own folders: one head per folder, as wide as its number of classes; no demo needed."""
    two = write_png_folder(np.zeros((4, 12, 10), np.uint8), ["x", "y", "x", "y"], tmp_path / "two")
    problem = image_folder_problem.make(seed=0, folder_a=str(animals), folder_b=str(two), n_val=2)
    out_a, out_b = problem.make_model()(default_collate([problem.a.train[0]])[0])
    assert out_a.shape == (1, 3) and out_b.shape == (1, 2)
    with pytest.raises(ValueError, match="n_val"):
        image_folder_problem.make(seed=0, folder_a=str(animals), folder_b=str(two), n_val=6)


def test_image_folder_example_without_demo_needs_the_folders(tmp_path: Path) -> None:
    """A missing folder without demo mode is an error that says how to get demo images."""
    with pytest.raises(FileNotFoundError, match="demo: true"):
        image_folder_problem.make(seed=0, folder_a=str(tmp_path / "a"), folder_b=str(tmp_path / "b"))
    assert not (tmp_path / "a").exists()
