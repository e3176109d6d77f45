"""Batches for the loops, from tensors (the fast path) or from a Dataset through a DataLoader.

Both kinds of split give the loops the same two things: an epoch's training batches (:class:`Source`)
and the validation batches with their sample counts (:func:`val_batches`). Tensors move to the device
once and every batch is an index into them, drawn on the device (no host sync). A Dataset is read by
a ``torch.utils.data.DataLoader`` (worker processes, pinned memory, prefetching as ``objective.data``
says) whose shuffling and worker RNGs are seeded from the trial's seed, so a config replays. A batch
is ``(inputs, target[, a_target])``; ``inputs`` is a tensor, a tuple/list (``model(*inputs)``) or a
dict (``model(**inputs)``), see :func:`call`.
"""

from __future__ import annotations

import difflib
import inspect
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from objectives.config import DataConfig
from objectives.helpers import derive_seed, epoch_batches
from objectives.problems.base import Split, move


class DataError(ValueError):
    """A problem's data cannot be trained on (empty, a stream without a length, a wrong structure)."""


def call(model: torch.nn.Module, inputs: Any) -> Any:
    """The model on a batch's inputs: ``model(x)``, ``model(*inputs)`` for a tuple/list, ``model(**inputs)``.

    Raises:
        TypeError: dict inputs whose keys do not fit ``model.forward``'s parameters, saying so (see
            :func:`dict_mismatch`); any other error of the model's as it is.
    """
    if isinstance(inputs, dict):
        try:
            return model(**inputs)
        except TypeError as e:
            why = dict_mismatch(model, inputs)
            if why is None:
                raise
            raise TypeError(why) from e
    if isinstance(inputs, list | tuple):
        return model(*inputs)
    return model(inputs)


def dict_mismatch(model: torch.nn.Module, inputs: dict[str, Any]) -> str | None:
    """Why dict ``inputs`` cannot be ``model.forward``'s keyword arguments, in one line: the keys it does
    not take (each with the closest parameter no key gives, "did you mean") and the parameters without
    a default that no key gives. ``None`` when they fit (a TypeError then came from inside the model) or
    ``forward``'s signature cannot be read. Only called once the model has raised: it costs nothing per step."""
    forward = getattr(model, "forward", model)
    try:
        signature = inspect.signature(forward)
        signature.bind(**inputs)
        return None
    except ValueError:
        return None
    except TypeError:
        pass
    params = signature.parameters
    by_name = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    required = [n for n, p in params.items() if p.default is p.empty and p.kind not in variadic]
    free = [n for n in by_name if n not in inputs]  # parameters no key gives: what a misspelt key meant
    problems, meant = [], set()
    for key in [] if takes_any else [k for k in inputs if k not in by_name]:
        close = difflib.get_close_matches(key, free, n=1)
        meant.update(close)
        problems.append(f"key {key!r} is not a parameter" + (f" (did you mean {close[0]!r}?)" if close else ""))
    problems += [f"no key for its parameter {n!r}" for n in required if n not in inputs and n not in meant]
    if not problems:
        return None
    keys = ", ".join(repr(k) for k in inputs)
    stars = {inspect.Parameter.VAR_POSITIONAL: "*", inspect.Parameter.VAR_KEYWORD: "**"}
    names = ", ".join(stars.get(p.kind, "") + n for n, p in params.items())
    return (
        f"dict inputs are passed as model(**inputs): the keys {keys} do not fit "
        f"{type(model).__name__}.forward({names}): {'; '.join(problems)}"
    )


def take(tree: Any, index: torch.Tensor | slice) -> Any:
    """Rows ``index`` of every tensor in a (nested) batch structure."""
    if isinstance(tree, torch.Tensor):
        return tree[index]
    if isinstance(tree, dict):
        return {k: take(v, index) for k, v in tree.items()}
    if isinstance(tree, list | tuple):
        return type(tree)(take(v, index) for v in tree)
    raise DataError(f"a batch holds a {type(tree).__name__}; expected tensors, tuples, lists or dicts of them")


def count(batch: tuple[Any, ...]) -> int:
    """Samples in a batch: the length of its target (the second element)."""
    return len(batch[1])


def n_samples(split: Split) -> int | None:
    """Samples in a split (``None`` for a stream, which has no length)."""
    if isinstance(split, IterableDataset):
        return None
    if isinstance(split, Dataset):
        return len(split)  # type: ignore[arg-type]
    return len(split[1])


