"""Every weighting method of a comparison study, quality and cost in one table: the README's weighting table.

Run: python -m benchmarks.weighting_compare [STUDY_FILE] [--save benchmarks/results/weighting_compare.json]
[--n-trials N] [--seeds S] [--repeats R]

1. Quality. In a scratch folder, as a user would (the repository on ``PYTHONPATH``, storage and MLflow files
   local to that folder): ``python -m sweep.run STUDY_FILE --no-evaluate --no-report [--n-trials N]`` runs the
   comparison (``study.compare: weighting.type``, the default study ``studies/weighting_compare.yaml``: one
   sub-study per method, equal budgets), then ``python -m sweep.evaluate STUDY_FILE [--seeds S]`` retrains each
   method's best trial with fresh seeds and scores it on the held-out test split. The rows are read back from
   the evaluation's per-seed CSV and the study's storage, and shown as ``sweep.evaluate`` shows them (mean ±
   95 % CI, :meth:`sweep.results.results.Evaluated.cell`).
2. Cost. In this process, on 1 torch thread: each method's chosen configuration (its best trial's resolved
   config) trains on the study's problem with each task's validation split cut to one training batch of
   samples (so validation does not dilute the figure; hypergrad's reference batches stay full-size). Timed
   from the end of the first epoch to the end of the last (model set-up and first-step costs left out), over
   ``(epochs − 1) × steps per epoch`` steps as the loop plans them (:func:`objectives.helpers.plan_epoch`);
   the median of ``--repeats`` runs, the methods interleaved, after one warm-up run. ``× static``: the ratio to
   ``static``'s median measured alongside (where static is not compared: the first method's configuration
   with ``weighting.type: static``). With ``evaluate.top`` > 1, a method's rows share its best trial's cost.

``--workdir DIR`` keeps the scratch folder (its ``evaluation/evaluation.{md,csv}`` are sweep.evaluate's own).

Prints one Markdown table; ``--save`` writes the record that ``python -m benchmarks.docs`` renders between
``<!-- begin benchmarks.weighting_compare -->`` / ``<!-- end benchmarks.weighting_compare -->`` markers.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import functools
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "studies" / "weighting_compare.yaml"
NOT_METRICS = ("study", "method", "trial", "seed", "diverged")


def run_sweep(module: str, args: list[str], cwd: Path) -> float:
    """Run ``python -m <module> <args>`` in ``cwd`` with the repository importable; its wall time (s). Its
    output goes to stderr, so that stdout holds this command's table only.

    Raises:
        SystemExit: it failed (its own message is above, on stderr).
    """
    path = [str(ROOT), str(Path.cwd()), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in path if p)}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env, stdout=sys.stderr)
    if done.returncode:
        raise SystemExit(f"python -m {module} {' '.join(args)} (in {cwd}) exited {done.returncode}")
    return time.perf_counter() - start


def read_evaluation(path: Path) -> dict[tuple[str, str, int], list[dict[str, float]]]:
    """The evaluation's per-seed CSV: ``(study, method, trial)`` → each seed's metrics (``{}``: diverged)."""
    runs: dict[tuple[str, str, int], list[dict[str, float]]] = {}
    with path.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            values = {k: float(v) for k, v in row.items() if k not in NOT_METRICS and v != ""}
            diverged = row["diverged"] == "True"
            runs.setdefault((row["study"], row["method"], int(row["trial"])), []).append({} if diverged else values)
    return runs


def head(split: Any, k: int) -> Any:
    """A split's first ``k`` samples: a slice of each tensor, a ``Subset`` of a Dataset (a stream unchanged)."""
    from torch import Tensor
    from torch.utils.data import Dataset, IterableDataset, Subset

    if isinstance(split, IterableDataset):
        return split
    if isinstance(split, Dataset):
        return Subset(split, range(min(k, len(split))))  # type: ignore[arg-type]
    if isinstance(split, Tensor):
        return split[:k]
    if isinstance(split, Mapping):
        return {key: head(value, k) for key, value in split.items()}
    if isinstance(split, tuple | list):
        return type(split)(head(value, k) for value in split)
    return split


