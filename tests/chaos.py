"""A chaos run: several machines on one PostgreSQL study, random SIGKILLs at random instants (each killed
machine's job restarted, as a cluster scheduler would), one storage outage; then the study must be whole.

    python -m tests.chaos --trials 24 --processes 4 --kills 6 --outage 10   # the figures in README *Faults*

``tests/test_cluster_faults.py`` runs a small one in the suite. Needs the local PostgreSQL.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import optuna

from tests.agreement import check_agreement
from tests.conftest import ROOT, tiny_study, write_yaml
from tests.pgtools import database, outage, pg, pg_study


def _start(path: Path, folder: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_DISABLE_TELEMETRY": "true"}
    command = [sys.executable, "-m", "sweep.run", str(path), "--no-report", "--no-progress"]
    return subprocess.Popen(command, cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _finished(url: str, n: int) -> bool:
    try:
        study = pg_study("chaos", url)
    except KeyError:
        return False
    return sum(t.state.is_finished() for t in study.get_trials(deepcopy=False)) >= n


def chaos(folder: Path, trials: int, processes: int, kills: int, outage_s: float, seed: int = 0) -> dict[str, object]:
    """Run the chaos scenario in ``folder``; assert the study ended whole; return its figures."""
    rng = random.Random(seed)
    with database() as db:
        url = pg(db)
        study_cfg = {
            "n_trials": trials,
            "storage": url,
            "heartbeat_interval": 1,
            "grace_period": 4,
            "storage_retry": 60,
            "max_retry": 5,
            "pruner": "none",
        }
        doc = tiny_study("chaos", study=study_cfg)
        doc["objective"]["epochs"] = 150  # trials long enough that kills land inside them
        path = write_yaml(folder / "chaos.yaml", doc)
        start = time.monotonic()
        procs = [_start(path, folder) for _ in range(processes)]
        born = {id(p): time.monotonic() for p in procs}
        killed_at: list[float] = []
        outage_thread = None
        errors: list[str] = []
        while not _finished(url, 1) and any(p.poll() is None for p in procs):
            time.sleep(0.5)  # kills start once trials run (before that they only hit start-up)
        refused = 0  # processes (re)started during the outage: refused at once, restarted by the "scheduler"
        while any(p.poll() is None for p in procs):
            time.sleep(rng.uniform(2.0, 6.0))
            for i, p in enumerate(procs):
                if p.poll() not in (None, 0) and outage_thread is not None and not p.stderr.closed:
                    _, err = p.communicate()
                    if "cannot open Optuna storage" not in err or err.count("\n") != 1:  # not one line: a fault
                        errors.append(f"rc {p.returncode}: {err[-2000:]}")
                        continue
                    refused += 1
                    procs[i] = _start(path, folder)
                    born[id(procs[i])] = time.monotonic()
            live = [p for p in procs if p.poll() is None]
            if not live:
                break
            if len(killed_at) < kills:
                # A random process, preferring one past its start-up (likely inside a trial).
                settled = [p for p in live if time.monotonic() - born[id(p)] > 20] or live
                victim = rng.choice(settled)
                victim.send_signal(signal.SIGKILL)
                victim.wait()
                killed_at.append(time.time())
                fresh = _start(path, folder)  # the scheduler restarts the job
                born[id(fresh)] = time.monotonic()
                procs[procs.index(victim)] = fresh
            elif outage_thread is None and outage_s:
                outage_thread = threading.Thread(target=outage, args=(db, outage_s))
                outage_thread.start()
        for p in procs:
            if p.stderr is None or p.stderr.closed:
                continue  # read above
            _, err = p.communicate()
            if p.returncode != 0:
                errors.append(f"rc {p.returncode}: {err[-2000:]}")
        if outage_thread is not None:
            outage_thread.join()
        wall = time.monotonic() - start
        assert not errors, errors
        study = pg_study("chaos", url)
        counts = check_agreement(study, f"sqlite:///{folder / 'mlflow.db'}", trials)
        failed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
        # Time to recover: from a kill to the failing of the trial it left (heartbeat older than grace).
        recover = []
        for t in failed:
            done = t.datetime_complete.timestamp() if t.datetime_complete else None
            before = [k for k in killed_at if done is not None and k <= done]
            if before:
                recover.append(done - max(before))
        return {
            **counts,
            "kills": len(killed_at),
            "refused_during_outage": refused,
            "outage_s": outage_s,
            "failed_trials": len(failed),
            "requeued": sum("failed_trial" in t.system_attrs for t in study.trials),
            "time_to_recover_s": [round(r, 1) for r in sorted(recover)],
            "wall_s": round(wall, 1),
        }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=24)
    p.add_argument("--processes", type=int, default=4)
    p.add_argument("--kills", type=int, default=6)
    p.add_argument("--outage", type=float, default=10.0)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        figures = chaos(Path(tmp), args.trials, args.processes, args.kills, args.outage, args.seed)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