def loader(
    dataset: Dataset,
    batch_size: int,
    cfg: DataConfig,
    device: torch.device,
    seed: int | None,
    collate_fn: Callable[[list[Any]], Any] | None,
) -> DataLoader:
    """The DataLoader ``objective.data`` describes; ``seed`` set = shuffled with a generator seeded by it.

    Each worker process is seeded by torch itself from a base seed drawn from that generator (its torch,
    numpy and ``random`` RNGs: worker ``i`` gets base + i), so augmentation in workers replays too.
    """
    workers = cfg.num_workers
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=seed is not None and not isinstance(dataset, IterableDataset),
        # Its own generator even unshuffled: a loader draws its workers' base seed from it at every pass,
        # and would otherwise take it from torch's global RNG (dropout's, in the training process).
        generator=torch.Generator().manual_seed(seed if seed is not None else 0),
        num_workers=workers,
        collate_fn=collate_fn,
        pin_memory=cfg.pin_memory if cfg.pin_memory is not None else device.type == "cuda",
        drop_last=cfg.drop_last,
        persistent_workers=cfg.persistent_workers and workers > 0,
        prefetch_factor=cfg.prefetch_factor if workers > 0 else None,
    )


def pass_seed(seed: int, number: int) -> int:
    """The seed of a DataLoader's shuffled pass ``number`` (1, 2, ...) for a split whose loader seed is ``seed``."""
    return derive_seed(seed, "pass", number)


def epoch_steps(split: Split, batch_size: int, cfg: DataConfig, steps_per_epoch: int | None = None) -> int:
    """Batches of one epoch of a training split, the same for every loop and the vectorized loops.

    ``objective.data.steps_per_epoch``, else the problem's ``steps_per_epoch``, else one full pass
    (less the last, smaller batch where a DataLoader drops it: ``drop_last``). A number of steps applies
    to tensors and Datasets alike: fewer steps than a pass take the first batches of the pass's shuffle,
    more re-shuffle and repeat (:func:`objectives.helpers.epoch_batches`).

    Args:
        split: The training split (tensors or a Dataset).
        batch_size: Its batch size.
        cfg: ``objective.data``.
        steps_per_epoch: The problem's (``Task.steps_per_epoch``, ``CoupledProblem.steps_per_epoch``).
    """
    steps = cfg.steps_per_epoch or steps_per_epoch
    n = n_samples(split)
    full = n // batch_size if cfg.drop_last and isinstance(split, Dataset) and n is not None else None
    return steps or full or math.ceil((n or 0) / batch_size)


class Source:
    """One training split's batches, epoch by epoch.

    Attributes:
        n: Samples in the split (``None`` for a stream).
        per_pass: Batches in one pass over the split (for a stream: the steps of one epoch).
    """

    def __init__(
        self,
        split: Split,
        batch_size: int,
        cfg: DataConfig,
        device: torch.device,
        generator: torch.Generator,
        seed: int,
        collate_fn: Callable[[list[Any]], Any] | None = None,
        steps_per_epoch: int | None = None,
        name: str = "the",
    ) -> None:
        self.split, self.batch_size, self.device, self.generator = split, batch_size, device, generator
        self.n = n_samples(split)
        if self.n == 0:
            raise DataError(f"{name} training data is empty")
        steps = cfg.steps_per_epoch or steps_per_epoch
        self._seed, self._passes = seed, 0
        self._loader: DataLoader | None = None
        self._iterator: Iterator[Any] | None = None
        if isinstance(split, Dataset):
            self._loader = loader(split, batch_size, cfg, device, seed, collate_fn)
            self._non_blocking = self._loader.pin_memory
            if self.n is None and steps is None:
                raise DataError(
                    f"{name} training data is a stream (IterableDataset): give its steps per epoch "
                    "(Task.steps_per_epoch or objective.data.steps_per_epoch)"
                )
        self.per_pass = epoch_steps(split, batch_size, cfg, steps_per_epoch)

    def epoch(self, steps: int) -> Iterator[Any]:
        """``steps`` batches on the device. Tensors: index batches drawn now, on the device, from the
        trial's generator (re-shuffled each pass). A DataLoader: a fresh (re-shuffled) pass each epoch,
        and again whenever a pass runs out before ``steps``; a stream continues where it stopped."""
        if self._loader is None:
            order = epoch_batches(self.n or 0, self.batch_size, steps, self.generator, self.device)
            return (take(self.split, idx) for idx in order)
        return self._loaded(steps)

    def _new_pass(self) -> Iterator[Any]:
        """A fresh pass whose order (and workers' seeds) depend only on the trial's seed and the pass number:
        not on how much of the previous pass was read, which ``num_workers`` (prefetching) changes."""
        assert self._loader is not None and self._loader.generator is not None
        self._passes += 1
        self._loader.generator.manual_seed(pass_seed(self._seed, self._passes))
        return iter(self._loader)

    def _loaded(self, steps: int) -> Iterator[Any]:
        assert self._loader is not None
        stream = isinstance(self.split, IterableDataset)
        if not stream or self._iterator is None:
            self._iterator = self._new_pass()
        for _ in range(steps):
            try:
                batch = next(self._iterator)
            except StopIteration:
                self._iterator = self._new_pass()
                batch = next(self._iterator, None)
                if batch is None:
                    raise DataError("the training data ran out of batches (an empty pass)") from None
            yield move(batch, self.device, self._non_blocking)
        if not stream:
            self._iterator = None  # the next epoch starts a fresh pass (and shuts non-persistent workers down)


