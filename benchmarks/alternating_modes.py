"""What the alternating loop's mode, schedule and weights do on ``digits_codes`` (docs/explanation/loops.md table).

Run: python -m benchmarks.alternating_modes [--seeds 3] [--epochs 20]

Trains each setting with several seeds at the alternating study's defaults (Adam, lr 0.01 for both
models, batch 32, 300 training images, code of 6) and prints the mean validation losses and accuracy.
"""

from __future__ import annotations

import argparse
import time

import torch

from objectives import alternating
from objectives.config import AlternatingConfig
from objectives.problems import CoupledProblem, build_problem

SETTINGS: list[tuple[str, dict]] = [
    ("alternate 1:1", {"mode": "alternate"}),
    ("alternate 3:1 (A:B)", {"mode": "alternate", "steps_a": 3}),
    ("alternate 1:3 (A:B)", {"mode": "alternate", "steps_b": 3}),
    ("b_on_detached", {"mode": "b_on_detached"}),
    ("joint", {"mode": "joint"}),
    ("joint, B's loss only (w_a = 0.01)", {"mode": "joint", "weights": (0.01, 0.99)}),
    ("joint, A's loss heavy (w_a = 0.9)", {"mode": "joint", "weights": (0.9, 0.1)}),
    ("joint + consistency (0.3, 0.5, 0.2)", {"mode": "joint", "weights": (0.3, 0.5, 0.2)}),
]


def run(problem: CoupledProblem, overrides: dict, seeds: int, epochs: int) -> tuple[float, ...]:
    rows = []
    for seed in range(seeds):
        cfg = AlternatingConfig(
            problem={"name": "digits_codes", "options": {"n_train": 300, "code_dim": 6}},
            seed=seed,
            data_seed=0,
            device="cpu",
            epochs=epochs,
            batch_size=32,
            model_a={"optimizer": {"lr": 0.01}},
            model_b={"optimizer": {"lr": 0.01}},
            **overrides,
        )
        m = alternating.train(cfg, None, problem=problem)
        rows.append((m["val_a_loss"], m["val_b_loss"], m["val_b_acc"]))
    return tuple(sum(r[i] for r in rows) / seeds for i in range(3))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=20)
    args = p.parse_args()
    torch.set_num_threads(1)
    problem = build_problem("digits_codes", {"n_train": 300, "code_dim": 6}, 0, "alternating")
    assert isinstance(problem, CoupledProblem)
    print(f"| setting | val_a_loss | val_b_loss | val_b_acc |   ({args.seeds} seeds, {args.epochs} epochs)")
    print("|---|---|---|---|")
    start = time.perf_counter()
    for name, overrides in SETTINGS:
        a, b, acc = run(problem, overrides, args.seeds, args.epochs)
        print(f"| {name} | {a:.3f} | {b:.3f} | {acc:.3f} |")
    print(f"({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
