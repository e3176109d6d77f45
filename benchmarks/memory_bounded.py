"""Bounded memory on the Dataset path: a trial over a dataset far larger than memory.

Run: python -m benchmarks.memory_bounded [--samples 200000] [--steps 200] [--workers 2] [--save PATH]

The training sets are generated lazily in ``__getitem__`` (3×64×64 float32 images made from the
index): 200,000 samples per task would be 2 × 9.8 GB materialised. A dual-loss trial reads a fixed
number of steps per epoch (``data.steps_per_epoch``) through DataLoaders with worker processes. A
thread samples the memory of this process and all its children (the DataLoader workers) every 50 ms
from /proc (PSS, which counts pages shared by forked workers once, and summed RSS, which counts them in
every process); the table gives the peaks, the data's materialised size and the time per step.
``--save benchmarks/results/memory_bounded.json`` keeps them with the command, machine and date for
``python -m benchmarks.docs`` (docs/performance.md).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from benchmarks.docs import memory_table
from benchmarks.results import save
from objectives import dual_loss
from objectives.config import DualLossConfig
from objectives.problems import Problem, Task

SHAPE = (3, 64, 64)


class Generated(Dataset):
    """``n`` images of SHAPE and a class label, each made from its index on demand (nothing is stored)."""

    def __init__(self, n: int, classes: int, offset: int = 0) -> None:
        self.n, self.classes, self.offset = n, classes, offset

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(self.offset + i)
        label = (i * 7919) % self.classes
        image = torch.randn(SHAPE, generator=g) * 0.5 + label / self.classes
        return image, torch.tensor(label)


class CNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )  # fmt: skip
        self.a, self.b = nn.Linear(32, 10), nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.trunk(x)
        return self.a(h), self.b(h)


def _tree_memory_mb(pid: int) -> tuple[float, float]:
    """(RSS, PSS) summed over ``pid`` and every descendant, MiB (Linux /proc). Forked DataLoader workers
    share the parent's pages copy-on-write, so summed RSS counts those pages once per process; PSS
    divides each shared page among its sharers and sums to the memory the tree really holds."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    tree, frontier = {pid}, [pid]
    while frontier:
        frontier = [p for p, parent in parents.items() if parent in frontier and p not in tree]
        tree.update(frontier)
    rss = pss = 0
    for p in tree:
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1])
        except OSError:
            continue
    return rss / 1024, pss / 1024


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(prog="python -m benchmarks.memory_bounded", description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=200_000, help="training samples per task")
    p.add_argument("--steps", type=int, default=200, help="steps per epoch")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument(
        "--save", type=Path, help="also save the figures with the command, machine and date (benchmarks.docs)"
    )
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    problem = Problem(
        make_model=CNN,
        a=Task(train=Generated(args.samples, 10), val=Generated(512, 10, 10**9), loss=nn.functional.cross_entropy,
               head=0),
        b=Task(train=Generated(args.samples, 4, 2 * 10**9), val=Generated(512, 4, 3 * 10**9),
               loss=nn.functional.cross_entropy, head=1),
    )  # fmt: skip
    cfg = DualLossConfig(
        problem="benchmark",
        seed=0,
        data_seed=0,
        device="cpu",
        epochs=args.epochs,
        batch_size=args.batch_size,
        eval_batch_size=256,
        data={"num_workers": args.workers, "steps_per_epoch": args.steps},
    )
    peak, done = [0.0, 0.0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            rss, pss = _tree_memory_mb(os.getpid())
            peak[0], peak[1] = max(peak[0], rss), max(peak[1], pss)
            time.sleep(0.05)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    start = time.perf_counter()
    metrics = dual_loss.train(cfg, None, problem=problem)
    elapsed = time.perf_counter() - start
    done.set()
    watcher.join()
    settings = {k: getattr(args, k) for k in ("samples", "steps", "epochs", "batch_size", "workers")}
    results = {
        "materialised_gb": 2 * args.samples * 4 * SHAPE[0] * SHAPE[1] * SHAPE[2] / 1e9,
        "peak_pss_mib": peak[1],
        "peak_rss_sum_mib": peak[0],
        "process_peak_mib": metrics["peak_memory_mb"],
        "ms_per_step": 1000 * elapsed / (args.epochs * args.steps),
        "val_total_loss": metrics["val_total_loss"],
    }
    print("| measure | value |")
    print("|---|---|")
    for measure, value in memory_table(results, settings):
        print(f"| {measure} | {value} |")
    if args.save:
        save(args.save, "memory_bounded", argv, settings, results, elapsed)


if __name__ == "__main__":
    main()
