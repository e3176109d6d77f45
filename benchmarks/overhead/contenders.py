"""The processes ``benchmarks.overhead`` times besides sweep itself, each started as ``python -m
benchmarks.overhead hand|loop|peer ...``: the hand-written PyTorch script that replays a sweep run's trials, the
loop comparison in one process, and the peer (plain Optuna + MLflow). The package's docstring describes them."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
