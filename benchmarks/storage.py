"""Local storage for several workers: SQLite (RDB, busy timeout) against Optuna's JournalFileBackend.

Run: python -m benchmarks.storage [--workers 4] [--trials 50]

Each of N processes runs T trivial trials on one shared file. Prints trials per second and how many
trials finished, for each backend. Only RDB storage supports heartbeats (recovering a killed worker's
trial), which is why sweep's default is SQLite if it keeps up.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import tempfile
import time

import optuna

from sweep.execution.runner import open_storage


def _storage(kind: str, folder: str) -> optuna.storages.BaseStorage:
    if kind == "sqlite":
        return open_storage(f"sqlite:///{folder}/optuna.db")
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(f"{folder}/journal.log"))


def _work(kind: str, folder: str, trials: int) -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.load_study(study_name="bench", storage=_storage(kind, folder))
    study.optimize(lambda t: t.suggest_float("x", -1, 1) ** 2, n_trials=trials)


def measure(kind: str, workers: int, trials: int) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as folder:
        optuna.create_study(study_name="bench", storage=_storage(kind, folder))
        start = time.perf_counter()
        procs = [mp.Process(target=_work, args=(kind, folder, trials)) for _ in range(workers)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        elapsed = time.perf_counter() - start
        done = optuna.load_study(study_name="bench", storage=_storage(kind, folder)).get_trials(
            states=[optuna.trial.TrialState.COMPLETE]
        )
        return elapsed, len(done)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--trials", type=int, default=50)
    args = p.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    total = args.workers * args.trials
    print(f"| backend | {args.workers} processes × {args.trials} trials | trials/s | complete |")
    print("|---|---|---|---|")
    for kind in ("sqlite", "journal"):
        elapsed, done = measure(kind, args.workers, args.trials)
        print(f"| {kind} | {elapsed:.1f} s | {total / elapsed:.0f} | {done}/{total} |")


if __name__ == "__main__":
    main()
