"""The harness of ``benchmarks.overhead``: the sweep studies, each side run as a whole process in a fresh
folder (wall time, peak RSS), the replay's values checked against the study's, and the runs alternated repeat
by repeat."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "studies" / "quickstart.yaml"
STORAGE = ".sweep/optuna.db"  # sweep's default storage, relative to the run's folder

LONG_HIDDEN = 1024  # digits_pair hidden size whose 12-epoch trial trains in ~5 s on the 2-core machine
LONG_TRIALS = 4
LONG_EPOCHS = 400
LOOP_EPOCHS = 100  # the loop row: epochs of the in-process comparison (~1.6 s a side on the 2-core machine)


@dataclass
class Run:
    """One timed process.

    Attributes:
        wall: Seconds from start to exit.
        rss_mib: Its peak resident set (MiB), from ``os.wait4``.
        trials: Trials it ran (finished ones, for sweep).
        epochs: Epochs it trained, over all trials.
        train_s: Hand-written only: seconds inside its training loops.
        max_abs_diff: Hand-written only: the largest |replayed − recorded| per-epoch value.
        identical: Hand-written only: ``[bit-identical values, values compared]``.
        failed: Sweep only: failed trials (not replayed: a failure's partial epoch cannot be).
        loop: The loop process only: what :func:`loop_main` wrote.
    """

    wall: float
    rss_mib: float
    trials: int = 0
    epochs: int = 0
    failed: int = 0
    train_s: float | None = None
    max_abs_diff: float | None = None
    identical: tuple[int, int] | None = None
    loop: dict[str, Any] | None = None


@dataclass(frozen=True)
class Study:
    """A sweep run: the quickstart file with some keys changed, and extra command-line options."""

    key: str
    label: str
    changes: dict[str, Any] = field(default_factory=dict)  # dotted path → value ("study.n_trials": 4)
    cli: tuple[str, ...] = ()


def environment() -> dict[str, str]:
    """The subprocesses' environment: the project importable, MLflow's telemetry off."""
    path = os.environ.get("PYTHONPATH")
    return {
        **os.environ,
        "PYTHONPATH": f"{ROOT}{os.pathsep}{path}" if path else str(ROOT),
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }


def timed(args: Sequence[str], cwd: Path, name: str) -> Run:
    """Run ``python args`` in ``cwd`` (output to ``name``.out/.err there); its wall time and peak RSS.

    Raises:
        RuntimeError: it exited with a non-zero status (the end of its stderr attached).
    """
    with open(cwd / f"{name}.out", "wb") as out, open(cwd / f"{name}.err", "wb") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, *args], cwd=cwd, env=environment(), stdin=subprocess.DEVNULL, stdout=out, stderr=err
        )
        _, status, usage = os.wait4(proc.pid, 0)  # this process's own rusage (RUSAGE_CHILDREN would be a max so far)
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = (cwd / f"{name}.err").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{' '.join(args)} in {cwd} exited {proc.returncode}:\n{tail}")
    return Run(wall=wall, rss_mib=usage.ru_maxrss / 1024)  # KiB on Linux


def set_path(data: dict[str, Any], path: str, value: Any) -> None:
    """Set the dotted ``path`` in nested ``data`` (creating mappings on the way)."""
    *parents, last = path.split(".")
    for part in parents:
        node = data.get(part)
        if not isinstance(node, dict):
            node = data[part] = {}
        data = node
    data[last] = value


def write_study(study: Study, folder: Path) -> Path:
    """The study file of ``study`` in ``folder``: a copy of the quickstart file, or its YAML with the changes."""
    import yaml

    target = folder / "study.yaml"
    if not study.changes:
        shutil.copyfile(QUICKSTART, target)
        return target
    data = yaml.safe_load(QUICKSTART.read_text())
    for path, value in study.changes.items():
        set_path(data, path, value)
    target.write_text(f"# benchmarks.overhead: {study.label}\n" + yaml.safe_dump(data, sort_keys=False))
    return target


def recorded_trials(folder: Path) -> tuple[list[dict[str, Any]], int]:
    """The finished trials of the study in ``folder``'s sweep storage (number, config, epochs, values),
    and how many trials failed.

    Raises:
        RuntimeError: a finished trial lacks its config or has gaps in its per-epoch values.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = f"sqlite:///{folder / STORAGE}"
    (name,) = optuna.get_all_study_names(url)
    study = optuna.load_study(study_name=name, storage=url)
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    trials = []
    for t in study.get_trials(deepcopy=False, states=states):
        values = [t.intermediate_values[e] for e in sorted(t.intermediate_values)]
        if "config" not in t.user_attrs or sorted(t.intermediate_values) != list(range(len(values))):
            raise RuntimeError(f"trial {t.number} in {url} lacks its config or has gaps in its per-epoch values")
        trials.append({"number": t.number, "config": t.user_attrs["config"], "epochs": len(values), "values": values})
    return trials, len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,)))


