"""Every weighting strategy on ``digits_pair`` with the same budget: quality and cost; its output is the table in
docs/explanation/parametrizations.md.

Run: python -m benchmarks.weighting_strategies [--seeds 3] [--epochs 12]

Each strategy trains with the quickstart's optimizer (SGD, lr 0.1, momentum 0.9, 12 epochs, batch 64)
from equal static weights (0.5, 0.5); ``static (tuned)`` uses the weights the quickstart search found
(w_a = 0.75). Time is per trial, measured in this run, and its ratio is against ``static``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from objectives import dual_loss
from objectives.config import DualLossConfig
from objectives.problems import Problem, build_problem
from objectives.weighting import STRATEGIES


def run(problem: Problem, weighting: str, weights: tuple[float, float], seeds: int, epochs: int) -> dict[str, float]:
    values, accs, times = [], [], []
    for seed in range(seeds):
        cfg = DualLossConfig(
            problem="digits_pair",
            seed=seed,
            data_seed=0,
            device="cpu",
            epochs=epochs,
            optimizer={"type": "sgd", "lr": 0.1, "momentum": 0.9},
            weighting={"type": weighting},
            weights=weights,
        )
        start = time.perf_counter()
        m = dual_loss.train(cfg, None, problem=problem)
        times.append(time.perf_counter() - start)
        values.append(m["val_total_loss"])
        accs.append(m["val_b_acc"])
    return {"value": statistics.mean(values), "sd": statistics.pstdev(values), "acc_b": statistics.mean(accs),
            "time": statistics.median(times)}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=12)
    args = p.parse_args()
    torch.set_num_threads(1)
    problem = build_problem("digits_pair", {}, 0)
    assert isinstance(problem, Problem)
    run(problem, "static", (0.5, 0.5), 1, 1)  # warm-up: first-call costs are not a strategy's
    rows = [("static (tuned w_a = 0.75)", run(problem, "static", (0.75, 0.25), args.seeds, args.epochs))]
    rows += [(name, run(problem, name, (0.5, 0.5), args.seeds, args.epochs)) for name in STRATEGIES]
    base = dict(rows)["static"]["time"]
    print(f"| strategy | val_total_loss (mean ± sd, {args.seeds} seeds) | val_b_acc | s / trial | × static |")
    print("|---|---|---|---|---|")
    for name, r in rows:
        quality = f"{r['value']:.3f} ± {r['sd']:.3f} | {r['acc_b']:.3f}"
        print(f"| {name} | {quality} | {r['time']:.2f} | {r['time'] / base:.2f} |")


if __name__ == "__main__":
    main()
