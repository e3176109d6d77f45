"""Dataset/DataLoader splits, structured inputs and numerics in both loops (objectives.data, .numerics).

Every problem here is built in this file from tiny tensors (float64 where results must agree to
~1e-12) and handed to ``train`` with ``problem=``. Models are built through :class:`Factory`, which
keeps each model the loop trains and its initial state, so final parameters (float64, exact) can be
compared besides the metrics (which ``train`` reports as float32-rounded Python floats).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import random
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from torch import nn
from torch.utils.data import Dataset, IterableDataset, TensorDataset

from objectives import alternating, dual_loss, numerics
from objectives.config import AlternatingConfig, DualLossConfig
from objectives.data import DataError, weighted_means
from objectives.problems import CoupledProblem, Problem, Task

F64 = torch.float64
DX, D1 = 5, 2  # input features; tuple/dict models get them as the first D1 and the other DX - D1
DZ, DY = 3, 2  # model A's output (alternating) and the final output width
CPU = torch.device("cpu")
NOT_COMPARED = {"peak_memory_mb"}  # process-wide peak RSS: grows between runs, never a training result


# --- data -----------------------------------------------------------------------------------------


def mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return nn.functional.mse_loss(pred, target)


def mae(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (pred - target).abs().mean()


def dual_split(n: int, seed: int, dtype: torch.dtype = F64) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)``: x (n, DX) standard normal, y = tanh(x W) + noise with W drawn from ``seed`` too."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(DX, DY, generator=g, dtype=F64)
    x = torch.randn(n, DX, generator=g, dtype=F64)
    y = torch.tanh(x @ w) + 0.1 * torch.randn(n, DY, generator=g, dtype=F64)
    return x.to(dtype), y.to(dtype)


def coupled_split(n: int, seed: int, dtype: torch.dtype = F64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x, y, t)``: A's target t = tanh of x's first DZ features, B's target y from the last DY."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, DX, generator=g, dtype=F64)
    t = torch.tanh(x[:, :DZ]) + 0.1 * torch.randn(n, DZ, generator=g, dtype=F64)
    y = torch.sin(x[:, DX - DY :]) + 0.1 * torch.randn(n, DY, generator=g, dtype=F64)
    return x.to(dtype), y.to(dtype), t.to(dtype)


def structured(x: torch.Tensor, inputs: str) -> Any:
    """``x`` as a model input of kind ``inputs``: the tensor, a tuple of two column blocks, or a dict of
    them (keys deliberately not in the forward's argument order: they must be passed by name)."""
    if inputs == "plain":
        return x
    if inputs == "tuple":
        return (x[:, :D1], x[:, D1:])
    return {"right": x[:, D1:], "left": x[:, :D1]}


def _row(tree: Any, i: int) -> Any:
    if isinstance(tree, torch.Tensor):
        return tree[i]
    if isinstance(tree, dict):
        return {k: _row(v, i) for k, v in tree.items()}
    return tuple(_row(v, i) for v in tree)


class Items(Dataset):
    """A map-style Dataset over a tensor split of any structure; records every index it is asked for
    (in this process: with ``num_workers: 0``)."""

    def __init__(self, split: tuple[Any, ...]) -> None:
        self.split = split
        self.seen: list[int] = []

    def __len__(self) -> int:
        return len(self.split[1])

    def __getitem__(self, i: int) -> Any:
        self.seen.append(int(i))
        return _row(self.split, i)


def as_split(split: tuple[Any, ...], path: str) -> Any:
    """The same samples as tensors (``tensor``), a ``TensorDataset`` or an :class:`Items` Dataset."""
    if path == "tensor":
        return split
    if path == "tensordataset":
        return TensorDataset(*split)
    return Items(split)


# --- models ---------------------------------------------------------------------------------------


class Net(nn.Module):
    """A small MLP on one input tensor. The subclasses take the same features in two parts: same
    parameters, so the same seed gives the same initial model."""

    def __init__(self, d_in: int = DX, d_out: int = DY, hidden: int = 6) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_in, hidden), nn.Tanh(), nn.Linear(hidden, d_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TupleNet(Net):
    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.net(torch.cat([x1, x2], dim=-1))


class DictNet(Net):
    def forward(self, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.net(torch.cat([left, right], dim=-1))


MODELS = {"plain": Net, "tuple": TupleNet, "dict": DictNet}


class Factory:
    """A ``make_model``: builds ``cls(**kw)`` in ``dtype``, keeping every model built and its initial state."""

    def __init__(self, cls: type[nn.Module] = Net, dtype: torch.dtype = F64, **kw: Any) -> None:
        self.cls, self.dtype, self.kw = cls, dtype, kw
        self.made: list[nn.Module] = []
        self.initial: list[dict[str, torch.Tensor]] = []

    def __call__(self) -> nn.Module:
        model = self.cls(**self.kw).to(self.dtype)
        self.made.append(model)
        self.initial.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return model

    @property
    def model(self) -> nn.Module:
        assert len(self.made) == 1, "the loop should build exactly one model per factory"
        return self.made[0]

    def fresh(self) -> nn.Module:
        """A new module holding the trained model's initial parameters."""
        model = copy.deepcopy(self.model)
        model.load_state_dict(self.initial[0])
        return model


def dual_problem(
    path: str = "tensor",
    dtype: torch.dtype = F64,
    n: tuple[int, int] = (12, 20),
    n_val: int = 10,
    inputs: str = "plain",
    val_path: str | None = None,
) -> Problem:
    """Two regression tasks on one :class:`Net` (of the ``inputs`` kind); training splits as ``path``
    says, validation splits as ``val_path`` (default: the same)."""
    splits = []
    for seed, rows in zip((1, 2), n, strict=True):
        x, y = dual_split(rows, seed, dtype)
        xv, yv = dual_split(n_val, seed + 10, dtype)
        train_split = as_split((structured(x, inputs), y), path)
        val_split = as_split((structured(xv, inputs), yv), val_path or path)
        splits.append((train_split, val_split))
    (ta, va), (tb, vb) = splits
    return Problem(
        make_model=Factory(MODELS[inputs], dtype),
        a=Task(train=ta, val=va, loss=mse, metrics={"mae": mae}),
        b=Task(train=tb, val=vb, loss=mse),
    )


def coupled_problem(
    path: str = "tensor", dtype: torch.dtype = F64, n: int = 12, n_val: int = 10, inputs: str = "plain"
) -> CoupledProblem:
    """A (inputs → z, DZ wide, of the ``inputs`` kind) then B (z → DY); both splits as ``path`` says."""
    x, y, t = coupled_split(n, 3, dtype)
    xv, yv, tv = coupled_split(n_val, 4, dtype)
    return CoupledProblem(
        make_model_a=Factory(MODELS[inputs], dtype, d_out=DZ),
        make_model_b=Factory(Net, dtype, d_in=DZ, d_out=DY, hidden=4),
        train=as_split((structured(x, inputs), y, t), path),
        val=as_split((structured(xv, inputs), yv, tv), path),
        loss_a=mse,
        loss_b=mse,
        metrics={"mae": mae},
    )


def sgd(lr: float = 0.1, momentum: float = 0.0) -> dict[str, Any]:
    return {"type": "sgd", "lr": lr, "momentum": momentum, "weight_decay": 0.0}


def dual_cfg(**kw: Any) -> DualLossConfig:
    """A resolved CPU dual-loss config (plain SGD, 2 epochs, batch 4, weights 0.3/0.7); ``kw`` overrides."""
    fields: dict[str, Any] = {
        "problem": "linear_pair",  # a name only: every test passes its own problem
        "seed": 0,
        "data_seed": 0,
        "device": "cpu",
        "epochs": 2,
        "batch_size": 4,
        "weights": (0.3, 0.7),
        "optimizer": sgd(),
    }
    return DualLossConfig(**{**fields, **kw})


def alt_cfg(**kw: Any) -> AlternatingConfig:
    """A resolved CPU alternating config (plain SGD for both models, 2 epochs, batch 4); ``kw`` overrides."""
    fields: dict[str, Any] = {
        "problem": "digits_codes",
        "seed": 0,
        "data_seed": 0,
        "device": "cpu",
        "epochs": 2,
        "batch_size": 4,
        "weights": (0.3, 0.7),
        "model_a": {"optimizer": sgd(0.1)},
        "model_b": {"optimizer": sgd(0.2)},
    }
    return AlternatingConfig(**{**fields, **kw})


LOOPS = ("dual_loss", "alternating")


def problem_for(loop: str, **kw: Any) -> Problem | CoupledProblem:
    if loop == "dual_loss":
        return dual_problem(**kw)
    kw.pop("val_path", None)
    if "n" in kw:
        kw["n"] = kw["n"][0]
    return coupled_problem(**kw)


def cfg_for(loop: str, **kw: Any) -> DualLossConfig | AlternatingConfig:
    return dual_cfg(**kw) if loop == "dual_loss" else alt_cfg(**kw)


def run(cfg: Any, problem: Any, report: Any = None) -> dict[str, float]:
    module = dual_loss if isinstance(cfg, DualLossConfig) else alternating
    return module.train(cfg, report, problem=problem)


def factories(problem: Problem | CoupledProblem) -> list[Factory]:
    if isinstance(problem, Problem):
        return [problem.make_model]  # type: ignore[list-item]
    return [problem.make_model_a, problem.make_model_b]  # type: ignore[list-item]


def params(problem: Problem | CoupledProblem) -> list[torch.Tensor]:
    """Every trained parameter (all models, in order), detached."""
    return [p.detach().clone() for f in factories(problem) for p in f.model.parameters()]


def assert_same_metrics(first: dict[str, float], second: dict[str, float], tol: float = 0.0) -> None:
    """Equal metrics (the same names; values within ``tol``, relative and absolute; 0 = bit-identical)."""
    assert set(first) == set(second)
    keys = sorted(set(first) - NOT_COMPARED)
    got, want = {k: first[k] for k in keys}, {k: second[k] for k in keys}
    if tol == 0.0:
        assert got == want
    else:
        assert got == pytest.approx(want, rel=tol, abs=tol)


def assert_same_params(first: list[torch.Tensor], second: list[torch.Tensor], tol: float = 1e-12) -> None:
    assert len(first) == len(second)
    for p, q in zip(first, second, strict=True):
        torch.testing.assert_close(p, q, rtol=tol, atol=tol)


def assert_trained(problem: Problem | CoupledProblem) -> None:
    """Every model moved away from its initial parameters (so an equality is not trivially true)."""
    for f in factories(problem):
        moved = [not torch.equal(v, f.initial[0][k]) for k, v in f.model.state_dict().items()]
        assert any(moved)


# --- 1. the DataLoader path equals the tensor path ------------------------------------------------


@pytest.mark.parametrize("loop", LOOPS)
def test_full_batch_tensor_dataset_equals_tensors(loop):
    """batch_size ≥ n: every step sees every sample, so sample order cannot matter and a TensorDataset
    (shuffled by a DataLoader) trains exactly like the same tensors (float64, ~1e-12)."""
    results = {}
    for path in ("tensor", "tensordataset"):
        problem = problem_for(loop, path=path)
        cfg = cfg_for(loop, batch_size=32, epochs=4, **({"mode": "alternate"} if loop == "alternating" else {}))
        results[path] = (run(cfg, problem), params(problem))
        assert_trained(problem)
    assert_same_metrics(results["tensor"][0], results["tensordataset"][0], tol=1e-12)
    assert_same_params(results["tensor"][1], results["tensordataset"][1], tol=1e-12)


# --- 2. tuple and dict inputs ---------------------------------------------------------------------


@pytest.mark.parametrize("inputs", ["tuple", "dict"])
@pytest.mark.parametrize("path", ["tensor", "dataset"])
@pytest.mark.parametrize("loop", LOOPS)
def test_structured_inputs_equal_concatenated_tensor(loop, path, inputs):
    """``model(*inputs)`` / ``model(**inputs)`` on the column blocks trains exactly like the same
    network on the concatenated tensor (same init, same batches): bit-identical metrics. The dict's
    keys are not in the argument order, so passing its values by position would fail here."""
    reference = problem_for(loop, path=path, dtype=torch.float32)
    problem = problem_for(loop, path=path, dtype=torch.float32, inputs=inputs)
    cfg = cfg_for(loop, eval_batch_size=3)
    expected = run(cfg, reference)
    assert_trained(reference)
    assert_same_metrics(run(cfg, problem), expected)
    assert_same_params(params(problem), params(reference), tol=0.0)


# --- 3. streams: IterableDataset and steps per epoch ----------------------------------------------


class Stream(IterableDataset):
    """An endless stream of samples ``(x, y[, t])``, counting every sample read (in this process)."""

    def __init__(self, seed: int, coupled: bool = False) -> None:
        self.seed, self.coupled, self.read, self.started = seed, coupled, 0, 0

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        self.started += 1
        g = torch.Generator().manual_seed(self.seed)
        while True:
            self.read += 1
            x = torch.randn(DX, generator=g, dtype=F64)
            y = torch.randn(DY, generator=g, dtype=F64)
            yield (x, y, torch.randn(DZ, generator=g, dtype=F64)) if self.coupled else (x, y)


def _stream_dual(task_steps: int | None, stream_task: str = "a") -> Problem:
    """A dual problem whose task ``stream_task`` trains on a :class:`Stream`; the other task has 8 tensor
    samples (2 batches of 4 per pass)."""
    problem = dual_problem(n=(8, 8))
    task = getattr(problem, stream_task)
    task = dataclasses.replace(task, train=Stream(7), steps_per_epoch=task_steps)
    return dataclasses.replace(problem, **{stream_task: task})


@pytest.mark.parametrize(
    ("task_steps", "data_steps", "steps"),
    [(5, None, 5), (None, 3, 3), (5, 3, 3)],
    ids=["task", "data", "data-overrides-task"],
)
def test_dual_stream_trains_steps_per_epoch(task_steps, data_steps, steps):
    """Task a streams: each epoch reads exactly steps × batch samples (the stream, not the 2-batch
    task b, sets the epoch); objective.data.steps_per_epoch overrides the task's."""
    problem = _stream_dual(task_steps)
    cfg = dual_cfg(data={"steps_per_epoch": data_steps}, epochs=2)
    metrics = run(cfg, problem)
    assert problem.a.train.read == 2 * steps * 4
    assert problem.a.train.started == 1  # the next epoch continues the stream, it does not restart it
    assert math.isfinite(metrics["val_total_loss"])


@pytest.mark.parametrize(
    ("task_steps", "data_steps", "steps"),
    [(3, None, 3), (None, 5, 5), (3, 5, 5)],
    ids=["task", "data", "data-overrides-task"],
)
def test_alternating_stream_trains_steps_per_epoch(task_steps, data_steps, steps):
    """A coupled stream: steps × batch samples read per epoch and as many optimizer steps (alternate:
    A and B in turn)."""
    problem = dataclasses.replace(coupled_problem(), train=Stream(7, coupled=True), steps_per_epoch=task_steps)
    cfg = alt_cfg(data={"steps_per_epoch": data_steps}, epochs=2)
    metrics = run(cfg, problem)
    assert problem.train.read == 2 * steps * 4
    assert problem.train.started == 1
    assert metrics["opt_steps_a"] + metrics["opt_steps_b"] == 2 * steps
    assert metrics["opt_steps_a"] == math.ceil(2 * steps / 2)


@pytest.mark.parametrize("task", ["a", "b"])
def test_dual_stream_without_steps_is_refused_naming_the_task(task):
    with pytest.raises(DataError, match=f"task {task}'s training data is a stream"):
        run(dual_cfg(), _stream_dual(None, task))


def test_alternating_stream_without_steps_is_refused():
    problem = dataclasses.replace(coupled_problem(), train=Stream(7, coupled=True))
    with pytest.raises(DataError, match=r"^the training data is a stream"):
        run(alt_cfg(), problem)


# --- 4. mixing over DataLoaders (dual loop) -------------------------------------------------------


def _mixing_problem(dtype: torch.dtype = F64) -> Problem:
    """Task a: 10 samples, task b: 40, as recording Datasets; validation splits are tensors (not recorded)."""
    return dual_problem(path="dataset", val_path="tensor", n=(10, 40), dtype=dtype)


def test_cycle_repeats_the_short_task_in_fresh_permutations():
    """batch 5: task b gives 8 steps, task a (2 batches a pass) is repeated 4 times an epoch, each pass
    a full permutation of range(10) in a new order; task b is read exactly once per epoch."""
    problem = _mixing_problem()
    run(dual_cfg(mixing="cycle", batch_size=5, epochs=2), problem)
    seen_a, seen_b = problem.a.train.seen, problem.b.train.seen
    assert len(seen_a) == 2 * 8 * 5
    passes = [seen_a[i : i + 10] for i in range(0, len(seen_a), 10)]
    for p in passes:
        assert sorted(p) == list(range(10))
    assert len({tuple(p) for p in passes}) == len(passes)  # re-shuffled: no pass replays another
    assert len(seen_b) == 2 * 40
    assert sorted(seen_b[:40]) == list(range(40)) and sorted(seen_b[40:]) == list(range(40))
    assert seen_b[:40] != seen_b[40:]


def test_zip_stops_at_the_short_task_and_names_the_cut_one():
    problem = _mixing_problem()
    with pytest.warns(UserWarning, match=r"task b's training data") as caught:
        run(dual_cfg(mixing="zip", batch_size=5, epochs=2), problem)
    zip_warnings = [str(w.message) for w in caught if "mixing=zip" in str(w.message)]
    assert len(zip_warnings) == 1 and "25.0%" in zip_warnings[0]  # 2 steps × 5 of task b's 40 samples
    seen_a, seen_b = problem.a.train.seen, problem.b.train.seen
    assert len(seen_a) == len(seen_b) == 2 * 2 * 5  # min(2, 8) steps per epoch
    assert sorted(seen_a[:10]) == list(range(10)) and sorted(seen_a[10:]) == list(range(10))
    assert len(set(seen_b[:10])) == 10  # within an epoch, no sample of b twice


def test_cycle_over_loaders_does_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run(dual_cfg(mixing="cycle", batch_size=5, epochs=1), _mixing_problem())


def test_accumulate_over_loaders_equals_cycle():
    """Static weights: one backward per task sums to the gradient of the weighted sum (float64)."""
    results = {}
    for mixing in ("cycle", "accumulate"):
        problem = _mixing_problem()
        results[mixing] = (run(dual_cfg(mixing=mixing, batch_size=5, epochs=2), problem), params(problem))
        assert len(problem.a.train.seen) == 2 * 8 * 5
        assert_trained(problem)
    assert_same_metrics(results["accumulate"][0], results["cycle"][0], tol=1e-12)
    assert_same_params(results["accumulate"][1], results["cycle"][1], tol=1e-12)


# --- 5. replay on the Dataset path ----------------------------------------------------------------


class Noisy(Dataset):
    """Training samples with augmentation-like noise drawn from torch's, numpy's and/or python's RNG."""

    def __init__(self, split: tuple[torch.Tensor, ...], sources: tuple[str, ...]) -> None:
        self.split, self.sources = split, sources

    def __len__(self) -> int:
        return len(self.split[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        x, *rest = (t[i] for t in self.split)
        noise = torch.zeros_like(x)
        if "torch" in self.sources:
            noise = noise + torch.randn(x.shape, dtype=x.dtype)
        if "numpy" in self.sources:
            noise = noise + torch.from_numpy(np.random.standard_normal(x.shape)).to(x.dtype)
        if "random" in self.sources:
            noise = noise + torch.tensor([random.gauss(0.0, 1.0) for _ in range(x.numel())], dtype=x.dtype)
        return (x + 0.3 * noise, *rest)


def _noisy_problem(loop: str, sources: tuple[str, ...]) -> Problem | CoupledProblem:
    if loop == "dual_loss":
        problem = dual_problem(n=(12, 16), val_path="tensor", dtype=torch.float32)
        noisy = {
            k: dataclasses.replace(t, train=Noisy(t.train, sources)) for k, t in (("a", problem.a), ("b", problem.b))
        }
        return dataclasses.replace(problem, **noisy)
    problem = coupled_problem(n=16, dtype=torch.float32)
    return dataclasses.replace(problem, train=Noisy(problem.train, sources))


def _scramble(k: int) -> None:
    """Different global RNG states, as in a fresh process: a replay must not depend on them."""
    torch.manual_seed(1000 + k)
    np.random.seed(1000 + k)
    random.seed(1000 + k)


def _replays(loop: str, sources: tuple[str, ...], workers: int) -> None:
    cfg = cfg_for(loop, data={"num_workers": workers}, epochs=2)
    runs = []
    for k in range(2):
        _scramble(k)
        runs.append(run(cfg, _noisy_problem(loop, sources)))
    quiet = run(cfg, _noisy_problem(loop, ()))
    assert quiet["val_total_loss"] != runs[0]["val_total_loss"]  # the noise does change training
    assert_same_metrics(runs[0], runs[1])


@pytest.mark.parametrize("source", ["torch", "numpy", "random"])
@pytest.mark.parametrize("loop", LOOPS)
def test_dataset_with_random_augmentation_replays_without_workers(loop, source):
    """num_workers 0: __getitem__ runs in the training process; its RNGs must be seeded by the trial."""
    _replays(loop, (source,), workers=0)


@pytest.mark.parametrize("loop", LOOPS)
def test_dataset_with_random_augmentation_replays_with_workers(loop):
    """num_workers 2: each worker's torch, numpy and random seeds derive from the trial seed."""
    _replays(loop, ("torch", "numpy", "random"), workers=2)


@pytest.mark.parametrize("loop", LOOPS)
def test_worker_processes_do_not_change_the_batches(loop):
    """num_workers is a speed setting: with 2 workers the loaders yield the same batches in the same order
    as with 0, epoch after epoch, so training is identical (deterministic items, float64)."""
    results = {}
    for workers in (0, 2):
        problem = problem_for(loop, path="dataset", n=(24, 24))
        results[workers] = (run(cfg_for(loop, data={"num_workers": workers}, epochs=3), problem), params(problem))
    assert_same_metrics(results[2][0], results[0][0])
    assert_same_params(results[2][1], results[0][1], tol=0.0)


def _training_orders(loop: str, seed: int, problem: Problem | CoupledProblem | None = None) -> list[list[int]]:
    """The training samples each :class:`Items` split was read in (2 epochs, batch 4, no workers) by a
    trial with seed ``seed``; validation splits are tensors, so only training reads are recorded."""
    if problem is None:
        if loop == "dual_loss":
            problem = dual_problem(path="dataset", val_path="tensor", n=(12, 12))
        else:
            problem = dataclasses.replace(coupled_problem(path="dataset"), val=coupled_split(10, 4))
    run(cfg_for(loop, seed=seed, epochs=2, batch_size=4), problem)
    splits = [problem.a.train, problem.b.train] if isinstance(problem, Problem) else [problem.train]
    for split in splits:  # 2 epochs, each a full permutation of the 12 samples
        assert len(split.seen) == 24 and sorted(split.seen[:12]) == sorted(split.seen[12:]) == list(range(12))
    return [split.seen for split in splits]


@pytest.mark.parametrize("loop", LOOPS)
def test_dataset_batch_order_follows_the_trial_seed(loop):
    """On the Dataset path the DataLoader's shuffling is seeded by the trial's seed: the same seed reads
    every training split in the same order, epoch after epoch; another seed reads each split (each task's,
    in the dual loop) in another order, in each epoch."""
    first, again, other = (_training_orders(loop, seed) for seed in (0, 0, 1))
    assert first == again
    for seen, seen_other in zip(first, other, strict=True):
        assert seen[:12] != seen_other[:12] and seen[12:] != seen_other[12:]


def test_the_two_tasks_loaders_are_shuffled_independently():
    """Two tasks with identical training data (same samples, same size, same batch size) are still read
    in different orders, in every epoch: each task's DataLoader draws from a seed of its own."""
    x, y = dual_split(12, 1)
    base = dual_problem(path="dataset", val_path="tensor", n=(12, 12))
    twins = {k: dataclasses.replace(getattr(base, k), train=Items((x, y))) for k in ("a", "b")}
    seen_a, seen_b = _training_orders("dual_loss", 0, dataclasses.replace(base, **twins))
    assert seen_a[:12] != seen_b[:12] and seen_a[12:] != seen_b[12:]


# --- 6. validation averages by sample count -------------------------------------------------------


def _outlier_val(split: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """The split with its last target far off: the 1-sample last chunk dominates a mean of chunk means."""
    x, y, *rest = split
    y = y.clone()
    y[-1] += 50.0
    return (x, y, *rest)


def test_dual_evaluate_averages_a_dataset_by_samples():
    """50 validation samples in chunks of 7 (7 × 7 + 1): evaluate equals the full-batch loss and metric
    of the same model, where the mean of chunk means would be far off."""
    val = _outlier_val(dual_split(50, 5))
    tasks = {"a": Task(train=dual_split(8, 1), val=Items(val), loss=mse, metrics={"mae": mae})}
    tasks["b"] = Task(train=dual_split(8, 2), val=Items(dual_split(50, 6)), loss=mse)
    torch.manual_seed(0)
    model = Net().double()
    got = dual_loss.evaluate(model, tasks, dual_cfg(eval_batch_size=7), CPU)
    with torch.no_grad():
        pred = model(val[0])
        want_loss, want_mae = mse(pred, val[1]), mae(pred, val[1])
        chunk_means = torch.stack([mse(pred[i : i + 7], val[1][i : i + 7]) for i in range(0, 50, 7)]).mean()
    assert abs(chunk_means - want_loss) > 0.5 * want_loss  # the naive average would be caught
    torch.testing.assert_close(got["val_a_loss"], want_loss, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got["val_a_mae"], want_mae, rtol=1e-12, atol=1e-12)
    full = dual_loss.evaluate(model, tasks, dual_cfg(eval_batch_size=4096), CPU)
    for key in ("val_a_loss", "val_a_mae", "val_b_loss", "val_total_loss"):
        torch.testing.assert_close(got[key], full[key], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got["val_total_loss"], got["val_a_loss"] + got["val_b_loss"])
    assert len(tasks["a"].val.seen) == 2 * 50  # read once per evaluate, every sample


@pytest.mark.parametrize("consistency", [False, True])
def test_alternating_evaluate_averages_a_dataset_by_samples(consistency):
    x, y, t = _outlier_val(coupled_split(50, 5))
    problem = dataclasses.replace(coupled_problem(), val=Items((x, y, t)))
    torch.manual_seed(0)
    model_a, model_b = Net(d_out=DZ).double(), Net(d_in=DZ, hidden=4).double()
    weights = (0.3, 0.7, 0.2) if consistency else (0.3, 0.7)
    got = alternating.evaluate(problem, model_a, model_b, alt_cfg(eval_batch_size=7, weights=weights), CPU)
    with torch.no_grad():
        z = model_a(x)
        out = model_b(z)
        want = {"val_a_loss": mse(z, t), "val_b_loss": mse(out, y), "val_b_mae": mae(out, y)}
        if consistency:
            want["val_consistency_loss"] = ((out - model_b(t)) ** 2).mean()
        chunk_means = torch.stack([mse(out[i : i + 7], y[i : i + 7]) for i in range(0, 50, 7)]).mean()
    assert abs(chunk_means - want["val_b_loss"]) > 0.5 * want["val_b_loss"]
    assert set(got) == {*want, "val_total_loss"}
    for key, value in want.items():
        torch.testing.assert_close(got[key], value, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got["val_total_loss"], want["val_a_loss"] + want["val_b_loss"], rtol=1e-12, atol=0)


def test_weighted_means_weights_by_sample_count():
    """Two batches of 3 and 1 samples: the sample mean (3.25), not the mean of batch means (5.5)."""
    batches = iter([(torch.tensor([1.0, 2.0, 3.0]), 3), (torch.tensor([7.0]), 1)])
    got = weighted_means(batches, lambda b: {"m": b.mean(), "sq": (b**2).mean()})
    assert got["m"].item() == pytest.approx(13 / 4, abs=1e-6)
    assert got["sq"].item() == pytest.approx((1 + 4 + 9 + 49) / 4, abs=1e-6)


def test_weighted_means_of_nothing_names_the_data():
    with pytest.raises(DataError, match="task b's validation data is empty"):
        weighted_means(iter([]), lambda b: {"m": b.mean()}, "task b's")


# --- 7. empty data --------------------------------------------------------------------------------


def _empty(split: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return tuple(t[:0] for t in split)


@pytest.mark.parametrize("path", ["tensor", "dataset"])
@pytest.mark.parametrize(("task", "which"), [("a", "train"), ("b", "train"), ("a", "val"), ("b", "val")])
def test_dual_empty_data_is_refused_naming_the_task(task, which, path):
    problem = dual_problem(n=(8, 8))
    x, y = dual_split(8, 1)
    old = getattr(problem, task)
    empty = dataclasses.replace(old, **{which: as_split(_empty((x, y)), path)})
    problem = dataclasses.replace(problem, **{task: empty})
    kind = "training" if which == "train" else "validation"
    with pytest.raises(DataError, match=f"task {task}'s {kind} data is empty"):
        run(dual_cfg(epochs=1), problem)


@pytest.mark.parametrize("path", ["tensor", "dataset"])
@pytest.mark.parametrize("which", ["train", "val"])
def test_alternating_empty_data_is_refused(which, path):
    empty = as_split(_empty(coupled_split(4, 3)), path)
    problem = dataclasses.replace(coupled_problem(n=8), **{which: empty})
    kind = "training" if which == "train" else "validation"
    with pytest.raises(DataError, match=f"^the {kind} data is empty"):
        run(alt_cfg(epochs=1), problem)


# --- 8. gradient accumulation (dual loop) ---------------------------------------------------------


def _without(metrics: dict[str, float], keys: set[str]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if k not in keys}


@pytest.mark.parametrize("weighting", ["static", "uncertainty", "imtl_l"])
def test_grad_accum_equals_the_large_batch(weighting):
    """n_a = n_b = 64, 2 epochs, plain SGD: batch 8 × 4 accumulated = batch 32 (the tensor path draws one
    permutation per task per epoch whatever the batch size, so the groups hold the same samples). Strategies
    with learned terms (uncertainty's s_i/2, IMTL-L's −s_i) accumulate them too."""
    results = {}
    for batch_size, k in ((8, 4), (32, 1)):
        problem = dual_problem(n=(64, 64))
        cfg = dual_cfg(
            batch_size=batch_size, grad_accum_steps=k, optimizer=sgd(0.2), epochs=2, weighting={"type": weighting}
        )
        results[k] = (run(cfg, problem), params(problem))
        assert_trained(problem)
    accumulated, large = results[4][0], results[1][0]
    # validation (float64 model, reported as floats) to ~1e-12; the epoch means of training losses and
    # weights are float32 running sums over 8 vs 2 steps, so those agree to float32 rounding only
    running = {k for k in large if k.startswith(("train_", "weight_"))}
    # the learned s_i are float32 parameters: summed in groups they round differently (~1e-8 relative)
    tol = 1e-12 if weighting != "imtl_l" else 1e-6
    assert_same_metrics(_without(accumulated, running), _without(large, running), tol=tol)
    assert {k: accumulated[k] for k in running} == pytest.approx({k: large[k] for k in running}, rel=1e-6)
    assert_same_params(results[4][1], results[1][1], tol=tol)
    # and a different grouping is a different training run (the comparison can fail)
    problem = dual_problem(n=(64, 64))
    run(dual_cfg(batch_size=8, grad_accum_steps=2, optimizer=sgd(0.2), epochs=2), problem)
    assert (params(problem)[0] - results[1][1][0]).abs().max() > 1e-6


def loop_weights(cfg: DualLossConfig) -> tuple[float, float]:
    """The static weights as the loop applies them: its weight table is float32, so 0.3 is 0.30000001..."""
    w = torch.tensor(cfg.weights, dtype=torch.float32).tolist()
    return (w[0], w[1])


def _accum_reference(
    problem: Problem, weights: tuple[float, float], lr: float, k: int, batch: int, epochs: int, scale_last: bool
) -> list[torch.Tensor]:
    """Gradient accumulation written out: per epoch one randperm per task (a then b) from a generator
    seeded like the loop's; groups of k batches, each batch's weighted loss divided by its group's size
    (``scale_last=False``: always by k, a wrong variant); one SGD step per group."""
    factory: Factory = problem.make_model  # type: ignore[assignment]
    model = factory.fresh()
    ps = list(model.parameters())
    g = torch.Generator().manual_seed(0)
    (xa, ya), (xb, yb) = problem.a.train, problem.b.train
    for _ in range(epochs):
        order_a = torch.randperm(len(ya), generator=g).split(batch)
        order_b = torch.randperm(len(yb), generator=g).split(batch)
        steps = len(order_a)
        for start in range(0, steps, k):
            group = range(start, min(start + k, steps))
            size = len(group) if scale_last else k
            grads = [torch.zeros_like(p) for p in ps]
            for i in group:
                ia, ib = order_a[i], order_b[i]
                loss = weights[0] * mse(model(xa[ia]), ya[ia]) + weights[1] * mse(model(xb[ib]), yb[ib])
                for acc, gr in zip(grads, torch.autograd.grad(loss / size, ps), strict=True):
                    acc += gr
            with torch.no_grad():
                for p, gr in zip(ps, grads, strict=True):
                    p -= lr * gr
    return [p.detach() for p in ps]


def test_grad_accum_shorter_last_group_matches_reference():
    """72 samples, batch 8, k = 4: groups of 4, 4 and 1 batches; the last is scaled by its own size."""
    problem = dual_problem(n=(72, 72))
    cfg = dual_cfg(batch_size=8, grad_accum_steps=4, optimizer=sgd(0.2), epochs=2)
    run(cfg, problem)
    got = params(problem)
    want = _accum_reference(problem, loop_weights(cfg), 0.2, 4, 8, 2, scale_last=True)
    assert_same_params(got, want, tol=1e-12)
    wrong = _accum_reference(problem, loop_weights(cfg), 0.2, 4, 8, 2, scale_last=False)
    assert max((p - q).abs().max().item() for p, q in zip(want, wrong, strict=True)) > 1e-6


@pytest.mark.parametrize("strategy", ["famo", "gradnorm", "pcgrad", "gls", "stch", "mgda"])
def test_grad_accum_refuses_strategies_without_a_plain_weighted_sum(strategy):
    with pytest.raises(ValidationError, match=f"weighting {strategy} is not one"):
        dual_cfg(grad_accum_steps=2, weighting={"type": strategy})


@pytest.mark.parametrize("strategy", ["static", "uncertainty", "dwa", "rlw", "imtl_l"])
def test_grad_accum_accepts_weighted_sum_strategies(strategy):
    assert dual_cfg(grad_accum_steps=2, weighting={"type": strategy}).grad_accum_steps == 2


# --- 9. gradient clipping (dual loop) -------------------------------------------------------------


def test_tiny_grad_clip_keeps_the_model_still():
    """grad_clip 1e-12 with SGD: after 2 epochs the validation losses are the untrained model's."""
    problem = dual_problem()
    metrics = run(dual_cfg(grad_clip=1e-12, optimizer=sgd(0.5)), problem)
    factory: Factory = problem.make_model  # type: ignore[assignment]
    untrained = dual_loss.evaluate(factory.fresh(), {"a": problem.a, "b": problem.b}, dual_cfg(), CPU)
    for key in ("val_a_loss", "val_b_loss", "val_a_mae", "val_total_loss"):
        assert metrics[key] == pytest.approx(untrained[key].item(), rel=1e-6)
    moved = max((p - q).abs().max().item() for p, q in zip(params(problem), factory.initial[0].values(), strict=True))
    assert moved < 1e-10
    free = run(dual_cfg(optimizer=sgd(0.5)), dual_problem())
    assert abs(free["val_total_loss"] - untrained["val_total_loss"].item()) > 1e-2 * free["val_total_loss"]


def test_grad_clip_equals_a_reference_step_clipping_the_global_norm():
    """Full batch, plain SGD, 2 steps: each step's gradient g of w_a L_a + w_b L_b is scaled by
    min(1, clip / (‖g‖ + 1e-6)) (torch's clip_grad_norm_, all parameters together)."""
    clip, lr = 0.05, 0.3
    problem = dual_problem()
    cfg = dual_cfg(batch_size=32, grad_clip=clip, optimizer=sgd(lr), epochs=2)
    run(cfg, problem)
    factory: Factory = problem.make_model  # type: ignore[assignment]
    model = factory.fresh()
    ps = list(model.parameters())
    (xa, ya), (xb, yb) = problem.a.train, problem.b.train
    w = loop_weights(cfg)
    for _ in range(2):
        loss = w[0] * mse(model(xa), ya) + w[1] * mse(model(xb), yb)
        grads = torch.autograd.grad(loss, ps)
        norm = torch.sqrt(sum((gr**2).sum() for gr in grads))
        assert norm > 2 * clip  # the clip is active
        coef = min(1.0, clip / (norm.item() + 1e-6))
        with torch.no_grad():
            for p, gr in zip(ps, grads, strict=True):
                p -= lr * coef * gr
    assert_same_params(params(problem), [p.detach() for p in ps], tol=1e-12)


# --- 10. precision --------------------------------------------------------------------------------


@pytest.mark.parametrize("loop", LOOPS)
def test_bf16_on_cpu_is_close_to_fp32_but_not_identical(loop):
    results = {}
    for precision in ("fp32", "bf16"):
        problem = problem_for(loop, dtype=torch.float32, n=(16, 16))
        results[precision] = run(cfg_for(loop, precision=precision, epochs=2), problem)
    fp32, bf16 = results["fp32"], results["bf16"]
    assert all(math.isfinite(v) for v in bf16.values())
    losses = [k for k in fp32 if k.endswith("_loss")]
    for key in losses:
        assert bf16[key] == pytest.approx(fp32[key], rel=5e-2), key
    assert any(bf16[k] != fp32[k] for k in losses)  # the bf16 autocast did run


@pytest.mark.parametrize("make", [dual_cfg, alt_cfg])
def test_fp16_on_cpu_is_refused(make):
    with pytest.raises(ValidationError, match=r"fp16.*CUDA"):
        make(precision="fp16", device="cpu")


@pytest.mark.parametrize("make", [dual_cfg, alt_cfg])
def test_fp16_with_gradnorm_is_refused_naming_it(make):
    with pytest.raises(ValidationError, match="weighting gradnorm computes its own gradients"):
        make(precision="fp16", device="cuda", weighting={"type": "gradnorm"})
    assert make(precision="fp16", device="cuda").precision == "fp16"  # static: allowed


def test_fp16_scaler_refuses_a_cpu_device():
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        numerics.scaler("fp16", torch.device("cpu"))
    for precision in ("fp32", "bf16"):
        assert not numerics.scaler(precision, CPU).is_enabled()


# --- 11. torch.compile ----------------------------------------------------------------------------


@pytest.mark.parametrize("loop", LOOPS)
def test_compile_eager_backend_is_bit_identical(loop):
    results = {}
    for option in (False, {"backend": "eager"}):
        problem = problem_for(loop, dtype=torch.float32)
        results[str(option)] = run(cfg_for(loop, compile=option, batch_size=32, epochs=2), problem)
    assert_same_metrics(results[str({"backend": "eager"})], results["False"])


@pytest.mark.parametrize("loop", LOOPS)
def test_compile_unknown_backend_fails_the_trial(loop):
    with pytest.raises(Exception, match="no_such_backend"):
        run(cfg_for(loop, compile={"backend": "no_such_backend"}, epochs=1), problem_for(loop))


# --- 12. bounded memory: a huge lazy Dataset --------------------------------------------------------


class Lazy(Dataset):
    """``size`` samples made from their index on demand (never stored), counting ``__getitem__`` calls."""

    def __init__(self, size: int, coupled: bool = False) -> None:
        self.size, self.coupled, self.calls, self.indices = size, coupled, 0, []

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        self.calls += 1
        self.indices.append(int(i))
        g = torch.Generator().manual_seed(int(i))
        x = torch.randn(DX, generator=g, dtype=F64)
        y = torch.randn(DY, generator=g, dtype=F64)
        return (x, y, torch.randn(DZ, generator=g, dtype=F64)) if self.coupled else (x, y)


@pytest.mark.parametrize("loop", LOOPS)
def test_huge_lazy_dataset_reads_only_the_steps_it_trains(loop):
    """len 10**6, data.steps_per_epoch 3, batch 4, 2 epochs: exactly 2·3·4 training reads per split,
    drawn across the whole range; the 16-sample validation split is read in full once per epoch."""
    coupled = loop == "alternating"
    cfg = cfg_for(loop, data={"steps_per_epoch": 3}, batch_size=4, epochs=2)
    if coupled:
        problem: Any = dataclasses.replace(coupled_problem(), train=Lazy(10**6, True), val=Lazy(16, True))
        trains, vals = [problem.train], [problem.val]
    else:
        base = dual_problem()
        a = dataclasses.replace(base.a, train=Lazy(10**6), val=Lazy(16))
        b = dataclasses.replace(base.b, train=Lazy(10**6), val=Lazy(16))
        problem = dataclasses.replace(base, a=a, b=b)
        trains, vals = [a.train, b.train], [a.val, b.val]
    metrics = run(cfg, problem)
    assert math.isfinite(metrics["val_total_loss"])
    for split in trains:
        assert split.calls == 2 * 3 * 4
        assert max(split.indices) > 1000  # shuffled over the whole (never materialised) range
    for split in vals:
        assert split.calls == 2 * 16
        assert split.indices == list(range(16)) * 2  # in order, no shuffling


# --- 13. peak memory ------------------------------------------------------------------------------


@pytest.mark.parametrize("loop", LOOPS)
def test_peak_memory_is_logged_every_epoch(loop):
    calls: list[tuple[int, dict[str, float]]] = []
    run(cfg_for(loop, epochs=3), problem_for(loop, path="dataset"), lambda e, m: calls.append((e, dict(m))))
    assert [e for e, _ in calls] == [0, 1, 2]
    peaks = [m["peak_memory_mb"] for _, m in calls]
    total_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20
    assert all(10.0 < p < total_mb for p in peaks)  # MiB of a Python process holding torch
    assert peaks == sorted(peaks)
