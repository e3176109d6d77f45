"""Successive halving over vectorized groups (issue #28): the same pruned study trial by trial, in groups of K
whose freed slots idle until the group ends, and in groups of K whose freed slots new trials take.

Run: python -m benchmarks.halving [--trials 32] [--k 8] [--epochs 27] [--reduction 3] [--min-resource 1]
     [--problem digits_pair] [--hidden N] [--repeats 1] [--json PATH] [--save PATH]

The study: the quickstart's search (loss weights, learning rate; SGD with momentum, batch size 64) on
``--problem`` (``--hidden``: its width), a seeded TPE sampler (8 start-up trials), Optuna's successive-halving
pruner (rungs at r, rη, rη², ... epochs: ``--min-resource`` r, ``--reduction`` η), ``--trials`` trials of
``--epochs`` epochs. Each way is one ``python -m sweep.run`` process in a fresh folder:

- **trial by trial**: ``--parallel-trials 1``;
- **groups, no refill**: ``--parallel-trials K`` with ``sweep.trials.groups.REFILL = False`` (set by this
  benchmark only): a group's pruned members leave idle rows until its last member ends, then K more are asked;
- **groups, refill**: ``--parallel-trials K`` as ``sweep.run`` runs it: each member is told as it ends and a new
  trial takes its row (sweep.trials.slots).

Reported per way: wall and CPU seconds of the process, the trials' span (first start to last end, from the
Optuna storage: without the process's start-up), the epochs trained (every trial's reported epochs,
from the Optuna storage), the trials pruned and the best value. The sampler sees the ends in another order
each way, so the trials and the best value differ: compare the wall time per epoch trained too. One torch
thread, as ``sweep.run`` uses on CPU.
``--save benchmarks/results/halving.json`` keeps the figures with the command, machine and date.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from benchmarks.results import save

ROOT = Path(__file__).resolve().parents[1]
WAYS = {"trial_by_trial": (1, True), "groups_no_refill": (0, False), "groups_refill": (0, True)}
NO_REFILL = (
    "import sys, sweep.trials.groups as g; g.REFILL = False; from sweep.run import main; sys.exit(main(sys.argv[1:]))"
)


def study(args: argparse.Namespace, k: int) -> dict[str, Any]:
    """The benchmark's study file (``k``: its ``parallel_trials``)."""
    doc = yaml.safe_load((ROOT / "studies" / "quickstart.yaml").read_text())
    doc["study"].update(
        name="halving",
        n_trials=args.trials,
        parallel_trials=k,
        sampler={"type": "tpe", "n_startup_trials": 8},
        pruner={"type": "successive_halving", "min_resource": args.min_resource, "reduction_factor": args.reduction},
    )
    options = {"hidden": args.hidden} if args.hidden else {}
    doc["objective"].update(epochs=args.epochs, problem={"name": args.problem, "options": options})
    return doc


def counted(folder: Path) -> dict[str, Any]:
    """What the finished study holds: the seconds from the first trial's start to the last one's end (training
    and records, without the process's start-up), epochs reported, trials pruned, best value."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trials = optuna.load_study(study_name="halving", storage=f"sqlite:///{folder / '.sweep' / 'optuna.db'}").trials
    complete = [t.value for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    starts = [t.datetime_start for t in trials if t.datetime_start is not None]
    ends = [t.datetime_complete for t in trials if t.datetime_complete is not None]
    return {
        "span_s": (max(ends) - min(starts)).total_seconds(),
        "trials": len(trials),
        "epochs": sum(len(t.intermediate_values) for t in trials),
        "pruned": sum(t.state == optuna.trial.TrialState.PRUNED for t in trials),
        "best": min(complete) if complete else None,
    }


def run_way(way: str, args: argparse.Namespace) -> dict[str, Any]:
    """One ``sweep.run`` process of the study, the way ``way`` (see :data:`WAYS`)."""
    k, refill = WAYS[way]
    folder = Path(tempfile.mkdtemp(prefix=f"halving-{way}-"))
    (folder / "s.yaml").write_text(yaml.safe_dump(study(args, k or args.k)))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_DISABLE_TELEMETRY": "true"}
    command = [sys.executable, "-m", "sweep.run"] if refill else [sys.executable, "-c", NO_REFILL]
    before, start = os.times(), time.perf_counter()
    subprocess.run(
        [*command, "s.yaml", "--no-progress", "--no-report"], cwd=folder, env=env, check=True, capture_output=True
    )
    after = os.times()
    row = {"way": way, "k": k or args.k, "wall_s": time.perf_counter() - start}
    row["cpu_s"] = after.children_user + after.children_system - before.children_user - before.children_system
    row.update(counted(folder))
    shutil.rmtree(folder, ignore_errors=True)
    print(
        f"  {way}: {row['wall_s']:.1f} s wall, {row['cpu_s']:.1f} s CPU, trials {row['span_s']:.1f} s, "
        f"{row['epochs']} epochs, {row['pruned']} "
        f"pruned, best {row['best']}",
        file=sys.stderr,
        flush=True,
    )
    return row


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(prog="python -m benchmarks.halving", description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=32, help="the study's n_trials (default 32)")
    p.add_argument("--k", type=int, default=8, help="parallel_trials of the grouped ways (default 8)")
    p.add_argument("--epochs", type=int, default=27, help="epochs per trial (default 27: rungs 1, 3, 9, 27)")
    p.add_argument("--reduction", type=int, default=3, help="the pruner's reduction factor η (default 3)")
    p.add_argument("--min-resource", type=int, default=1, help="the pruner's first rung, in epochs (default 1)")
    p.add_argument("--problem", default="digits_pair", help="a built-in problem (default digits_pair)")
    p.add_argument("--hidden", type=int, default=0, help="the problem's hidden width option (default: its own)")
    p.add_argument("--repeats", type=int, default=1, help="runs of each way, interleaved (default 1)")
    p.add_argument("--json", type=Path, help="write the figures as JSON here")
    p.add_argument("--save", type=Path, help="also save them with the command, machine and date")
    args = p.parse_args(argv)
    started = time.perf_counter()
    rows = [{**run_way(way, args), "repeat": r} for r in range(args.repeats) for way in WAYS]
    print(
        f"\n{args.trials} {args.problem} trials of {args.epochs} epochs, successive halving η={args.reduction} "
        f"from epoch {args.min_resource}, K={args.k}\n"
    )
    print("| way | wall s | CPU s | trials s | epochs trained | trials s per epoch | pruned | best value |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        best = "-" if r["best"] is None else f"{r['best']:.4f}"
        print(
            f"| {r['way']} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | {r['span_s']:.1f} | {r['epochs']} "
            f"| {r['span_s'] / r['epochs']:.3f} "
            f"| {r['pruned']} | {best} |"
        )
    if args.json:
        args.json.write_text(json.dumps({"rows": rows}, indent=2))
    if args.save:
        settings = {
            k: getattr(args, k)
            for k in ("trials", "k", "epochs", "reduction", "min_resource", "problem", "hidden", "repeats")
        }
        save(args.save, "halving", argv, settings, {"rows": rows}, time.perf_counter() - started, "cpu")


if __name__ == "__main__":
    main()
