"""What sweep costs around the training: whole processes, sweep against hand-written PyTorch and plain Optuna + MLflow.

Run: python -m benchmarks.overhead [--repeats 3] [--only ROW[,ROW]] [--quick] [--json PATH] [--keep]

Every measurement times a whole process (``python -m ...``: interpreter start, imports, data, training,
storage and tracking, exit), started from a fresh temporary folder, so each run's Optuna storage
(``.sweep/optuna.db``) and MLflow store (``mlflow.db``, ``mlartifacts/``) are new. Within one invocation
the runs alternate, repeat by repeat (sweep, hand-written, peer, sweep, hand-written, peer, ...), so a
machine that speeds up or slows down affects every side alike. Each row gives the median of the repeats
with their range (min–max), and the ratio (median of the per-repeat ratios of paired runs, with range).

The sides:

- **sweep**: ``python -m sweep.run study.yaml --no-progress`` (``--cpu-threads`` left at its default, 1),
  on ``studies/quickstart.yaml`` or a temporary copy of it with a few keys changed (row list below).
- **hand-written** (``python -m benchmarks.overhead hand``): a plain PyTorch script that retrains
  exactly the trials the sweep run just made. The harness reads them from that run's Optuna storage (the
  resolved config is the trial user attribute ``config``; a trial's trained epochs are its number of
  intermediate values, so pruned trials are retrained only for the epochs they ran) and hands the list
  over as JSON. The script sets ``torch.set_num_threads(1)``, builds the data and model with
  ``objectives.problems.build_problem`` (nothing else from the project) and trains with its own loop: the
  model initialised after ``torch.manual_seed(seed)``, one ``torch.Generator`` seeded with the same seed
  drawing each epoch's index permutations (task a first: one permutation split into batches; task b:
  as many fresh permutations as it takes to fill the same number of steps — the ``cycle`` mixing), SGD,
  ``Σ w_i L_i`` over ``torch.stack``-ed losses, one validation per epoch. The harness then compares every
  per-epoch validation value with the one the study recorded; the table's notes give the maximum absolute
  difference and how many values are bit-identical (all of them, on the CPU). That comparison is what
  makes "the same work" a checked claim: ``tests/test_overhead_benchmark.py`` asserts it on a small study.
- **peer** (``python -m benchmarks.overhead peer``): what a user writes today without sweep: plain Optuna
  (``TPESampler(n_startup_trials=10, seed=0)``, ``MedianPruner(n_startup_trials=5, n_warmup_steps=4)``,
  SQLite storage) and plain MLflow through the fluent API (``sqlite:///mlflow.db``; a parent run, one
  nested ``mlflow.start_run`` per trial with ``log_params`` and one ``mlflow.log_metrics`` per epoch;
  optuna-integration's ``MLflowCallback`` is not installed, so this stands in for it), training the same
  problem and model with the same search space, trial count and epochs, and the hand-written loop. Its
  trials sample other values and prune differently than sweep's, so the number of epochs trained differs
  a little: the notes give both totals.

The rows (``--only`` takes the names in brackets):

- **quickstart wall, sweep / hand-written** [``quickstart``]: the quickstart study (30 trials, 12 epochs,
  median pruning) against the hand-written replay of its trials.
- **quickstart wall, sweep / peer** [``peer``]: the same sweep runs against the peer script.
- **long trials** [``long_model``, ``long_epochs``]: trials of several seconds each, where start-up
  matters less: (i) ``digits_pair`` with a larger hidden size (``hidden`` 1024: one 12-epoch trial
  trains in about 5 s on the 2-core machine, 4.6–6.4 s measured) and 4 trials; (ii) the quickstart model
  for 400 epochs, 4 trials (about 4 s of training each, 9 s inside sweep). Both have fewer trials than the
  pruner's ``n_startup_trials``, so every trial runs all its epochs.
- **fixed cost per trial** [``per_trial``]: (sweep − hand-written) / trials of the quickstart runs,
  paired by repeat. It still contains the difference in process start-up spread over the trials; the
  ``start-up excluded`` variant (with ``one_trial`` also selected) subtracts the one-trial runs'
  difference first: ((sweep − hand)_quickstart − (sweep − hand)_one-trial) / (trials − 1). The reference
  column is the hand-written script's own training time per trial (timed inside it).
- **cost per epoch beyond training** [``per_epoch``]: the 400-epoch study (ii) and the same study with
  12 epochs, same trials: ((sweep − hand)_400 − (sweep − hand)_12) / (epochs trained_400 − epochs
  trained_12), epochs summed over trials and paired by repeat. Everything that does not depend on the
  number of epochs (start-up, per-trial set-up, the end-of-study report) cancels; what is left is what
  sweep adds per epoch (metrics to MLflow, the Optuna report and pruning check, the loop's own
  bookkeeping). The reference column is the hand-written training time per epoch.
- **the loop's own cost per epoch** [``loop``]: in one process, sweep's ``dual_loss.train`` with a reporter
  that only keeps the values (no Optuna, no MLflow) against the hand-written loop computing the same
  metrics (training losses per task, validation losses and accuracies), alternated, on the quickstart
  run's first trial for 100 epochs; checks both give the same per-epoch values. What the per-epoch row
  adds to this is the records (MLflow's metric rows, Optuna's values, pruning).
- **one-trial run, whole process** [``one_trial``]: ``--n-trials 1`` against the hand-written one-trial
  process: mostly start-up.
- **peak RSS of the quickstart** [``rss``]: the maximum resident set of each quickstart process
  (``os.wait4`` on the process: its own rusage, not the harness's other children's).
- **--workers 2 vs 1** [``workers``]: trials per minute of the whole quickstart run with ``--workers 2``
  against the default (the quickstart runs above), fresh folders each (on 2 cores: two processes share them).
- **--workers 2 vs 1 on long trials** [``workers_long``]: the same on trials longer than start-up: the
  long-model study (i) with twice its trials (8 of ~5 s), ``--workers 1`` against ``--workers 2``.

``--quick`` shrinks every study (a few trials of a few epochs) to check the harness in about two minutes.
The full run (``--repeats 3``) took 12 minutes on the 2-core machine.
Timings depend on the machine and its load: read the ratios, and compare runs of one invocation only.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "studies" / "quickstart.yaml"
STORAGE = ".sweep/optuna.db"  # sweep's default storage, relative to the run's folder

LONG_HIDDEN = 1024  # digits_pair hidden size whose 12-epoch trial trains in ~5 s on the 2-core machine
LONG_TRIALS = 4
LONG_EPOCHS = 400
LOOP_EPOCHS = 100  # the loop row: epochs of the in-process comparison (~1.6 s a side on the 2-core machine)


# --- the hand-written side: plain PyTorch ------------------------------------------------------------


def train_epochs(problem: Any, cfg: dict[str, Any], epochs: int, extra: bool = False) -> Iterator[dict[str, float]]:
    """Train one configuration of the dual-loss problem for ``epochs`` epochs with a plain PyTorch loop,
    yielding each epoch's validation values.

    The same model initialisation and batch order as ``objectives.dual_loss`` with ``mixing: cycle``,
    static weights, a constant learning rate, fp32, no gradient accumulation or clipping (the settings of
    the studies this benchmark runs): the model is made after ``torch.manual_seed(seed)``, and one
    generator seeded with ``seed`` draws each epoch's permutations, task a's before task b's.

    Args:
        problem: ``objectives.problems.Problem`` on the CPU (``a``/``b`` tasks with tensor splits).
        cfg: The resolved trial config (the ``config`` trial attribute): ``seed``, ``weights``,
            ``batch_size``, ``batch_size_b``, ``optimizer`` (``sgd``).
        epochs: Epochs to train.
        extra: Also compute the mean training losses and validation accuracies (the peer logs them).

    Yields:
        ``{"val_total_loss": ...}`` per epoch (plus ``train_*``, ``val_*`` metrics with ``extra``).
    """
    import torch
    from torch.nn.functional import cross_entropy

    if cfg["optimizer"]["type"] != "sgd":
        raise ValueError("the hand-written loop implements SGD only")
    seed = cfg["seed"]
    torch.manual_seed(seed)
    model = problem.make_model()
    opt = cfg["optimizer"]
    optimizer = torch.optim.SGD(
        model.parameters(), lr=opt["lr"], momentum=opt["momentum"], weight_decay=opt["weight_decay"]
    )
    generator = torch.Generator().manual_seed(seed)
    weights = torch.tensor(cfg["weights"], dtype=torch.float32)
    (xa, ya), (xb, yb) = problem.a.train, problem.b.train
    (xv, yv_a), yv_b = problem.a.val, problem.b.val[1]
    bs_a = cfg["batch_size"]
    bs_b = cfg.get("batch_size_b") or bs_a
    steps = max(math.ceil(len(ya) / bs_a), math.ceil(len(yb) / bs_b))

    def batches(n: int, batch_size: int) -> tuple[torch.Tensor, ...]:
        if steps <= math.ceil(n / batch_size):  # one pass is enough: one permutation, last batch maybe smaller
            return torch.randperm(n, generator=generator).split(batch_size)[:steps]
        passes = math.ceil(steps * batch_size / n)  # the smaller set: re-shuffled for every pass
        order = torch.cat([torch.randperm(n, generator=generator) for _ in range(passes)])
        return order[: steps * batch_size].split(batch_size)

    for _ in range(epochs):
        model.train()
        sums = torch.zeros(2)
        for ia, ib in zip(batches(len(ya), bs_a), batches(len(yb), bs_b), strict=True):
            optimizer.zero_grad(set_to_none=True)
            losses = torch.stack([cross_entropy(model(xa[ia])[0], ya[ia]), cross_entropy(model(xb[ib])[1], yb[ib])])
            (weights * losses).sum().backward()
            optimizer.step()
            if extra:
                sums += losses.detach()
        model.eval()
        with torch.no_grad():
            out_a, out_b = model(xv)
            n = len(yv_a)
            # A sample-weighted mean, as the library computes it for chunked validation (x * n / n is
            # not always x in float32): the same arithmetic gives the same bits.
            loss_a = cross_entropy(out_a, yv_a) * n / n
            loss_b = cross_entropy(out_b, yv_b) * n / n
            metrics = {"val_a_loss": loss_a, "val_b_loss": loss_b, "val_total_loss": loss_a + loss_b}
            if extra:
                metrics["val_a_acc"] = (out_a.argmax(1) == yv_a).float().mean()
                metrics["val_b_acc"] = (out_b.argmax(1) == yv_b).float().mean()
                metrics["train_a_loss"], metrics["train_b_loss"] = sums / steps
        values = torch.stack(list(metrics.values())).tolist()  # one host transfer per epoch
        yield dict(zip(metrics, values, strict=True))


def hand_main(trials_json: Path, out_json: Path) -> None:
    """The hand-written process: retrain every trial of ``trials_json``, write the per-epoch values.

    ``trials_json`` holds ``[{"number", "config", "epochs"}, ...]``; ``out_json`` receives
    ``{"values": {number: [val_total_loss per epoch]}, "build_s", "train_s", "epochs"}``.
    """
    import torch

    from objectives.problems import build_problem

    torch.set_num_threads(1)  # as sweep.run's --cpu-threads default
    trials = json.loads(trials_json.read_text())
    problems: dict[str, Any] = {}
    values: dict[int, list[float]] = {}
    build_s = train_s = 0.0
    for trial in trials:
        cfg = trial["config"]
        key = json.dumps([cfg["problem"], cfg["data_seed"]], sort_keys=True)
        start = time.perf_counter()
        if key not in problems:
            problems[key] = build_problem(cfg["problem"]["name"], cfg["problem"]["options"], cfg["data_seed"])
        mid = time.perf_counter()
        values[trial["number"]] = [m["val_total_loss"] for m in train_epochs(problems[key], cfg, trial["epochs"])]
        build_s += mid - start
        train_s += time.perf_counter() - mid
    epochs = sum(t["epochs"] for t in trials)
    out_json.write_text(json.dumps({"values": values, "build_s": build_s, "train_s": train_s, "epochs": epochs}))


def loop_main(trials_json: Path, out_json: Path, epochs: int, repeats: int = 3) -> None:
    """The loop process: sweep's ``dual_loss.train`` (a reporter that keeps the values, no Optuna or
    MLflow) against the hand-written loop computing the same metrics (``extra``), alternated in this one
    process on the first trial of ``trials_json`` for ``epochs`` epochs; ``out_json`` receives
    ``{"sweep_s": [...], "hand_s": [...], "epochs", "identical"}`` (per-epoch ``val_total_loss`` equal)."""
    import torch

    from objectives.config import DualLossConfig
    from objectives.dual_loss import train
    from objectives.problems import build_problem

    torch.set_num_threads(1)
    cfg = {**json.loads(trials_json.read_text())[0]["config"], "epochs": epochs}
    problem = build_problem(cfg["problem"]["name"], cfg["problem"]["options"], cfg["data_seed"])
    resolved = DualLossConfig.model_validate(cfg)

    def sweep_loop() -> list[float]:
        values: list[float] = []
        train(resolved, lambda epoch, metrics: values.append(metrics["val_total_loss"]), problem=problem)
        return values

    def hand() -> list[float]:
        return [m["val_total_loss"] for m in train_epochs(problem, cfg, epochs, extra=True)]

    identical = sweep_loop() == hand()  # also the warm-up of both
    sweep_s, hand_s = [], []
    for _ in range(repeats):
        for fn, into in ((sweep_loop, sweep_s), (hand, hand_s)):
            start = time.perf_counter()
            fn()
            into.append(time.perf_counter() - start)
    out_json.write_text(json.dumps({"sweep_s": sweep_s, "hand_s": hand_s, "epochs": epochs, "identical": identical}))


# --- the peer side: plain Optuna + plain MLflow ---------------------------------------------------------


def peer_main(n_trials: int, epochs: int, out_json: Path) -> None:
    """The peer process: the quickstart search written with plain Optuna and MLflow's fluent API."""
    import mlflow
    import optuna
    import torch

    from objectives.problems import build_problem

    torch.set_num_threads(1)
    problem = build_problem("digits_pair", {}, 0)
    mlflow.set_tracking_uri("sqlite:///mlflow.db")
    mlflow.set_experiment("peer")
    study = optuna.create_study(
        study_name="peer",
        storage="sqlite:///optuna.db",
        direction="minimize",
        sampler=optuna.samplers.TPESampler(n_startup_trials=10, seed=0),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=4),
    )
    trained = 0

    def objective(trial: optuna.Trial) -> float:
        nonlocal trained
        lr = trial.suggest_float("optimizer.lr", 0.01, 0.3, log=True)
        ratio = trial.suggest_float("weights.log10_ratio", -3.0, 3.0)
        w_a = 10**ratio / (10**ratio + 1)
        cfg = {
            "seed": trial.number,
            "weights": [w_a, 1 - w_a],
            "batch_size": 64,
            "optimizer": {"type": "sgd", "lr": lr, "momentum": 0.9, "weight_decay": 0.0},
        }
        with mlflow.start_run(run_name=f"trial-{trial.number}", nested=True):
            mlflow.log_params({"lr": lr, "log10_ratio": ratio, "weight_a": w_a, "epochs": epochs})
            value = math.inf
            for epoch, metrics in enumerate(train_epochs(problem, cfg, epochs, extra=True)):
                trained += 1
                mlflow.log_metrics(metrics, step=epoch)
                value = metrics["val_total_loss"]
                trial.report(value, epoch)
                if trial.should_prune():
                    mlflow.set_tag("pruned_at_epoch", epoch)
                    raise optuna.TrialPruned()
            return value

    with mlflow.start_run(run_name="study"):
        study.optimize(objective, n_trials=n_trials)
        mlflow.log_metric("best_value", study.best_value)
        mlflow.log_params({f"best.{k}": v for k, v in study.best_params.items()})
    print(f"peer: {len(study.trials)} trials, best {study.best_value:.6f}")
    out_json.write_text(json.dumps({"epochs": trained, "trials": len(study.trials)}))


