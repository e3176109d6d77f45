"""hypergrad's edges (objectives/weighting/hypergrad.py, objectives.data.reference_losses): a Dataset split as
the validation reference, ``every`` > 1, bf16, determinism."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from objectives.config import DataConfig
from objectives.data import reference_losses


def test_a_dataset_reference_smaller_than_its_batch_is_read_whole_even_with_drop_last() -> None:
    """A validation Dataset of 10 samples and a reference batch of 16: every call reads all 10 (one short
    batch), whatever the training's ``drop_last`` says, instead of failing on an empty pass; batches of a
    Dataset split replay with the seed."""
    from torch.utils.data import TensorDataset

    x = torch.arange(10.0).unsqueeze(1)
    for drop_last, size in ((True, 16), (False, 16), (True, 4)):
        seen: list[list[float]] = []

        def losses(batch: tuple[torch.Tensor, ...], seen: list[list[float]] = seen) -> torch.Tensor:
            seen.append(batch[0].flatten().tolist())
            return torch.zeros(1)

        compute = reference_losses(
            losses, [nn.Linear(1, 1)], [(TensorDataset(x, x), size, None)], DataConfig(drop_last=drop_last),
            torch.device("cpu"), 0,
        )  # fmt: skip
        for _ in range(5):
            compute()
        if size > 10:
            assert all(sorted(rows) == x.flatten().tolist() for rows in seen)
        else:
            assert all(len(rows) == 4 for rows in seen) and len({tuple(r) for r in seen}) > 1


def test_a_short_split_does_not_restart_a_long_ones_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two validation Datasets, one of a single batch: the long one is read on through its pass (one pass
    for 5 calls), not restarted at every call (with workers, a worker start per training step)."""
    from torch.utils.data import TensorDataset

    import objectives.data as data

    passes: list[int] = []
    real = data.pass_seed
    monkeypatch.setattr(data, "pass_seed", lambda seed, number: (passes.append(seed), real(seed, number))[1])
    small, big = (TensorDataset(torch.randn(n, 1), torch.randn(n, 1)) for n in (10, 1000))
    seen: list[int] = []

    def losses(batch_small: tuple[torch.Tensor, ...], batch_big: tuple[torch.Tensor, ...]) -> torch.Tensor:
        seen.append(len(batch_big[0]))
        return torch.zeros(2)

    compute = reference_losses(
        losses, [nn.Linear(1, 1)], [(small, 16, None), (big, 16, None)], DataConfig(), torch.device("cpu"), 0
    )
    for _ in range(5):
        compute()
    by_split = {seed: passes.count(seed) for seed in passes}
    assert sorted(by_split.values()) == [1, 5] and seen == [16] * 5
    again: list[int] = []
    other = reference_losses(
        lambda a, b: (again.append(len(b[0])), torch.zeros(2))[1], [nn.Linear(1, 1)],
        [(small, 16, None), (big, 16, None)], DataConfig(num_workers=1), torch.device("cpu"), 0,
    )  # fmt: skip
    other()
    other()
    assert again == [16, 16]  # with a worker: the workers persist (no pass ever restarts them)
