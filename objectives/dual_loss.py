"""The dual-loss loop: one model, two datasets (or two heads), two losses combined with weights.

Read top to bottom. It takes a fully resolved :class:`~objectives.config.DualLossConfig` and a
reporter; it imports neither optuna nor mlflow. Metrics reported each epoch:

``train_a_loss``, ``train_b_loss``
    mean unweighted training loss of each task over the epoch's steps;
``train_weighted_loss``
    the epoch's mean of ``Σ w_i L_i`` with the effective weights of each step — depends on the
    searched weights, so never a valid search target;
``val_a_loss``, ``val_b_loss``, ``val_total_loss``, ``val_<task>_<metric>``
    unweighted validation losses, their sum, and each task's extra metrics (e.g. ``val_b_acc``);
``weight_a``, ``weight_b``, ``lr``
    the epoch's mean effective loss weights (static weight × weight schedule × strategy) and the
    learning rate at the end of the epoch.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from functools import partial

import torch

from objectives.config import DualLossConfig
from objectives.helpers import (
    Reporter,
    build_optimizer,
    check_finite,
    check_running_losses,
    chunked_means,
    derive_seed,
    epoch_batches,
    plan_epoch,
    to_floats,
)
from objectives.lr_schedules import LRSchedule
from objectives.problems import Problem, Task, prepare
from objectives.weight_schedules import weight_table
from objectives.weighting import make as make_weighting


def _output(model: torch.nn.Module, task: Task, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    return out if task.head is None else out[task.head]


@torch.no_grad()
def evaluate(model: torch.nn.Module, tasks: dict[str, Task], chunk: int) -> dict[str, torch.Tensor]:
    """Validation loss and metrics of every task, as 0-d device tensors (no host sync here)."""
    model.eval()
    results: dict[str, torch.Tensor] = {}
    for name, task in tasks.items():
        x, y = task.val

        def batch_means(rows: slice, task: Task = task, x: torch.Tensor = x, y: torch.Tensor = y) -> dict:
            out = _output(model, task, x[rows])
            return {key: fn(out, y[rows]) for key, fn in {"loss": task.loss, **task.metrics}.items()}

        for key, value in chunked_means(len(x), chunk, batch_means).items():
            results[f"val_{name}_{key}"] = value
    results["val_total_loss"] = sum(results[f"val_{name}_loss"] for name in tasks)
    model.train()
    return results


def train(cfg: DualLossConfig, report: Reporter | None = None, problem: Problem | None = None) -> dict[str, float]:
    """Train one configuration and return the last epoch's metrics.

    Args:
        cfg: Resolved config: ``seed``, ``data_seed`` set and ``device`` not ``auto``.
        report: Called after every epoch with that epoch's metrics; may raise to stop (pruning).
        problem: The problem, already built (the runner caches it across trials); built from
            ``cfg.problem`` when omitted.

    Raises:
        objectives.helpers.NonFiniteLossError: a loss became NaN or infinite.
    """
    # 1. Data goes to the device once; every batch below is an index into these tensors.
    cfg, device, problem = prepare(cfg, problem, Problem)
    tasks = {"a": problem.a, "b": problem.b}

    # 2. Seed model init and batch order from the config alone, so a config replays exactly (CPU).
    torch.manual_seed(cfg.seed)
    model = problem.make_model().to(device)
    optimizer = build_optimizer(model.parameters(), cfg.optimizer)
    generator = torch.Generator(device=device).manual_seed(cfg.seed)

    # 3. Plan the epoch: how many steps and which dataset repeats. zip drops the longer set's tail,
    #    which silently wastes data, so say so when it is more than 10%.
    sizes = (len(problem.a.train[0]), len(problem.b.train[0]))
    batch_sizes = (cfg.batch_size, cfg.batch_size_b or cfg.batch_size)
    plan = plan_epoch(sizes, batch_sizes, cfg.mixing)
    unseen = 1.0 - min(plan.seen_fraction)
    if cfg.mixing == "zip" and unseen > 0.10:
        warnings.warn(
            f"mixing=zip shows only {min(plan.seen_fraction):.1%} of the larger dataset each epoch "
            f"(sizes {sizes}, batch sizes {batch_sizes}); use mixing=cycle to see all of it",
            stacklevel=2,
        )
    # 4. Loss weights: every step's static weights (after the weight schedule) in one device table,
    #    and the weighting strategy; learned weights (uncertainty) join the optimizer before the LR
    #    schedule is built, so the schedule drives them too.
    total_steps = cfg.epochs * plan.steps
    table = weight_table(cfg.weight_schedule, cfg.weights, cfg.LOSSES, total_steps, device)
    strategy = make_weighting(cfg.weighting, 2, device, derive_seed(cfg.seed, "weighting"))
    if strategy.parameters():
        optimizer.add_param_group({"params": strategy.parameters(), "weight_decay": 0.0})
    schedule = LRSchedule(optimizer, cfg.optimizer.schedule, total_steps, plan.steps)
    params = list(model.parameters())

    def step_losses(xa: torch.Tensor, ya: torch.Tensor, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        loss_a = problem.a.loss(_output(model, problem.a, xa), ya)
        return torch.stack([loss_a, problem.b.loss(_output(model, problem.b, xb), yb)])

    @torch.no_grad()
    def losses_after(xa: torch.Tensor, ya: torch.Tensor, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        """The step's losses again with the updated model, without a graph (FAMO's after-step view)."""
        return step_losses(xa, ya, xb, yb)

    losses_after_step = strategy.losses_after_step
    metrics: dict[str, float] = {}
    step = 0
    for epoch in range(cfg.epochs):
        model.train()
        batches_a = epoch_batches(sizes[0], batch_sizes[0], plan.steps, generator, device)
        batches_b = epoch_batches(sizes[1], batch_sizes[1], plan.steps, generator, device)
        # 5. Running sums stay on the device: no .item() inside the step loop (one sync per epoch).
        loss_sums, weight_sums = torch.zeros(2, device=device), torch.zeros(2, device=device)
        weighted_sum = torch.zeros((), device=device)
        for idx_a, idx_b in zip(batches_a, batches_b, strict=True):
            optimizer.zero_grad(set_to_none=True)
            xa, ya = problem.a.train[0][idx_a], problem.a.train[1][idx_a]
            xb, yb = problem.b.train[0][idx_b], problem.b.train[1][idx_b]
            if cfg.mixing == "accumulate":
                # 6a. One backward per task: only one graph alive at a time; gradients add up in .grad.
                #     (The config allows only strategies whose weights are known before it: weights_before_step.)
                w = strategy.weights(table[step], table[step]).detach()
                loss_a = problem.a.loss(_output(model, problem.a, xa), ya)
                (w[0] * loss_a).backward()
                loss_b = problem.b.loss(_output(model, problem.b, xb), yb)
                (w[1] * loss_b).backward()
                losses = torch.stack([loss_a.detach(), loss_b.detach()])
            else:
                # 6b. Both losses, then the strategy's backward (static: one backward of Σ w_i L_i).
                losses = step_losses(xa, ya, xb, yb)
                w = strategy.backward(losses, table[step], params)
            optimizer.step()
            schedule.after_step()
            # 7. Strategies that learn from the step's effect (FAMO) get its losses recomputed; others don't.
            if losses_after_step:
                strategy.after_step(partial(losses_after, xa, ya, xb, yb))
            loss_sums += losses.detach()
            weight_sums += w
            weighted_sum += (w * losses.detach()).sum()
            check_running_losses(loss_sums, step, epoch)
            step += 1

        # 8. Validate on every task, then sync once: everything for the epoch in one transfer.
        train_means = loss_sums / plan.steps
        strategy.end_epoch(train_means)
        weight_means = weight_sums / plan.steps
        metrics = to_floats(
            {
                "train_a_loss": train_means[0],
                "train_b_loss": train_means[1],
                "train_weighted_loss": weighted_sum / plan.steps,
                "weight_a": weight_means[0],
                "weight_b": weight_means[1],
                **evaluate(model, tasks, cfg.eval_batch_size),
            }
        )
        metrics["lr"] = optimizer.param_groups[0]["lr"]

        # 9. A NaN/Inf loss ends the trial now: further epochs would only burn time.
        check_finite(metrics, epoch)
        schedule.after_epoch(metrics["val_total_loss"])  # reduce-on-plateau steps with the validation loss
        if report is not None:
            report(epoch, metrics)
    return metrics


def logged_metrics(task_metrics: Mapping[str, tuple[str, ...]], n_losses: int = 2) -> tuple[str, ...]:
    """Every metric :func:`train` logs per epoch, given each task's extra metric names (see module docstring)."""
    names = [*(f"train_{t}_loss" for t in DualLossConfig.LOSSES), "train_weighted_loss"]
    names += [f"weight_{t}" for t in DualLossConfig.LOSSES]
    for task in DualLossConfig.LOSSES:
        names += [f"val_{task}_loss", *(f"val_{task}_{m}" for m in task_metrics.get(task, ()))]
    return (*names, "val_total_loss", "lr")
