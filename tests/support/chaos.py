"""A chaos run: several machines on one PostgreSQL study, SIGKILLs at random instants of trials (each killed
machine's job restarted, as a cluster scheduler would), one storage outage; then the study must be whole.

    python -m tests.support.chaos --trials 24 --processes 4 --kills 6 --outage 10  # docs/explanation/faults.md

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

from tests.conftest import ROOT, tiny_study, write_yaml
from tests.support.agreement import check_agreement
from tests.support.pausing import Pauses
from tests.support.pgtools import database, outage, pg, pg_study, until_refused


def _start(path: Path, folder: Path, pauses: dict[str, str]) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_DISABLE_TELEMETRY": "true", **pauses}
    command = [sys.executable, "-m", "sweep.run", str(path), "--no-report", "--no-progress"]
    return subprocess.Popen(command, cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


# Where a kill may land: each is before the trial's end is told, so the killed trial is re-queued, and its
# retry passes every point again. That makes the harness exact at any machine speed: a point armed while
# the previous victim is still paused is reached, at the latest, by that victim's retry.
KILL_POINTS = ("asked", "beat", "run_created", "linked", "epoch:1", "epoch:3")
OUTAGE_POINT = "epoch:5"  # a process held here when the outage begins, released into it


def chaos(folder: Path, trials: int, processes: int, kills: int, outage_s: float, seed: int = 0) -> dict[str, object]:
    """Run the chaos scenario in ``folder``; assert the study ended whole; return its figures.

    Exactly ``kills`` SIGKILLs land, each at a random named instant of a trial (whichever process gets
    there first), and the outage begins while a process is inside a trial: the scenario follows the
    processes' own progress (:mod:`sweep.core.faultpoints`), not the clock."""
    rng = random.Random(seed)
    pauses = Pauses(folder / "pauses", *KILL_POINTS, OUTAGE_POINT, armed=False)
    with database() as db:
        url = pg(db)
        study_cfg = {
            "n_trials": trials,
            "storage": url,
            "heartbeat_interval": 1,
            "grace_period": 4,
            "storage_retry": 60,
            "max_retry": kills + 2,  # a trial and its retries may all be victims
            "pruner": "none",
        }
        doc = tiny_study("chaos", study=study_cfg)
        doc["objective"]["epochs"] = 8
        path = write_yaml(folder / "chaos.yaml", doc)
        env = pauses.env()
        start = time.monotonic()
        point = rng.choice(KILL_POINTS)
        pauses.arm(point)
        procs = [_start(path, folder, env) for _ in range(processes)]
        killed_at: list[float] = []
        for k in range(kills):
            victim = pauses.wait(point, procs)
            if k + 1 < kills:  # armed before this victim dies: its retry is still to come
                point = rng.choice(KILL_POINTS)
                pauses.arm(point)
            elif outage_s:
                pauses.arm(OUTAGE_POINT)
            os.kill(victim, signal.SIGKILL)
            (index,) = [i for i, p in enumerate(procs) if p.pid == victim]
            procs[index].wait()
            killed_at.append(time.time())
            procs[index] = _start(path, folder, env)  # the scheduler restarts the job
        outage_thread = None
        if outage_s:
            pauses.wait(OUTAGE_POINT, procs)
            outage_thread = threading.Thread(target=outage, args=(db, outage_s))
            outage_thread.start()
            until_refused(url)
            pauses.release(OUTAGE_POINT, procs=procs)
        refused = 0  # processes (re)started during the outage: refused at once, restarted by the "scheduler"
        errors: list[str] = []
        while any(p.poll() is None for p in procs):
            time.sleep(0.2)
            for i, p in enumerate(procs):
                if p.poll() not in (None, 0) and not p.stderr.closed:
                    _, err = p.communicate()
                    if "cannot open Optuna storage" not in err or err.count("\n") != 1:  # not one line: a fault
                        errors.append(f"rc {p.returncode}: {err[-2000:]}")
                        continue
                    refused += 1
                    procs[i] = _start(path, folder, env)
        for p in procs:
            if p.stderr.closed:
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
