"""The dual-loss loop against hand-written loops doing the same work (same model, data, steps).

Run: python -m benchmarks.loop_overhead [--epochs 12] [--repeats 5] [--device cpu] [--save PATH]

- ``hand-written``: the minimal loop: tensors on the device, index batches, weighted sum, one backward,
  validation once per epoch — what the library loop should cost.
- ``sweep dual_loss``: ``objectives.dual_loss.train`` with the same configuration (schedule table,
  strategy object, running sums, finite checks, one sync per epoch).
- ``sweep dual_loss, DataLoader path``: the same library loop with each task's training split handed
  over as a ``TensorDataset`` (read by a DataLoader, batches moved to the device as they come) — the
  cost of the Dataset path against the tensor fast path on the same trainings.
- ``DataLoader + .item()``: the common tutorial shape: two DataLoaders cycled with a fresh iterator,
  ``loss.item()`` every step.

Prints the median time per training run and the ratio against the hand-written loop, in one run;
``--save benchmarks/results/loop_overhead.json`` keeps them with the command, machine and date for
``python -m benchmarks.docs`` (docs/performance.md).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import TensorDataset

from benchmarks.results import save
from objectives import dual_loss
from objectives.config import DualLossConfig
from objectives.problems import Problem, build_problem


def hand_written(problem: Problem, epochs: int, device: str, seed: int) -> float:
    torch.manual_seed(seed)
    model = problem.make_model().to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    (xa, ya), (xb, yb) = problem.a.train, problem.b.train
    g = torch.Generator(device=device).manual_seed(seed)
    steps = -(-len(xa) // 64)
    for _ in range(epochs):
        ia = torch.randperm(len(xa), generator=g, device=device).split(64)
        ib = torch.cat([torch.randperm(len(xb), generator=g, device=device) for _ in range(-(-steps * 64 // len(xb)))])
        ib = ib[: steps * 64].split(64)
        for a, b in zip(ia, ib, strict=True):
            opt.zero_grad(set_to_none=True)
            la = nn.functional.cross_entropy(model(xa[a])[0], ya[a])
            lb = nn.functional.cross_entropy(model(xb[b])[1], yb[b])
            (0.5 * la + 0.5 * lb).backward()
            opt.step()
        with torch.no_grad():
            xv, yv = problem.a.val
            out = model(xv)
            value = (
                nn.functional.cross_entropy(out[0], yv) + nn.functional.cross_entropy(out[1], problem.b.val[1])
            ).item()
    return value


def dataloader_item(problem: Problem, epochs: int, device: str, seed: int) -> float:
    torch.manual_seed(seed)
    model = problem.make_model().to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    la_ = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*problem.a.train), batch_size=64, shuffle=True)
    lb_ = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*problem.b.train), batch_size=64, shuffle=True)
    log = []
    for _ in range(epochs):
        it_b = iter(lb_)
        for xa, ya in la_:
            try:
                xb, yb = next(it_b)
            except StopIteration:
                it_b = iter(lb_)
                xb, yb = next(it_b)
            xa, ya, xb, yb = xa.to(device), ya.to(device), xb.to(device), yb.to(device)
            opt.zero_grad()
            la = nn.functional.cross_entropy(model(xa)[0], ya)
            lb = nn.functional.cross_entropy(model(xb)[1], yb)
            loss = 0.5 * la + 0.5 * lb
            loss.backward()
            opt.step()
            log.append(loss.item())
    return log[-1]


def library(problem: Problem, epochs: int, device: str, seed: int) -> float:
    cfg = DualLossConfig(
        problem="digits_pair",
        seed=seed,
        data_seed=0,
        device=device,
        epochs=epochs,
        batch_size=64,
        mixing="cycle",
        optimizer={"type": "sgd", "lr": 0.1, "momentum": 0.9},
    )
    return dual_loss.train(cfg, None, problem=problem)["val_total_loss"]


def library_dataloader(problem: Problem, epochs: int, device: str, seed: int) -> float:
    """The library loop on the DataLoader path: the same tensors as TensorDatasets (CPU, as a Dataset is)."""
    as_datasets = replace(
        problem,
        a=replace(problem.a, train=TensorDataset(*(t.cpu() for t in problem.a.train))),
        b=replace(problem.b, train=TensorDataset(*(t.cpu() for t in problem.b.train))),
    )
    return library(as_datasets, epochs, device, seed)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(prog="python -m benchmarks.loop_overhead", description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--save", type=Path, help="also save the times with the command, machine and date (benchmarks.docs)")
    args = p.parse_args(argv)
    started = time.perf_counter()
    torch.set_num_threads(1)
    problem = build_problem("digits_pair", {}, 0).to(args.device)
    assert isinstance(problem, Problem)
    runs = {
        "hand-written": hand_written,
        "sweep dual_loss": library,
        "sweep dual_loss, DataLoader path": library_dataloader,
        "DataLoader + .item()": dataloader_item,
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    for fn in runs.values():
        fn(problem, 1, args.device, 0)  # warm-up
    for r in range(args.repeats):  # interleaved, so drift affects all alike
        for name, fn in runs.items():
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn(problem, args.epochs, args.device, r)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - start)
    base = statistics.median(times["hand-written"])
    print(f"| loop ({args.device}, digits_pair, {args.epochs} epochs) | median s / run | × hand-written |")
    print("|---|---|---|")
    for name, ts in times.items():
        print(f"| {name} | {statistics.median(ts):.3f} | {statistics.median(ts) / base:.2f} |")
    if args.save:
        settings = {"epochs": args.epochs, "repeats": args.repeats, "device": args.device, "problem": "digits_pair"}
        median = {name: statistics.median(ts) for name, ts in times.items()}
        results = {"times_s": times, "median_s": median, "ratio": {name: m / base for name, m in median.items()}}
        save(args.save, "loop_overhead", argv, settings, results, time.perf_counter() - started, args.device)


if __name__ == "__main__":
    main()