def compare(recorded: list[dict[str, Any]], replayed: dict[str, list[float]]) -> tuple[float, int, int]:
    """``(max |replayed − recorded|, bit-identical values, values)`` over every trial's epochs.

    Raises:
        RuntimeError: a trial is missing or has another number of epochs.
    """
    worst, same, total = 0.0, 0, 0
    for trial in recorded:
        got = replayed.get(str(trial["number"]))
        if got is None or len(got) != len(trial["values"]):
            raise RuntimeError(f"trial {trial['number']}: replayed {got} for recorded {trial['values']}")
        for a, b in zip(got, trial["values"], strict=True):
            worst = max(worst, abs(a - b))
            same += a == b
            total += 1
    return worst, same, total


def run_sweep(study: Study, folder: Path) -> Run:
    """``python -m sweep.run study.yaml --no-progress`` in the fresh ``folder``; its trials counted."""
    folder.mkdir(parents=True)
    write_study(study, folder)
    run = timed(["-m", "sweep.run", "study.yaml", "--no-progress", *study.cli], folder, "sweep")
    trials, failed = recorded_trials(folder)
    run.trials, run.epochs, run.failed = len(trials), sum(t["epochs"] for t in trials), failed
    return run


def run_hand(sweep_folder: Path, folder: Path) -> Run:
    """The hand-written process replaying the trials of the sweep run in ``sweep_folder``; values compared."""
    folder.mkdir(parents=True)
    trials, _ = recorded_trials(sweep_folder)
    (folder / "trials.json").write_text(json.dumps([{k: t[k] for k in ("number", "config", "epochs")} for t in trials]))
    run = timed(["-m", "benchmarks.overhead", "hand", "trials.json", "out.json"], folder, "hand")
    out = json.loads((folder / "out.json").read_text())
    worst, same, total = compare(trials, out["values"])
    run.trials, run.epochs, run.train_s = len(trials), out["epochs"], out["train_s"]
    run.max_abs_diff, run.identical = worst, (same, total)
    return run


def run_loop(sweep_folder: Path, folder: Path, epochs: int) -> Run:
    """The loop process on the first trial of the sweep run in ``sweep_folder``."""
    folder.mkdir(parents=True)
    trials, _ = recorded_trials(sweep_folder)
    (folder / "trials.json").write_text(json.dumps([{"config": t["config"]} for t in trials[:1]]))
    run = timed(["-m", "benchmarks.overhead", "loop", "trials.json", "out.json", str(epochs)], folder, "loop")
    run.loop = json.loads((folder / "out.json").read_text())
    return run


def run_peer(n_trials: int, epochs: int, folder: Path) -> Run:
    """The peer process (plain Optuna + MLflow) in the fresh ``folder``."""
    folder.mkdir(parents=True)
    args = ["-m", "benchmarks.overhead", "peer", "--n-trials", str(n_trials), "--epochs", str(epochs), "out.json"]
    run = timed(args, folder, "peer")
    out = json.loads((folder / "out.json").read_text())
    run.trials, run.epochs = out["trials"], out["epochs"]
    return run


