"""Vectorized trials: the same trials sequentially and in groups of K, trials per hour and the ratio.

Run: python -m benchmarks.parallel_trials [--device cpu|cuda] [--trials 64] [--sequential 16] [--ks 4,16,64]
     [--problems digits_pair,linear_pair] [--study] [--epochs-study 6,30 [--repeats 2]] [--json PATH] [--save PATH]

For each problem, ``--trials`` configurations (loss weights, learning rate, momentum and seed drawn from a
seeded RNG; the quickstart's model, batch size and 12 epochs; SGD with momentum) are trained:

- **sequentially**: the first ``--sequential`` of them, one :func:`objectives.dual_loss.train` each (the
  path of ``parallel_trials: 1``), timed per trial;
- **in groups of K**: all of them, ``trials / K`` calls of :func:`objectives.loops.train_group`.

It reports trials per hour of each and the ratio grouped / sequential, and checks the members' final
validation losses against the sequential runs of the same configs (median and max relative difference:
float32 round-off, which an unstable config amplifies over its training; in float64 they are equal). The
loop alone: no Optuna or MLflow on either side. ``--study`` adds whole runs of the
quickstart study (``python -m sweep.run``, fresh folders) with ``--parallel-trials 1`` and ``16``: that
ratio includes start-up and each trial's records, which vectorizing does not shrink. ``--epochs-study 6,30``
times issue #28's study instead (32 digits_pair trials, random sampler, no pruner: every trial trains all its
epochs) with ``--parallel-trials 1`` and ``16`` back to back, ``--repeats`` pairs per epoch count, wall and CPU
seconds (``--problems ''`` skips the loop-only figures). One torch thread on
CPU (as ``sweep.run`` uses by default). Timings depend on the machine and its load: compare ratios.
``--save benchmarks/results/parallel_trials.json`` keeps the figures with the command, machine and date for
``python -m benchmarks.docs`` (docs/performance.md).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.results import save
from objectives.config import DualLossConfig
from objectives.dual_loss import train
from objectives.loops import train_group
from objectives.problems import Problem, build_problem

ROOT = Path(__file__).resolve().parents[1]
OPTIONS: dict[str, dict[str, Any]] = {"digits_pair": {}, "linear_pair": {}}


def configs(name: str, n: int, device: str) -> list[DualLossConfig]:
    """``n`` quickstart-like configs of ``name`` differing in weights, lr, momentum and seed."""
    rng = random.Random(0)
    out = []
    for i in range(n):
        w_a = 10 ** rng.uniform(-3, 3)
        out.append(
            DualLossConfig(
                problem={"name": name, "options": OPTIONS[name]},
                seed=1000 + i,
                data_seed=0,
                device=device,
                epochs=12,
                batch_size=64,
                mixing="cycle",
                weights=(w_a / (1 + w_a), 1 / (1 + w_a)),
                optimizer={"type": "sgd", "lr": 10 ** rng.uniform(-2, -0.6), "momentum": rng.uniform(0.5, 0.95)},
            )
        )
    return out


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure(name: str, device: str, n: int, n_seq: int, ks: list[int]) -> dict[str, Any]:
    problem = build_problem(name, OPTIONS[name], 0, "dual_loss", Problem).to(device)
    cfgs = configs(name, n, device)
    train(cfgs[0].model_copy(update={"epochs": 1}), problem=problem)  # warm-up (allocator, kernels), not counted
    train_group(cfgs[:2], [None, None], problem=problem)
    sync(device)
    start = time.perf_counter()
    sequential = [train(c, problem=problem) for c in cfgs[:n_seq]]
    sync(device)
    per_trial = (time.perf_counter() - start) / n_seq
    row: dict[str, Any] = {"problem": name, "device": device, "sequential_s_per_trial": per_trial, "groups": []}
    for k in ks:
        start = time.perf_counter()
        results: list[Any] = []
        for first in range(0, n, k):
            results += train_group(cfgs[first : first + k], [None] * len(cfgs[first : first + k]), problem=problem)
        sync(device)
        grouped = (time.perf_counter() - start) / n
        diffs = sorted(
            abs(r["val_total_loss"] - s["val_total_loss"]) / max(abs(s["val_total_loss"]), 1e-12)
            for r, s in zip(results[:n_seq], sequential, strict=True)
            if isinstance(r, dict) and r
        )
        worst, median = diffs[-1], statistics.median(diffs)
        row["groups"].append(
            {
                "k": k,
                "s_per_trial": grouped,
                "ratio": per_trial / grouped,
                "max_rel_diff": worst,
                "median_rel_diff": median,
            }
        )
        print(
            f"  {name} K={k}: {3600 / grouped:,.0f} trials/h vs {3600 / per_trial:,.0f} sequential: "
            f"{per_trial / grouped:.2f}x (rel diff of val_total_loss: median {median:.2g}, max {worst:.2g})",
            file=sys.stderr,
            flush=True,
        )
    return row


def study_runs(k_values: tuple[int, ...] = (1, 16)) -> dict[int, float]:
    """Whole ``sweep.run`` processes of the quickstart study, fresh folders, by ``--parallel-trials``."""
    walls = {}
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_DISABLE_TELEMETRY": "true"}
    for k in k_values:
        folder = Path(tempfile.mkdtemp(prefix=f"pt{k}-"))
        start = time.perf_counter()
        args = [sys.executable, "-m", "sweep.run", str(ROOT / "studies" / "quickstart.yaml"), "--no-progress"]
        subprocess.run([*args, "--parallel-trials", str(k)], cwd=folder, env=env, check=True, capture_output=True)
        walls[k] = time.perf_counter() - start
        shutil.rmtree(folder, ignore_errors=True)
        print(f"  quickstart study, --parallel-trials {k}: {walls[k]:.1f} s", file=sys.stderr, flush=True)
    return walls


def epochs_study(epochs: int, trials: int = 32) -> dict[str, Any]:
    """Issue #28's study: the quickstart's digits_pair search, ``trials`` trials of ``epochs`` epochs, a random
    sampler and no pruner (every trial trains all its epochs, whatever the group size)."""
    import yaml

    doc = yaml.safe_load((ROOT / "studies" / "quickstart.yaml").read_text())
    doc["study"].update(name=f"pt{epochs}", n_trials=trials, sampler="random", pruner="none")
    doc["objective"]["epochs"] = epochs
    return doc


def epochs_runs(epochs: list[int], repeats: int, k_values: tuple[int, ...] = (1, 16)) -> list[dict[str, Any]]:
    """Whole ``sweep.run`` processes of :func:`epochs_study` per epoch count, ``--parallel-trials`` 1 and 16 back
    to back, ``repeats`` times (wall and CPU seconds of the process; a loaded machine moves the wall time more)."""
    import yaml

    rows = []
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_DISABLE_TELEMETRY": "true"}
    for n in epochs:
        for repeat in range(repeats):
            row: dict[str, Any] = {"epochs": n, "repeat": repeat}
            for k in k_values:
                folder = Path(tempfile.mkdtemp(prefix=f"pt{n}-{k}-"))
                (folder / "s.yaml").write_text(yaml.safe_dump(epochs_study(n)))
                args = [sys.executable, "-m", "sweep.run", "s.yaml", "--no-progress", "--parallel-trials", str(k)]
                before, start = os.times(), time.perf_counter()
                subprocess.run(args, cwd=folder, env=env, check=True, capture_output=True)
                after = os.times()
                row[f"wall_{k}"] = time.perf_counter() - start
                row[f"cpu_{k}"] = (
                    after.children_user + after.children_system - before.children_user - before.children_system
                )
                shutil.rmtree(folder, ignore_errors=True)
            row["ratio_wall"] = row[f"wall_{k_values[0]}"] / row[f"wall_{k_values[-1]}"]
            row["ratio_cpu"] = row[f"cpu_{k_values[0]}"] / row[f"cpu_{k_values[-1]}"]
            print(
                f"  {n} epochs: --parallel-trials {k_values[0]} {row[f'wall_{k_values[0]}']:.1f} s, {k_values[-1]} "
                f"{row[f'wall_{k_values[-1]}']:.1f} s: {row['ratio_wall']:.2f}x (CPU {row['ratio_cpu']:.2f}x)",
                file=sys.stderr,
                flush=True,
            )
            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(prog="python -m benchmarks.parallel_trials", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda")
    p.add_argument("--trials", type=int, default=64, help="configs trained in groups (default 64)")
    p.add_argument("--sequential", type=int, default=16, help="of them, trained one by one too (default 16)")
    p.add_argument("--ks", default="4,16,64", help="group sizes (default 4,16,64)")
    p.add_argument("--problems", default="digits_pair,linear_pair", help="built-in problems (default both)")
    p.add_argument("--study", action="store_true", help="also time the quickstart study with --parallel-trials 1, 16")
    p.add_argument(
        "--epochs-study",
        default="",
        help="also time issue #28's study (32 digits_pair trials, random sampler, no pruner) at these epoch "
        "counts, e.g. 6,30: --parallel-trials 1 and 16 back to back",
    )
    p.add_argument("--repeats", type=int, default=2, help="pairs per epoch count of --epochs-study (default 2)")
    p.add_argument("--json", type=Path, help="write the figures as JSON here")
    p.add_argument("--save", type=Path, help="also save them with the command, machine and date (benchmarks.docs)")
    args = p.parse_args(argv)
    started = time.perf_counter()
    if args.device == "cpu":
        torch.set_num_threads(1)
    ks = [int(k) for k in args.ks.split(",")]
    rows = [measure(name, args.device, args.trials, args.sequential, ks) for name in args.problems.split(",") if name]
    walls = study_runs() if args.study else {}
    by_epochs = epochs_runs([int(e) for e in args.epochs_study.split(",")], args.repeats) if args.epochs_study else []
    print(f"\nvectorized trials on {args.device} ({os.cpu_count()} CPUs), 12-epoch quickstart-like trials\n")
    print("| problem | K | trials/h grouped | trials/h sequential | ratio | rel diff of val_total_loss, median / max |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        for g in row["groups"]:
            print(
                f"| {row['problem']} | {g['k']} | {3600 / g['s_per_trial']:,.0f} | "
                f"{3600 / row['sequential_s_per_trial']:,.0f} | {g['ratio']:.2f}x | "
                f"{g['median_rel_diff']:.1e} / {g['max_rel_diff']:.1e} |"
            )
    if walls:
        print(
            f"\nquickstart study (30 trials, whole process): --parallel-trials 1 {walls[1]:.1f} s, 16 {walls[16]:.1f} s"
        )
    for r in by_epochs:
        print(
            f"32-trial digits_pair study, {r['epochs']} epochs: --parallel-trials 1 {r['wall_1']:.1f} s "
            f"(CPU {r['cpu_1']:.1f} s), 16 {r['wall_16']:.1f} s (CPU {r['cpu_16']:.1f} s): {r['ratio_wall']:.2f}x"
        )
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "study": walls, "epochs_study": by_epochs}, indent=2))
    if args.save:
        settings = {
            "device": args.device,
            "trials": args.trials,
            "sequential": args.sequential,
            "ks": ks,
            "problems": args.problems.split(","),
            "study": args.study,
        }
        results: dict[str, Any] = {"rows": rows, "study": {str(k): v for k, v in walls.items()}}
        if by_epochs:
            settings.update(epochs_study=[r["epochs"] for r in by_epochs[:: args.repeats]], repeats=args.repeats)
            results["epochs_study"] = by_epochs
        save(args.save, "parallel_trials", argv, settings, results, time.perf_counter() - started, args.device)


if __name__ == "__main__":
    main()