def val_batches(
    split: Split,
    chunk: int,
    cfg: DataConfig,
    device: torch.device,
    collate_fn: Callable[[list[Any]], Any] | None = None,
) -> Iterator[tuple[Any, int]]:
    """Validation batches on the device with their sample counts, in order (no shuffling)."""
    if isinstance(split, Dataset):
        for batch in loader(split, chunk, cfg.model_copy(update={"drop_last": False}), device, None, collate_fn):
            yield move(batch, device, device.type == "cuda"), count(batch)
        return
    n = len(split[1])
    for start in range(0, n, chunk):
        rows = slice(start, min(start + chunk, n))
        yield take(split, rows), rows.stop - rows.start


def reference_losses(
    losses: Callable[..., torch.Tensor],
    models: Sequence[torch.nn.Module],
    splits: Sequence[tuple[Split, int, Callable[[list[Any]], Any] | None]],
    cfg: DataConfig,
    device: torch.device,
    seed: int,
) -> Callable[[], torch.Tensor]:
    """A function that returns ``losses(*batches)`` on fresh random batches of ``splits`` (each given as
    ``(split, batch size, collate_fn)``; one batch of each), with the ``models`` in eval mode as the
    validation is evaluated (no dropout; BatchNorm's running statistics used, not fed), then back in the
    mode each was in: a strategy's reference (hypergrad's validation gradient). Batches are drawn pass
    after pass of each split, full ones only (a split smaller than a batch: all of it), on the device, from
    a generator of their own (seeded by ``seed``), so the training batches stay as they are; a stream is
    read one step at a time.
    """
    generator = torch.Generator(device=device).manual_seed(seed)

    def kept(split: Split, size: int) -> DataConfig:
        # 1. ``drop_last`` (a training setting) would drop a Dataset split smaller than its batch whole:
        #    its one, short batch is the reference then (as for tensors). Workers persist: a pass is read a
        #    batch per step, and a split of one batch starts a pass at every step.
        n = n_samples(split)
        drop_last = cfg.drop_last and (n is None or n >= size)
        return cfg.model_copy(update={"drop_last": drop_last, "persistent_workers": cfg.num_workers > 0})

    sources = [
        Source(split, size, kept(split, size), device, generator, derive_seed(seed, i), collate_fn,
               1 if n_samples(split) is None else None, "the validation")
        for i, (split, size, collate_fn) in enumerate(splits)
    ]  # fmt: skip

    def endless(source: Source) -> Iterator[Any]:
        # 2. Each split pass after pass on its own (a short split does not restart a long one's pass), in
        #    full batches: a pass's short tail is left out unless the split is smaller than one batch.
        steps = source.per_pass if source.n is None else max(1, source.n // source.batch_size)
        while True:
            yield from source.epoch(steps)

    batches = zip(*(endless(s) for s in sources), strict=False)

    def compute() -> torch.Tensor:
        modes = [model.training for model in models]
        for model in models:
            model.eval()
        try:
            return losses(*next(batches))
        finally:
            for model, mode in zip(models, modes, strict=True):
                model.train(mode)

    return compute


def weighted_means(
    batches: Iterator[tuple[Any, int]], batch_means: Callable[[Any], dict[str, torch.Tensor]], name: str = "the"
) -> dict[str, torch.Tensor]:
    """Means over every sample from per-batch means, weighted by each batch's sample count (no host sync).

    Batching only bounds memory: the result is the mean over samples, never a mean of batch means.
    """
    sums: dict[str, torch.Tensor] = {}
    total = 0
    for batch, n in batches:
        for key, value in batch_means(batch).items():
            weighted = value * n
            sums[key] = sums[key] + weighted if key in sums else weighted
        total += n
    if total == 0:
        raise DataError(f"{name} validation data is empty")
    return {key: value / total for key, value in sums.items()}


def check_data(problem: Any, cfg: DataConfig) -> None:
    """What can be told about a problem's data without reading it: no split is empty, and every stream
    (``IterableDataset``) used for training says how many steps an epoch has.

    Raises:
        DataError: naming the split.
    """
    tasks = {f"task {n}'s": t for n, t in problem.tasks.items()} if hasattr(problem, "tasks") else {"the": problem}
    for name, task in tasks.items():
        for kind, split in (("training", task.train), ("validation", task.val)):
            if n_samples(split) == 0:
                raise DataError(f"{name} {kind} data is empty")
        if isinstance(task.train, IterableDataset) and not (cfg.steps_per_epoch or task.steps_per_epoch):
            raise DataError(
                f"{name} training data is a stream (IterableDataset): give its steps per epoch "
                "(Task.steps_per_epoch or objective.data.steps_per_epoch)"
            )
