"""The batches the preflight (:mod:`objectives.preflight`) pushes through a problem, and the class labels it
checks against the model's output.

Training batches are drawn as the trial draws its first one: a tensor split shuffled by a generator seeded
with the trial's seed (on the device, as the loop draws it), a Dataset by a DataLoader shuffled with its
loader's seed (no workers here; an ``IterableDataset`` in its own order). Validation batches are the
split's first rows, as the loops validate in order. So a class-sorted dataset (a folder per class) shows
the preflight a mixed batch, as it shows the trials.

Labels: for a cross-entropy or NLL loss (torch's ``cross_entropy``/``nll_loss``, ``nn.CrossEntropyLoss``/
``nn.NLLLoss``, a ``functools.partial`` of them, or the built-ins' ``cross_entropy``) and integer targets,
every label seen must be a class of the output, ``0 ≤ label < C`` with ``C`` the width of the output's
dimension 1 (or the loss's ``ignore_index``). Seen: all of a tensor split's targets (training and
validation), or the targets of :data:`LABEL_BATCHES` shuffled training batches and the first validation
batch of a Dataset. Checked before the loss runs: an out-of-range target on CUDA is a device-side assert.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset

from objectives.data import DataError, pass_seed, take
from objectives.helpers import first_line, is_out_of_memory
from objectives.problems.base import Split, move
from objectives.problems.common import cross_entropy

LABEL_BATCHES = 4
"""Shuffled training batches of a Dataset whose labels the preflight checks (the first is the one it runs)."""

_CLASSIFICATION_FUNCTIONS = (nn.functional.cross_entropy, nn.functional.nll_loss, cross_entropy)


class PreflightError(ValueError):
    """A built problem cannot train as it is: one line naming the task (or model) and what is wrong."""


def run(what: str, fn: Callable[[], Any]) -> Any:
    """``fn()``; anything it raises (but running out of memory) as a PreflightError naming ``what``."""
    try:
        return fn()
    except PreflightError:
        raise
    except Exception as e:
        if is_out_of_memory(e):
            raise
        raise PreflightError(f"{what} raised {first_line(e)}") from None


def draw(
    split: Split,
    size: int,
    collate_fn: Callable[[list[Any]], Any] | None,
    device: torch.device,
    what: str,
    items: int,
    shuffle: tuple[torch.Generator, int] | None = None,
) -> tuple[tuple[Any, ...], dict[int, Any]]:
    """A batch of ``size`` samples on ``device`` and the targets the preflight may check labels of.

    Args:
        split: Tensors or a Dataset.
        size: The batch size.
        collate_fn: The DataLoader's ``collate_fn`` (a Dataset).
        device: Where the batch goes.
        what: Names the split (``task a's training data``).
        items: How many elements a batch must have (2: inputs, target; 3: inputs, target, t_a).
        shuffle: ``(generator, loader seed)`` as the trial shuffles (training); ``None``: the first rows.

    Returns:
        The batch, and by position in it (1: the target, 2: t_a) the targets seen: a tensor split's
        whole target, or those of the Dataset batches read (:data:`LABEL_BATCHES` when shuffled, else
        one); ``None`` where they are not tensors.
    """
    form = "(inputs, target, t_a)" if items == 3 else "(inputs, target)"
    if isinstance(split, Dataset):
        batches = _loaded(split, size, collate_fn, what, LABEL_BATCHES if shuffle else 1, shuffle)
        batch = batches[0]
        _check_form(batch, what, form, items)
        alike = [b for b in batches if isinstance(b, list | tuple) and len(b) == len(batch)]
        targets = {i: _cat([b[i] for b in alike]) for i in range(1, items)}
    else:
        try:
            n = len(split[1])
            if shuffle is None:
                rows: torch.Tensor | slice = slice(0, min(size, n))
            else:  # the trial's first draw: randperm on the device from its seeded generator
                generator = shuffle[0]
                rows = torch.randperm(n, generator=generator, device=generator.device)[:size]
                rows = rows.to(split[1].device)
            batch = take(split, rows)
        except DataError as e:
            raise PreflightError(f"{what}: {first_line(e).removeprefix('DataError: ')}") from None
        except Exception as e:
            raise PreflightError(f"{what} is not an {form} tuple of tensors ({first_line(e)})") from None
        _check_form(batch, what, form, items)
        targets = {i: split[i] for i in range(1, items)}
    return move(tuple(batch), device), targets


def _check_form(batch: Any, what: str, form: str, items: int) -> None:
    if not isinstance(batch, list | tuple) or len(batch) < items:
        held = f"{len(batch)} element(s)" if isinstance(batch, list | tuple) else f"a {type(batch).__name__}"
        raise PreflightError(f"a batch of {what} holds {held}; expected {form}")


def _loaded(
    split: Dataset,
    size: int,
    collate_fn: Callable[[list[Any]], Any] | None,
    what: str,
    count: int,
    shuffle: tuple[torch.Generator, int] | None,
) -> list[Any]:
    """Up to ``count`` batches of a DataLoader with no workers: the first pass as the trial's loader
    shuffles it (its seed's pass 1), or in order."""
    shuffled = shuffle is not None and not isinstance(split, IterableDataset)
    generator = torch.Generator().manual_seed(pass_seed(shuffle[1], 1) if shuffle is not None else 0)
    loader = DataLoader(
        split, batch_size=size, shuffle=shuffled, generator=generator, num_workers=0, collate_fn=collate_fn
    )

    def read() -> list[Any]:
        batches: list[Any] = []
        iterator: Iterator[Any] = iter(loader)
        for _ in range(count):
            # 1. Stop at the pass's end: a small split gives fewer batches, never a second pass.
            batch = next(iterator, None)
            if batch is None:
                break
            batches.append(batch)
        return batches

    batches = run(f"reading the first batches of {what}" if count > 1 else f"reading the first batch of {what}", read)
    if not batches:
        raise PreflightError(f"{what} gives no batch")
    return batches


def _cat(values: Sequence[Any]) -> Any:
    """Targets of several batches as one tensor (``None`` unless they are tensors of one kind)."""
    if not values or not all(isinstance(v, torch.Tensor) for v in values):
        return None
    try:
        return torch.cat([v.reshape(-1) for v in values])
    except RuntimeError:
        return None


def ignored_label(fn: Any) -> int | None:
    """The label a cross-entropy or NLL loss ignores (its ``ignore_index``, -100 by default); ``None`` when
    ``fn`` is not such a loss (then its labels are not checked)."""
    keywords: dict[str, Any] = {}
    while isinstance(fn, functools.partial):
        keywords = {**fn.keywords, **keywords}
        fn = fn.func
    if isinstance(fn, nn.CrossEntropyLoss | nn.NLLLoss):
        return fn.ignore_index
    if any(fn is f for f in _CLASSIFICATION_FUNCTIONS):
        return int(keywords.get("ignore_index", -100))
    return None


def check_classes(what: str, fn: Any, pred: Any, labels: Sequence[Any], hint: str = "") -> None:
    """Raise when a classification loss ``fn`` would get a label that is no class of ``pred``.

    Args:
        what: Names the labels' owner (``task a``, ``B``).
        fn: The loss.
        pred: The model's output the loss gets (its dimension 1 is the classes).
        labels: Target tensors seen for this loss, e.g. training and validation (``None`` is skipped).
        hint: Ends the message (another place the mistake may be).
    """
    ignored = ignored_label(fn)
    if ignored is None or not isinstance(pred, torch.Tensor) or pred.ndim < 2:
        return
    seen = [t.reshape(-1) for t in labels if isinstance(t, torch.Tensor) and _integer(t) and t.numel()]
    if not seen:
        return
    classes = pred.shape[1]
    values = torch.cat([t.to(pred.device) for t in seen])
    values = values[values != ignored]
    if not values.numel():
        return
    low, high = int(values.min()), int(values.max())
    if low >= 0 and high < classes:
        return
    if low < 0:
        raise PreflightError(
            f"{what}'s labels go down to {low} ({len(values)} checked): the loss needs labels in [0, {classes}) "
            f"or its ignore_index ({ignored})"
        )
    raise PreflightError(
        f"{what}'s labels reach {high} ({len(values)} checked) but its output {tuple(pred.shape)} has {classes} "
        f"classes: the loss needs labels in [0, {classes}); give it {high + 1} outputs{hint}"
    )


def _integer(t: torch.Tensor) -> bool:
    return not (t.is_floating_point() or t.is_complex() or t.dtype == torch.bool)