@functools.cache
def built(name: str, options: str, data_seed: int) -> Any:
    """The problem ``name`` with its options (JSON) and data seed, built once for every configuration."""
    from objectives.problems import Problem, build_problem

    return build_problem(name, json.loads(options), data_seed, "dual_loss", Problem)


class Cost:
    """One configuration's training, set up to be timed: the resolved config, its problem with the
    validation cut short, and the number of steps the timed epochs hold."""

    def __init__(self, recorded: Mapping[str, Any], device: str) -> None:
        from objectives.data import epoch_steps, n_samples
        from objectives.helpers import plan_epoch
        from objectives.problems import Problem
        from sweep.results.evaluation import config_for

        self.cfg = config_for(recorded, int(recorded["seed"]), device)
        if self.cfg.loop != "dual_loss":
            raise SystemExit(f"loop {self.cfg.loop}: this benchmark times the dual_loss loop only")
        if self.cfg.epochs < 2:
            raise SystemExit(f"epochs {self.cfg.epochs}: the timing starts after the first epoch, give 2 or more")
        problem = built(self.cfg.problem.name, json.dumps(self.cfg.problem.options, sort_keys=True), self.cfg.data_seed)
        tasks = problem.in_order(self.cfg.tasks)
        sizes = {name: self.cfg.batch_size_of(name) for name in tasks}
        self.problem = Problem(
            problem.make_model, tasks={name: replace(t, val=head(t.val, sizes[name])) for name, t in tasks.items()}
        )
        per_pass = tuple(epoch_steps(t.train, sizes[n], self.cfg.data, t.steps_per_epoch) for n, t in tasks.items())
        train_sizes = tuple(n_samples(t.train) for t in tasks.values())
        plan = plan_epoch(train_sizes, tuple(sizes.values()), self.cfg.mixing, per_pass)
        self.steps_per_epoch = plan.steps
        self.timed_steps = (self.cfg.epochs - 1) * plan.steps

    def run(self) -> float:
        """Train once; the seconds per step from the end of the first epoch to the end of the last."""
        from objectives import dual_loss

        marks: list[float] = []
        dual_loss.train(self.cfg, lambda epoch, metrics: marks.append(time.perf_counter()), problem=self.problem)
        return (marks[-1] - marks[0]) / self.timed_steps


def measure(costs: dict[str, Cost], repeats: int) -> dict[str, float]:
    """Median seconds per step of each configuration over ``repeats`` interleaved runs, after a warm-up run."""
    times: dict[str, list[float]] = {name: [] for name in costs}
    for cost in costs.values():
        cost.run()  # warm-up: first-call costs (imports, allocator) are not the method's
    for _ in range(repeats):
        for name, cost in costs.items():
            times[name].append(cost.run())
    return {name: statistics.median(t) for name, t in times.items()}


def rows_of(study_file: Path, folder: Path, csv_path: Path, device: str) -> tuple[dict[str, Any], dict[str, Cost]]:
    """The evaluation's rows (in the order of the compared choices) and each method's :class:`Cost`, read
    from the scratch ``folder``'s storage and the evaluation CSV."""
    from sweep.core.records import Attr
    from sweep.results.results import Evaluated, counts
    from sweep.storage.storage import load_existing_study
    from sweep.studyfile.compare import members
    from sweep.studyfile.config import load_study

    sf = load_study(study_file)
    subs = members(sf)
    metrics = list(sf.study.metric)
    evaluated = read_evaluation(csv_path)
    rows, costs = [], {}
    with contextlib.chdir(folder):  # the storage's relative SQLite path is the scratch folder's
        for m in subs:
            study = load_existing_study(m.sf.study.name, m.sf.study.storage)
            for (name, _, number), runs in evaluated.items():
                if name != m.sf.study.name:
                    continue
                trial = next(t for t in study.get_trials(deepcopy=False) if t.number == number)
                item = Evaluated(name, m.label, trial, counts(study), math.nan, list(range(len(runs))), runs)
                rows.append((item, trial))
                costs.setdefault(m.label, Cost(trial.user_attrs[Attr.CONFIG], device))
    names = next((r.metric_names() for r, _ in rows if r.finite), [])
    tests = [f"test_{m.removeprefix('val_')}" for m in metrics]
    tests += [k for k in names if k.startswith("test_") and not k.endswith("_loss")]
    table_rows = [
        {
            "method": item.method,
            "study": item.study,
            "trial": trial.number,
            "trials": item.trials,
            "search": list(trial.values),
            "cells": {k: item.cell(k) for k in (*metrics, *tests)},
            "seeds": len(item.runs),
            "diverged": item.diverged,
        }
        for item, trial in rows
    ]
    return {"metrics": metrics, "tests": tests, "rows": table_rows}, costs