# --- the harness ------------------------------------------------------------------------------------------


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


# --- the table ----------------------------------------------------------------------------------------------


def spread(values: Sequence[float], fmt: Callable[[float], str]) -> str:
    """``median (min–max)`` of ``values``; just the value for one."""
    if len(values) == 1:
        return fmt(values[0])
    return f"{fmt(statistics.median(values))} ({fmt(min(values))}–{fmt(max(values))})"


def seconds(x: float) -> str:
    return f"{x:.2f} s" if abs(x) < 10 else f"{x:.1f} s"


def millis(x: float) -> str:
    return f"{x * 1000:.2f} ms"


def times(x: float) -> str:
    return f"{x:.2f}×"


def mib(x: float) -> str:
    return f"{x:.0f} MiB"


def per_min(x: float) -> str:
    return f"{x:.1f}/min"


def table(runs: dict[str, list[Run]], rows: Sequence[str], quick: bool) -> tuple[list[dict[str, str]], list[str]]:
    """The table rows (measure, sweep, reference, ratio) and notes, from the runs."""
    specs = studies(quick)
    out: list[dict[str, str]] = []
    notes: list[str] = []

    def wall(key: str) -> list[float]:
        return [r.wall for r in runs[key]]

    def ratios(a: Sequence[float], b: Sequence[float]) -> list[float]:
        return [x / y for x, y in zip(a, b, strict=True)]

    def add(measure: str, sweep: str, reference: str, ratio: str = "") -> None:
        out.append({"measure": measure, "sweep": sweep, "reference": reference, "ratio": ratio})

    def versus_hand(key: str, measure: str) -> None:
        a, b = wall(key), wall(f"{key}/hand")
        add(measure, spread(a, seconds), f"hand-written {spread(b, seconds)}", spread(ratios(a, b), times))

    def overhead(key: str) -> list[float]:
        return [a.wall - b.wall for a, b in zip(runs[key], runs[f"{key}/hand"], strict=True)]

    for row in rows:
        if row == "quickstart":
            versus_hand("qs", f"{specs['qs'].label} wall, sweep / hand-written")
        elif row == "peer":
            a, c = wall("qs"), wall("peer")
            add(
                f"{specs['qs'].label} wall, sweep / peer (plain Optuna + MLflow)",
                spread(a, seconds),
                f"peer {spread(c, seconds)}",
                spread(ratios(a, c), times),
            )
            notes.append(
                f"epochs trained in the quickstart: sweep {spread([r.epochs for r in runs['qs']], str)}, peer "
                f"{spread([r.epochs for r in runs['peer']], str)} (different samples, different pruning)"
            )
        elif row == "long_model":
            versus_hand("lm", f"long trials (i): {specs['lm'].label}")
        elif row == "long_epochs":
            versus_hand("le", f"long trials (ii): {specs['le'].label}")
        elif row == "per_trial":
            n = [r.trials for r in runs["qs"]]
            per = [d / t for d, t in zip(overhead("qs"), n, strict=True)]
            train = [r.train_s / r.trials for r in runs["qs/hand"] if r.train_s is not None]
            add(
                "fixed cost per trial: (sweep − hand) / trials, quickstart",
                spread(per, seconds),
                f"hand-written training {spread(train, seconds)} / trial",
                spread(ratios(per, train), times),
            )
            if "ot" in runs:
                excl = [(q - o) / (t - 1) for q, o, t in zip(overhead("qs"), overhead("ot"), n, strict=True) if t > 1]
                if excl:
                    add(
                        "fixed cost per trial, start-up excluded: (Δ_quickstart − Δ_one-trial) / (trials − 1)",
                        spread(excl, seconds),
                        f"hand-written training {spread(train, seconds)} / trial",
                        spread(ratios(excl, train), times),
                    )
        elif row == "per_epoch":
            extra = [a.epochs - b.epochs for a, b in zip(runs["le"], runs["se"], strict=True)]
            per = [(x - y) / e for x, y, e in zip(overhead("le"), overhead("se"), extra, strict=True)]
            train = [r.train_s / r.epochs for r in runs["le/hand"] if r.train_s is not None]
            add(
                f"cost per epoch beyond training: {specs['le'].label} vs {specs['se'].label}",
                spread(per, millis),
                f"hand-written training {spread(train, millis)} / epoch",
                spread(ratios(per, train), times),
            )
        elif row == "loop":
            loops = [r.loop for r in runs["loop"] if r.loop]
            per = [(statistics.median(x["sweep_s"]) - statistics.median(x["hand_s"])) / x["epochs"] for x in loops]
            hand = [statistics.median(x["hand_s"]) / x["epochs"] for x in loops]
            add(
                "the loop's own cost per epoch, in process (no Optuna or MLflow): sweep's dual_loss.train vs "
                "the hand-written loop computing the same metrics",
                spread(per, millis),
                f"hand-written {spread(hand, millis)} / epoch",
                spread([1 + p / h for p, h in zip(per, hand, strict=True)], times),
            )
            same = sum(bool(x["identical"]) for x in loops)
            notes.append(f"the loop row: {same} of {len(loops)} runs gave bit-identical per-epoch values on both sides")
        elif row == "one_trial":
            versus_hand("ot", "one-trial run, whole process (--n-trials 1)")
        elif row == "rss":
            a, b = [r.rss_mib for r in runs["qs"]], [r.rss_mib for r in runs["qs/hand"]]
            add(
                "peak RSS of the quickstart process, sweep / hand-written",
                spread(a, mib),
                f"hand-written {spread(b, mib)}",
                spread(ratios(a, b), times),
            )
            c = [r.rss_mib for r in runs["peer"]]
            add(
                "peak RSS of the quickstart process, sweep / peer",
                spread(a, mib),
                f"peer {spread(c, mib)}",
                spread(ratios(a, c), times),
            )
        elif row == "workers":
            w2 = [60 * r.trials / r.wall for r in runs["w2"]]
            w1 = [60 * r.trials / r.wall for r in runs["qs"]]  # the quickstart runs: --workers 1
            add(
                "trials/min of the whole quickstart run, --workers 2 / --workers 1",
                spread(w2, per_min),
                f"--workers 1 {spread(w1, per_min)}",
                spread(ratios(w2, w1), times),
            )
        elif row == "workers_long":
            w2 = [60 * r.trials / r.wall for r in runs["wl2"]]
            w1 = [60 * r.trials / r.wall for r in runs["wl"]]
            add(
                f"trials/min of the whole run, {specs['wl'].label}, --workers 2 / --workers 1",
                spread(w2, per_min),
                f"--workers 1 {spread(w1, per_min)}",
                spread(ratios(w2, w1), times),
            )
    for key in (k for k in runs if runs[k] and sum(r.failed for r in runs[k])):
        notes.append(
            f"{specs[key].label}: {sum(r.failed for r in runs[key])} failed trial(s) over the repeats, which "
            "the hand-written replay does not retrain"
        )
    for key in (k for k in runs if k.endswith("/hand")):
        worst = max(r.max_abs_diff or 0.0 for r in runs[key])
        same = sum(r.identical[0] for r in runs[key] if r.identical)
        total = sum(r.identical[1] for r in runs[key] if r.identical)
        train = [r.train_s / r.trials for r in runs[key] if r.train_s is not None and r.trials]
        notes.append(
            f"hand-written replay of {specs[key.split('/')[0]].label}: {same}/{total} per-epoch values "
            f"bit-identical to the study's, max abs diff {worst:.3g}; training {spread(train, seconds)} per trial"
        )
    return out, notes


def markdown(rows: list[dict[str, str]], notes: list[str], header: str) -> str:
    lines = [header, "", "| measure | sweep | reference | ratio |", "|---|---|---|---|"]
    lines += [f"| {r['measure']} | {r['sweep']} | {r['reference']} | {r['ratio']} |" for r in rows]
    return "\n".join(lines + [""] + [f"- {n}" for n in notes])


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
    p = argparse.ArgumentParser(prog="python -m benchmarks.overhead", description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3, help="runs of each process (default 3)")
    p.add_argument("--only", help=f"comma-separated rows, of: {', '.join(ROWS)} (default: all)")
    p.add_argument("--quick", action="store_true", help="tiny studies: checks the harness in a minute or two")
    p.add_argument("--json", type=Path, help="also write the table, notes and every run's figures here")
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


if __name__ == "__main__":
    main()
