"""The command line of ``benchmarks.overhead`` (the package's docstring describes it), and the entry of its
timed processes: ``hand TRIALS.json OUT.json``, ``loop TRIALS.json OUT.json EPOCHS``, ``peer --n-trials N
--epochs E OUT.json``."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from benchmarks.overhead.contenders import hand_main, loop_main, peer_main
from benchmarks.overhead.harness import ROWS, measure
from benchmarks.overhead.table import markdown, table
from benchmarks.results import save

DESCRIPTION = (
    "What sweep costs around the training: whole processes, sweep against hand-written PyTorch and plain Optuna + "
    "MLflow."
)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["hand"]:  # the hand-written process: hand TRIALS.json OUT.json
        hand_main(Path(argv[1]), Path(argv[2]))
        return
    if argv[:1] == ["loop"]:  # the loop process: loop TRIALS.json OUT.json EPOCHS
        loop_main(Path(argv[1]), Path(argv[2]), int(argv[3]))
        return
    if argv[:1] == ["peer"]:  # the peer process: peer --n-trials N --epochs E OUT.json
        p = argparse.ArgumentParser(prog="python -m benchmarks.overhead peer")
        p.add_argument("--n-trials", type=int, required=True)
        p.add_argument("--epochs", type=int, required=True)
        p.add_argument("out", type=Path)
        a = p.parse_args(argv[1:])
        peer_main(a.n_trials, a.epochs, a.out)
        return
    p = argparse.ArgumentParser(prog="python -m benchmarks.overhead", description=DESCRIPTION)
    p.add_argument("--repeats", type=int, default=3, help="runs of each process (default 3)")
    p.add_argument("--only", help=f"comma-separated rows, of: {', '.join(ROWS)} (default: all)")
    p.add_argument("--quick", action="store_true", help="tiny studies: checks the harness in a minute or two")
    p.add_argument("--json", type=Path, help="also write the table, notes and every run's figures here")
    p.add_argument("--save", type=Path, help="also save it with the command, machine and date, for benchmarks.docs")
    p.add_argument("--keep", action="store_true", help="keep the runs' folders (their path is printed)")
    args = p.parse_args(argv)
    rows = [r.strip() for r in args.only.split(",")] if args.only else list(ROWS)
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        p.error(f"unknown row(s) {', '.join(unknown)}; choose from {', '.join(ROWS)}")
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    root = Path(tempfile.mkdtemp(prefix="sweep-overhead-"))
    try:
        # The first study a machine runs makes the migrated MLflow database every later new store is
        # copied from (sweep.tracking.mlflowdb, once per MLflow version); every timed run below is a later one.
        from sweep.tracking.mlflowdb import seed_mlflow_db

        seed_mlflow_db(f"sqlite:///{root / 'template' / 'mlflow.db'}")
        started = time.perf_counter()
        runs = measure(rows, args.repeats, args.quick, root)
        elapsed = time.perf_counter() - started
    finally:
        if args.keep:
            print(f"runs kept in {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    body, notes = table(runs, rows, args.quick)
    header = (
        f"sweep overhead ({'quick, ' if args.quick else ''}{args.repeats} repeats alternated, median (min–max); "
        f"{os.cpu_count()} CPUs; benchmark took {elapsed / 60:.1f} min)"
    )
    print(markdown(body, notes, header))
    if args.json:
        record = {"rows": body, "notes": notes, "runs": {k: [asdict(r) for r in v] for k, v in runs.items()}}
        args.json.write_text(json.dumps(record, indent=1))
    if args.save:
        settings = {"repeats": args.repeats, "rows": rows, "quick": args.quick}
        results = {"rows": body, "notes": notes, "runs": {k: [asdict(r) for r in v] for k, v in runs.items()}}
        save(args.save, "overhead", argv, settings, results, elapsed)