def static_cost(costs: dict[str, Cost], device: str) -> Cost:
    """``static``'s cost: its own chosen configuration where it is compared, else the first method's with
    ``weighting.type: static``."""
    if "static" in costs:
        return costs["static"]
    cfg = next(iter(costs.values())).cfg.model_dump()
    return Cost({**cfg, "weighting": {"type": "static"}}, device)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.weighting_compare", description=__doc__.splitlines()[0])
    p.add_argument("study_file", nargs="?", type=Path, default=STUDY, help="a comparison study (default: %(default)s)")
    p.add_argument("--save", type=Path, help="write the JSON record here (benchmarks/results/weighting_compare.json)")
    p.add_argument("--n-trials", type=int, help="trials per method (default: the study's n_trials)")
    p.add_argument("--seeds", type=int, help="fresh seeds per method (default: the study's evaluate.seeds, or 5)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs of each method's training (default 5)")
    p.add_argument("--device", default="cpu", help="device of the timed training runs (default cpu)")
    p.add_argument("--workdir", type=Path, help="run the study in this folder and keep it (default: a temp folder)")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(argv)
    import torch

    from benchmarks.docs import weighting_table
    from benchmarks.results import save
    from sweep.studyfile.compare import members
    from sweep.studyfile.config import load_study

    study_file = args.study_file.resolve()
    sf = load_study(study_file)
    if not members(sf):
        raise SystemExit(f"{study_file}: not a comparison (no study.compare): nothing to compare")
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if args.workdir:
            folder = args.workdir.resolve()
            folder.mkdir(parents=True, exist_ok=True)
        else:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="weighting_compare-")))
        run_args = [str(study_file), "--no-evaluate", "--no-report", "--no-progress"]
        run_args += ["--n-trials", str(args.n_trials)] if args.n_trials else []
        search_s = run_sweep("sweep.run", run_args, folder)
        eval_args = [str(study_file), "--no-progress", "-o", str(folder / "evaluation")]
        eval_args += ["--seeds", str(args.seeds)] if args.seeds else []
        evaluate_s = run_sweep("sweep.evaluate", eval_args, folder)
        results, costs = rows_of(study_file, folder, folder / "evaluation" / "evaluation.csv", args.device)

    torch.set_num_threads(1)
    cost_start = time.perf_counter()
    reference = "static" if "static" in costs else "static (reference)"
    s_per_step = measure({**costs, reference: static_cost(costs, args.device)}, args.repeats)
    base = s_per_step[reference]
    for row in results["rows"]:
        row["ms_per_step"] = s_per_step[row["method"]] * 1000
        row["ratio"] = s_per_step[row["method"]] / base
        row["timed_steps"] = costs[row["method"]].timed_steps
        row["steps_per_epoch"] = costs[row["method"]].steps_per_epoch
    results["wall_s"] = {
        "search": round(search_s, 1),
        "evaluate": round(evaluate_s, 1),
        "cost": round(time.perf_counter() - cost_start, 1),
    }
    print("\n".join(weighting_table(results)))
    if args.save:
        seeds = max((r["seeds"] for r in results["rows"]), default=0)
        settings = {
            "study": str(study_file.relative_to(ROOT) if study_file.is_relative_to(ROOT) else study_file),
            "n_trials": args.n_trials or sf.study.n_trials,
            "seeds": seeds,
            "repeats": args.repeats,
            "threads": 1,
            "device": args.device,
        }
        save(args.save, "weighting_compare", argv, settings, results, time.perf_counter() - start, args.device)
        print(f"saved {args.save}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