def studies(quick: bool) -> dict[str, Study]:
    """The sweep runs the rows need, by key (``--quick``: tiny sizes)."""
    trials, epochs = (3, 2) if quick else (30, 12)
    hidden, long_epochs = (64, 6) if quick else (LONG_HIDDEN, LONG_EPOCHS)
    long_trials = 2 if quick else LONG_TRIALS
    qs = {"study.n_trials": trials, "objective.epochs": epochs} if quick else {}
    digits = "objective.problem"
    # --workers on trials longer than start-up: twice the long-model trials, so each process gets several.
    long_model = {
        **qs,
        "study.n_trials": 2 * long_trials,
        digits: {"name": "digits_pair", "options": {"hidden": hidden}},
    }
    return {
        "qs": Study("qs", f"quickstart ({trials} trials, {epochs} epochs)", qs),
        "lm": Study(
            "lm",
            f"digits_pair hidden {hidden}, {long_trials} trials",
            {**qs, "study.n_trials": long_trials, digits: {"name": "digits_pair", "options": {"hidden": hidden}}},
        ),
        "le": Study(
            "le",
            f"{long_epochs} epochs, {long_trials} trials",
            {**qs, "study.n_trials": long_trials, "objective.epochs": long_epochs},
        ),
        "se": Study("se", f"{epochs} epochs, {long_trials} trials", {**qs, "study.n_trials": long_trials}),
        "ot": Study("ot", "--n-trials 1", qs, ("--n-trials", "1")),
        "w2": Study("w2", "quickstart --workers 2", qs, ("--workers", "2")),
        "wl": Study("wl", f"digits_pair hidden {hidden}, {2 * long_trials} trials", long_model),
        "wl2": Study(
            "wl2", f"digits_pair hidden {hidden}, {2 * long_trials} trials, --workers 2", long_model, ("--workers", "2")
        ),
    }


# Row name → the runs it needs: "<study key>" (sweep), "<study key>/hand", "peer".
ROWS: dict[str, tuple[str, ...]] = {
    "quickstart": ("qs", "qs/hand"),
    "peer": ("qs", "peer"),
    "long_model": ("lm", "lm/hand"),
    "long_epochs": ("le", "le/hand"),
    "per_trial": ("qs", "qs/hand"),
    "per_epoch": ("le", "le/hand", "se", "se/hand"),
    "loop": ("qs", "loop"),
    "one_trial": ("ot", "ot/hand"),
    "rss": ("qs", "qs/hand", "peer"),
    "workers": ("qs", "w2"),
    "workers_long": ("wl", "wl2"),
}
ORDER = (
    *("qs", "qs/hand", "loop", "peer", "lm", "lm/hand", "le", "le/hand"),
    *("se", "se/hand", "ot", "ot/hand", "w2", "wl", "wl2"),
)


def measure(rows: Sequence[str], repeats: int, quick: bool, root: Path) -> dict[str, list[Run]]:
    """Every run the ``rows`` need, ``repeats`` times, alternating (one of each per repeat, in ``ORDER``)."""
    needed = {key for row in rows for key in ROWS[row]}
    keys = [k for k in ORDER if k in needed]
    specs = studies(quick)
    qs_trials, qs_epochs = (
        specs["qs"].changes.get("study.n_trials", 30),
        specs["qs"].changes.get("objective.epochs", 12),
    )
    runs: dict[str, list[Run]] = {k: [] for k in keys}
    # Warm-up, not counted: the first process after a while pays for reading torch, optuna, mlflow (and
    # compiled bytecode) from disk; that would fall on whichever run comes first.
    print("warm-up (not counted): a one-trial sweep run and its replay ...", end="", file=sys.stderr, flush=True)
    warm = Study("warm", "warm-up", {"study.n_trials": 1, "objective.epochs": 2})
    run_sweep(warm, root / "warm-up" / "warm")
    run_hand(root / "warm-up" / "warm", root / "warm-up" / "hand")
    print(" done", file=sys.stderr, flush=True)
    for r in range(repeats):
        for key in keys:
            folder = root / f"r{r}" / key.replace("/", "-")
            label = {"peer": "peer (plain Optuna + MLflow)", "loop": "the loop in process"}.get(key, "")
            label = label or specs[key.split("/")[0]].label
            what = "hand-written" if key.endswith("/hand") else ("sweep" if key not in ("peer", "loop") else key)
            print(f"[repeat {r + 1}/{repeats}] {what}: {label} ...", end="", file=sys.stderr, flush=True)
            if key == "peer":
                run = run_peer(qs_trials, qs_epochs, folder)
            elif key.endswith("/hand"):
                run = run_hand(root / f"r{r}" / key.split("/")[0], folder)
            elif key == "loop":
                run = run_loop(root / f"r{r}" / "qs", folder, 4 if quick else LOOP_EPOCHS)
            else:
                run = run_sweep(specs[key], folder)
            runs[key].append(run)
            check = f", {run.identical[0]}/{run.identical[1]} values bit-identical" if run.identical else ""
            check += f", {run.failed} failed" if run.failed else ""
            print(f" {run.wall:.1f} s, {run.trials} trials, {run.epochs} epochs{check}", file=sys.stderr, flush=True)
    return runs
