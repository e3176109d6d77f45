"""The dual-loss loop: one model, two or more tasks (datasets or heads), their losses combined with weights.

Read top to bottom. It takes a fully resolved :class:`~objectives.config.DualLossConfig` and a
reporter; it imports neither optuna nor mlflow. Metrics reported each epoch:

``train_<task>_loss`` (``train_a_loss``, ``train_b_loss``; a named task's: ``train_seg_loss``)
    mean unweighted training loss of each task over the epoch's steps;
``train_weighted_loss``
    the epoch's mean of ``Σ w_i L_i`` with the effective weights of each step — depends on the
    searched weights, so never a valid search target;
``val_<task>_loss``, ``val_total_loss``, ``val_<task>_<metric>``
    unweighted validation losses, their sum over every task, and each task's extra metrics (e.g. ``val_b_acc``);
``weight_<task>``, ``lr``
    the epoch's mean effective loss weights (static weight × weight schedule × strategy) and the
    learning rate at the end of the epoch;
``peak_memory_mb``
    peak GPU memory allocated in the trial so far (CUDA), or the process's peak host RSS (CPU).

Data: each task's splits are tensors (indexed on the device) or Datasets (read by DataLoaders), see
:mod:`objectives.data`; a batch's inputs may be a tensor, a tuple or a dict.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from functools import partial
from typing import Any

import torch

from objectives.config import DualLossConfig
from objectives.data import Source, call, reference_losses, val_batches, weighted_means
from objectives.helpers import (
    Checkpoint,
    Reporter,
    build_optimizer,
    check_finite,
    check_running_losses,
    derive_seed,
    plain,
    plan_epoch,
    seed_all,
    to_floats,
)
from objectives.lr_schedules import LRSchedule
from objectives.numerics import autocast, backward, compiled, peak_memory_mb, reset_peak_memory, scaler
from objectives.numerics import step as step_optimizer
from objectives.problems import Problem, Task, prepare
from objectives.weight_schedules import weight_table
from objectives.weighting import make as make_weighting


def _output(model: torch.nn.Module, task: Task, inputs: Any) -> torch.Tensor:
    out = call(model, inputs)
    return out if task.head is None else out[task.head]


@torch.no_grad()
def evaluate(
    model: torch.nn.Module, tasks: dict[str, Task], cfg: DualLossConfig, device: torch.device
) -> dict[str, torch.Tensor]:
    """Validation loss and metrics of every task, as 0-d device tensors (no host sync here), averaged
    over samples in chunks of ``eval_batch_size``."""
    model.eval()
    results: dict[str, torch.Tensor] = {}
    for name, task in tasks.items():

        def batch_means(batch: tuple[Any, ...], task: Task = task) -> dict[str, torch.Tensor]:
            with autocast(cfg.precision, device):
                out = _output(model, task, batch[0])
                return {key: fn(out, batch[1]) for key, fn in {"loss": task.loss, **task.metrics}.items()}

        batches = val_batches(task.val, cfg.eval_batch_size, cfg.data, device, task.collate_fn)
        for key, value in weighted_means(batches, batch_means, f"task {name}'s").items():
            results[f"val_{name}_{key}"] = value
    results["val_total_loss"] = sum(results[f"val_{name}_loss"] for name in tasks)
    model.train()
    return results


def train(
    cfg: DualLossConfig,
    report: Reporter | None = None,
    problem: Problem | None = None,
    checkpoint: Checkpoint | None = None,
) -> dict[str, float]:
    """Train one configuration and return the last epoch's metrics.

    Args:
        cfg: Resolved config: ``seed``, ``data_seed`` set and ``device`` not ``auto``.
        report: Called after every epoch with that epoch's metrics; may raise to stop (pruning).
        problem: The problem, already built (the runner caches it across trials); built from
            ``cfg.problem`` when omitted.
        checkpoint: Called every epoch before ``report`` with the metrics and ``{"model": model}``.

    Raises:
        objectives.helpers.NonFiniteLossError: a loss became NaN or infinite.
        objectives.data.DataError: a task's data is empty or a stream without a length.
    """
    # 1. Tensor data goes to the device once (every batch is an index into it); a Dataset is read by
    #    a DataLoader, its batches moved as they come.
    cfg, device, problem = prepare(cfg, problem, Problem)
    tasks = problem.in_order(cfg.tasks)
    reset_peak_memory(device)

    # 2. Seed model init and batch order from the config alone, so a config replays exactly (CPU).
    seed_all(cfg.seed)
    model = compiled(problem.make_model().to(device), cfg.compile)
    optimizer = build_optimizer(model.parameters(), cfg.optimizer)
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    batch_sizes = tuple(cfg.batch_size_of(name) for name in tasks)
    sources = [
        Source(task.train, bs, cfg.data, device, generator, derive_seed(cfg.seed, "loader", name),
               task.collate_fn, task.steps_per_epoch, f"task {name}'s")
        for (name, task), bs in zip(tasks.items(), batch_sizes, strict=True)
    ]  # fmt: skip

    # 3. Plan the epoch: how many steps and which dataset repeats. zip drops the longer sets' tails,
    #    which silently wastes data, so say so when it is more than 10%.
    sizes = tuple(source.n for source in sources)
    plan = plan_epoch(sizes, batch_sizes, cfg.mixing, tuple(source.per_pass for source in sources))
    short = min(range(len(tasks)), key=lambda i: plan.seen_fraction[i])
    if cfg.mixing == "zip" and plan.seen_fraction[short] < 0.90:
        warnings.warn(
            f"mixing=zip shows only {plan.seen_fraction[short]:.1%} of task {cfg.tasks[short]}'s training data "
            f"each epoch (sizes {sizes}, batch sizes {batch_sizes}); use mixing=cycle to see all of it",
            stacklevel=2,
        )

    # 4. Loss weights: every step's static weights (after the weight schedule) in one device table,
    #    and the weighting strategy; learned weights (uncertainty) join the optimizer before the LR
    #    schedule is built, so the schedule drives them too. With gradient accumulation the optimizer
    #    (and its schedule) steps once per group of grad_accum_steps batches.
    total_steps = cfg.epochs * plan.steps
    table = weight_table(cfg.weight_schedule, cfg.weights, cfg.tasks, total_steps, device)
    strategy = make_weighting(cfg.weighting, len(tasks), device, derive_seed(cfg.seed, "weighting"))
    if strategy.parameters():
        optimizer.add_param_group({"params": strategy.parameters(), "weight_decay": 0.0})
    k = cfg.grad_accum_steps
    updates_per_epoch = math.ceil(plan.steps / k)
    schedule = LRSchedule(optimizer, cfg.optimizer.schedule, cfg.epochs * updates_per_epoch, updates_per_epoch)
    grad_scaler = scaler(cfg.precision, device)
    params = list(model.parameters())

    def task_loss(task: Task, batch: tuple[Any, ...]) -> torch.Tensor:
        return task.loss(_output(model, task, batch[0]), batch[1])

    def step_losses(*batches: tuple[Any, ...]) -> torch.Tensor:
        with autocast(cfg.precision, device):
            return torch.stack([task_loss(task, batch) for task, batch in zip(tasks.values(), batches, strict=True)])

    if strategy.reference_losses:  # hypergrad: the losses of fresh validation batches, in eval mode
        vals = [(task.val, bs, task.collate_fn) for task, bs in zip(tasks.values(), batch_sizes, strict=True)]
        seed = derive_seed(cfg.seed, "reference")
        strategy.use_reference(reference_losses(step_losses, [model], vals, cfg.data, device, seed))

    @torch.no_grad()
    def losses_after(*batches: tuple[Any, ...]) -> torch.Tensor:
        """The step's losses again with the updated model, without a graph (FAMO's after-step view)."""
        return step_losses(*batches)

    losses_after_step = strategy.losses_after_step
    metrics: dict[str, float] = {}
    step = 0
    for epoch in range(cfg.epochs):
        model.train()
        epoch_batches = [source.epoch(plan.steps) for source in sources]
        # 5. Running sums stay on the device: no .item() inside the step loop (one sync per epoch).
        loss_sums, weight_sums = torch.zeros(len(tasks), device=device), torch.zeros(len(tasks), device=device)
        weighted_sum = torch.zeros((), device=device)
        for i, batches in enumerate(zip(*epoch_batches, strict=True)):
            # 6. Accumulation groups: gradients of a group's batches add up, each scaled by 1/group size,
            #    so the update equals one over the group's batches together (k = 1: every batch).
            if i % k == 0:
                optimizer.zero_grad(set_to_none=True)
            factor = 1.0 / min(k, plan.steps - i // k * k)
            if cfg.mixing == "accumulate":
                # 7a. One backward per task: only one graph alive at a time; gradients add up in .grad.
                #     (The config allows only strategies whose weights are known before it: weights_before_step.)
                w = strategy.weights(table[step], table[step]).detach()
                detached = []
                for j, (task, batch) in enumerate(zip(tasks.values(), batches, strict=True)):
                    with autocast(cfg.precision, device):
                        loss = task_loss(task, batch)
                    grad_scaler.scale(w[j] * loss * factor).backward()
                    detached.append(loss.detach())
                losses = torch.stack(detached)
            else:
                # 7b. Every task's loss, then the strategy's backward (static: one backward of Σ w_i L_i).
                losses = step_losses(*batches)
                w = backward(strategy, grad_scaler, losses, table[step], params, factor)
            if (i + 1) % k == 0 or i + 1 == plan.steps:
                step_optimizer(optimizer, grad_scaler, [(model, cfg.grad_clip)])
                grad_scaler.update()
                schedule.after_step()
            # 8. Strategies that learn from the step's effect (FAMO) get its losses recomputed; others don't.
            if losses_after_step:
                strategy.after_step(partial(losses_after, *batches))
            loss_sums += losses.detach()
            weight_sums += w
            weighted_sum += (w * losses.detach()).sum()
            check_running_losses(loss_sums, step, epoch)
            step += 1

        # 9. Validate on every task, then sync once: everything for the epoch in one transfer.
        train_means = loss_sums / plan.steps
        strategy.end_epoch(train_means)
        weight_means = weight_sums / plan.steps
        metrics = to_floats(
            {
                **{f"train_{name}_loss": train_means[j] for j, name in enumerate(tasks)},
                "train_weighted_loss": weighted_sum / plan.steps,
                **{f"weight_{name}": weight_means[j] for j, name in enumerate(tasks)},
                **evaluate(model, tasks, cfg, device),
            }
        )
        metrics["lr"] = optimizer.param_groups[0]["lr"]
        metrics["peak_memory_mb"] = peak_memory_mb(device)

        # 10. A NaN/Inf loss ends the trial now: further epochs would only burn time.
        check_finite(metrics, epoch)
        schedule.after_epoch(metrics["val_total_loss"])  # reduce-on-plateau steps with the validation loss
        if checkpoint is not None:
            checkpoint(epoch, metrics, {"model": plain(model)})
        if report is not None:
            report(epoch, metrics)
    return metrics


def test_metrics(cfg: DualLossConfig, problem: Problem, models: Mapping[str, torch.nn.Module]) -> dict[str, float]:
    """A trained model's losses and metrics on the problem's held-out test split (``test_a_loss``,
    ``test_b_acc``, ``test_total_loss``...): :func:`evaluate` on the test data, one sync. Only
    ``sweep.evaluate`` calls it, after the search; :func:`train` never reads the test split."""
    cfg, device, problem = prepare(cfg, problem.on_test(), Problem)
    values = to_floats(evaluate(models["model"], problem.in_order(cfg.tasks), cfg, device))
    return {"test_" + key.removeprefix("val_"): value for key, value in values.items()}


def logged_metrics(task_metrics: Mapping[str, tuple[str, ...]], n_losses: int = 2) -> tuple[str, ...]:
    """Every metric :func:`train` logs per epoch, given each task's extra metric names by task (in the
    order of the config's ``tasks``; see module docstring). ``n_losses`` is the shared signature's (the
    tasks are ``task_metrics``' keys)."""
    tasks = tuple(task_metrics)
    names = [*(f"train_{t}_loss" for t in tasks), "train_weighted_loss"]
    names += [f"weight_{t}" for t in tasks]
    for task in tasks:
        names += [f"val_{task}_loss", *(f"val_{task}_{m}" for m in task_metrics.get(task, ()))]
    return (*names, "val_total_loss", "lr", "peak_memory_mb")
