"""The alternating loop: two coupled models, B consumes A's output, each with its own optimizer.

Read top to bottom. With ``z = A(x)`` and ``y_hat = B(z)`` the objective is

    L = w_a · loss_a(z, t_a) + w_b · loss_b(y_hat, y) [+ w_c · consistency]

where the consistency term (on when the config's ``loss_terms`` hold it: a third weight) is
:meth:`CoupledProblem.consistency_term <objectives.problems.CoupledProblem.consistency_term>`: the
problem's own ``consistency(z, y_hat, y, t_a, B)`` when it gives one (also given ``x=`` and
``model_a=A`` by keyword when it names them: a term on two views of x), else the default term written
there, and the ``mode`` says which model learns from which terms:

``alternate``
    per cycle ``steps_a`` optimizer steps on A, then ``steps_b`` on B. An A step back-propagates L
    into A only (B is frozen: no gradient reaches B's parameters); a B step computes z without
    gradient (A gets nothing, nor from a consistency term that calls A) and back-propagates L into B.
    Every step draws a fresh batch and runs a
    fresh forward pass after the previous step: there is never a backward through a graph built
    before an optimizer step (the ``retain_graph=True`` pattern, which applies stale gradients or
    fails with "modified by an inplace operation").
``b_on_detached``
    every step updates both: A on its own loss only, B on L computed from ``z.detach()`` (A frozen
    where the consistency term calls it).
``joint``
    one optimizer over both models, one parameter group per model (own LR, weight decay), one
    backward of L.

Metrics reported each epoch: ``train_a_loss``, ``train_b_loss`` (and ``train_consistency_loss``),
``train_weighted_loss``, ``val_a_loss``, ``val_b_loss`` (and ``val_consistency_loss``),
``val_total_loss`` = val_a_loss + val_b_loss, ``val_a_<metric>`` on A's output (the problem's
``metrics_a``), ``val_b_<metric>`` on the final output, ``weight_a``,
``weight_b`` (``weight_consistency``: the epoch's mean effective weights, i.e. static weight × weight
schedule × weighting strategy), ``lr_a``, ``lr_b`` and ``opt_steps_a``/``opt_steps_b``, the
optimizer steps each model has taken so far.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import torch

from objectives.config import AlternatingConfig
from objectives.data import Source, call, reference_losses, val_batches, weighted_means
from objectives.helpers import (
    Checkpoint,
    Reporter,
    build_optimizer,
    check_finite,
    check_running_losses,
    derive_seed,
    frozen,
    param_group,
    plain,
    seed_all,
    to_floats,
)
from objectives.lr_schedules import LRSchedule
from objectives.numerics import autocast, backward, compiled, peak_memory_mb, reset_peak_memory, scaler
from objectives.numerics import step as step_optimizer
from objectives.problems import CoupledProblem, prepare
from objectives.weight_schedules import weight_table
from objectives.weighting import make as make_weighting

TERMS = AlternatingConfig.LOSSES

StepResult = tuple[torch.Tensor, torch.Tensor, str]  # the step's loss terms, effective weights, models stepped
Step = Callable[[tuple[Any, ...], torch.Tensor], StepResult]  # (batch (x, y, t_a), base weights) → result


def losses(
    problem: CoupledProblem,
    model_b: Callable[..., Any],
    z: torch.Tensor,
    y: torch.Tensor,
    t: torch.Tensor,
    terms: tuple[str, ...],
    *,
    x: Any,
    model_a: Callable[..., Any],
) -> torch.Tensor:
    """The unweighted loss terms ``[loss_a, loss_b(, consistency)]`` for A's output ``z``, stacked.

    ``terms`` are the config's :attr:`~objectives.config.LoopCommon.loss_terms`; the consistency term,
    when they hold it, is :meth:`CoupledProblem.consistency_term` (given the batch's inputs ``x`` and
    ``model_a``). The vectorized loop calls this with its models as functions of a member's parameters.

    Raises:
        ValueError: the problem's consistency function returned no 0-d tensor.
    """
    out = model_b(z)
    values = [problem.loss_a(z, t), problem.loss_b(out, y)]
    if "consistency" in terms:
        term = problem.consistency_term(z, out, y, t, model_b, x=x, model_a=model_a)
        if not isinstance(term, torch.Tensor) or term.ndim != 0:
            shape = tuple(term.shape) if isinstance(term, torch.Tensor) else type(term).__name__
            raise ValueError(f"CoupledProblem.consistency must return a 0-d tensor (a batch mean), got {shape}")
        values.append(term)
    return torch.stack(values)


@torch.no_grad()
def evaluate(
    problem: CoupledProblem,
    model_a: torch.nn.Module,
    model_b: torch.nn.Module,
    cfg: AlternatingConfig,
    device: torch.device,
) -> dict[str, torch.Tensor]:
    """Validation losses, A's metrics (``val_a_<name>``) and B's (``val_b_<name>``) as 0-d device tensors
    (no host sync here), averaged over samples in chunks of ``eval_batch_size``."""
    model_a.eval()
    model_b.eval()

    def batch_means(batch: tuple[Any, ...]) -> dict[str, torch.Tensor]:
        x, y, t = batch
        with autocast(cfg.precision, device):
            z = call(model_a, x)
            terms = losses(problem, model_b, z, y, t, cfg.loss_terms, x=x, model_a=model_a)
            out = model_b(z)
            means = {f"val_{name}_loss": value for name, value in zip(TERMS, terms, strict=False)}
            means.update({f"val_a_{key}": fn(z, t) for key, fn in problem.metrics_a.items()})
            means.update({f"val_b_{key}": fn(out, y) for key, fn in problem.metrics.items()})
        return means

    batches = val_batches(problem.val, cfg.eval_batch_size, cfg.data, device, problem.collate_fn)
    results = weighted_means(batches, batch_means)
    results["val_total_loss"] = results["val_a_loss"] + results["val_b_loss"]
    model_a.train()
    model_b.train()
    return results


def train(
    cfg: AlternatingConfig,
    report: Reporter | None = None,
    problem: CoupledProblem | None = None,
    checkpoint: Checkpoint | None = None,
) -> dict[str, float]:
    """Train one configuration of two coupled models and return the last epoch's metrics.

    Args:
        cfg: Resolved config: ``seed``, ``data_seed`` set and ``device`` not ``auto``.
        report: Called after every epoch with that epoch's metrics; may raise to stop (pruning).
        problem: The coupled problem, already built; built from ``cfg.problem`` when omitted.
        checkpoint: Called every epoch before ``report`` with the metrics and ``{"model_a": A, "model_b": B}``.

    Raises:
        objectives.helpers.NonFiniteLossError: a loss became NaN or infinite.
        objectives.data.DataError: the data is empty or a stream without a length.
    """
    # 1. Tensor data goes to the device once (every batch is an index into it); a Dataset is read by
    #    a DataLoader, its batches moved as they come.
    cfg, device, problem = prepare(cfg, problem, CoupledProblem)
    reset_peak_memory(device)

    # 2. Seed model init and batch order from the config alone, so a config replays exactly (CPU).
    seed_all(cfg.seed)
    model_a = compiled(problem.make_model_a().to(device), cfg.compile)
    model_b = compiled(problem.make_model_b().to(device), cfg.compile)
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    source = Source(problem.train, cfg.batch_size, cfg.data, device, generator, derive_seed(cfg.seed, "loader"),
                    problem.collate_fn, problem.steps_per_epoch)  # fmt: skip

    # 3. Optimizers: one per model, or one with a parameter group per model for joint training.
    if cfg.mode == "joint":
        joint = build_optimizer(
            [param_group(model_a, cfg.model_a.optimizer), param_group(model_b, cfg.model_b.optimizer)],
            cfg.model_a.optimizer,
        )
        opt_a = opt_b = joint
    else:
        opt_a = build_optimizer(model_a.parameters(), cfg.model_a.optimizer)
        opt_b = build_optimizer(model_b.parameters(), cfg.model_b.optimizer)

    n_losses = len(cfg.loss_terms)
    cycle = cfg.steps_a + cfg.steps_b
    # An epoch is one pass (one batch per step), or, with epoch: model_steps in alternate mode, enough
    # batches that the model with fewer steps per cycle gets a pass's worth of optimizer steps.
    steps_per_epoch = source.per_pass
    if cfg.epoch == "model_steps" and cfg.mode == "alternate":
        steps_per_epoch = math.ceil(source.per_pass * cycle / min(cfg.steps_a, cfg.steps_b))
    total = cfg.epochs * steps_per_epoch

    # 4. Loss weights: every step's static weights (after the weight schedule) in one device table,
    #    and the weighting strategy; learned weights (uncertainty) join A's optimizer (A is the model
    #    every loss reaches), before the LR schedules are built so they drive them too.
    table = weight_table(cfg.weight_schedule, cfg.weights, cfg.loss_terms, total, device)
    strategy = make_weighting(cfg.weighting, n_losses, device, derive_seed(cfg.seed, "weighting"))
    if strategy.parameters():
        opt_a.add_param_group({"params": strategy.parameters(), "weight_decay": 0.0})
    params_a, params_b = list(model_a.parameters()), list(model_b.parameters())
    grad_scaler = scaler(cfg.precision, device)
    clip_a, clip_b = (model_a, cfg.model_a.grad_clip), (model_b, cfg.model_b.grad_clip)

    # 5. LR schedules run on each optimizer's own step count (in alternate mode A and B step in turn;
    #    joint mode has one optimizer and one schedule for both parameter groups).
    a_steps = sum(1 for s in range(total) if s % cycle < cfg.steps_a) if cfg.mode == "alternate" else total
    b_steps = total - a_steps if cfg.mode == "alternate" else total
    sched_a = LRSchedule(opt_a, cfg.model_a.optimizer.schedule, a_steps, math.ceil(a_steps / cfg.epochs))
    sched_b = (
        sched_a
        if cfg.mode == "joint"
        else LRSchedule(opt_b, cfg.model_b.optimizer.schedule, b_steps, math.ceil(b_steps / cfg.epochs))
    )
    schedules = {"a": [sched_a], "b": [sched_b], "ab": [sched_a] if cfg.mode == "joint" else [sched_a, sched_b]}
    opt_steps = {"a": 0, "b": 0}

    def forward(batch: tuple[Any, ...], z: torch.Tensor | None = None) -> torch.Tensor:
        """The step's loss terms for A's output (computed here unless given), under autocast."""
        x, y, t = batch
        with autocast(cfg.precision, device):
            z = call(model_a, x) if z is None else z
            return losses(problem, model_b, z, y, t, cfg.loss_terms, x=x, model_a=model_a)

    # 6. One step function per mode, picked once below. Each runs a fresh forward pass of the batch,
    #    fills the gradients and steps its optimizer(s); it returns the terms, effective weights and
    #    which models it stepped.
    def step_a(batch: tuple[Any, ...], base: torch.Tensor) -> StepResult:
        # 6a. A step (alternate): L reaches A only, B is frozen (no grads, no update).
        with frozen(model_b):
            terms = forward(batch)
            opt_a.zero_grad(set_to_none=True)
            w = backward(strategy, grad_scaler, terms, base, params_a)
        step_optimizer(opt_a, grad_scaler, [clip_a])
        return terms, w, "a"

    def step_b(batch: tuple[Any, ...], base: torch.Tensor) -> StepResult:
        # 6b. B step (alternate): A's output without gradient, so A gets nothing from B's steps.
        with torch.no_grad(), autocast(cfg.precision, device):
            z = call(model_a, batch[0])
        with frozen(model_a):  # a consistency term that calls A gives A nothing either
            terms = forward(batch, z)
        opt_b.zero_grad(set_to_none=True)
        w = backward(strategy, grad_scaler, terms, base, params_b)
        step_optimizer(opt_b, grad_scaler, [clip_b])
        return terms, w, "b"

    def step_b_on_detached(batch: tuple[Any, ...], base: torch.Tensor) -> StepResult:
        # 6c. One forward of A, two disjoint graphs: A learns from its own loss, B from L on the
        #     detached code; one backward of their sum fills both models' gradients.
        with autocast(cfg.precision, device):
            z = call(model_a, batch[0])
            own = problem.loss_a(z, batch[2]).unsqueeze(0)
        with frozen(model_a):  # A learns from its own loss only, also where the consistency term calls A
            rest = forward(batch, z.detach())[1:]
        terms = torch.cat([own, rest])
        opt_a.zero_grad(set_to_none=True)
        opt_b.zero_grad(set_to_none=True)
        w = backward(strategy, grad_scaler, terms, base, params_a + params_b)
        step_optimizer(opt_a, grad_scaler, [clip_a])
        step_optimizer(opt_b, grad_scaler, [clip_b])
        return terms, w, "ab"

    def step_joint(batch: tuple[Any, ...], base: torch.Tensor) -> StepResult:
        # 6d. Joint: one backward of L, one step of the shared optimizer (both groups).
        terms = forward(batch)
        joint.zero_grad(set_to_none=True)
        w = backward(strategy, grad_scaler, terms, base, params_a + params_b)
        step_optimizer(joint, grad_scaler, [clip_a, clip_b])
        return terms, w, "ab"

    # Alternate mode: per cycle, steps_a A steps then steps_b B steps; the other modes: one kind of step.
    step_for: Callable[[int], Step] = {
        "alternate": lambda step: step_a if step % cycle < cfg.steps_a else step_b,
        "b_on_detached": lambda step: step_b_on_detached,
        "joint": lambda step: step_joint,
    }[cfg.mode]

    if strategy.reference_losses:  # hypergrad: the losses of fresh validation batches, in eval mode
        val, seed = (problem.val, cfg.batch_size, problem.collate_fn), derive_seed(cfg.seed, "reference")
        strategy.use_reference(reference_losses(forward, [model_a, model_b], [val], cfg.data, device, seed))

    @torch.no_grad()
    def full_losses(batch: tuple[Any, ...]) -> torch.Tensor:
        """The step's losses with the updated models, without a graph (FAMO's after-step view)."""
        return forward(batch)

    losses_after_step = strategy.losses_after_step
    metrics: dict[str, float] = {}
    step = 0
    for epoch in range(cfg.epochs):
        # 7. Running sums stay on the device: no .item() inside the step loop (one sync per epoch).
        loss_sums, weight_sums = torch.zeros(n_losses, device=device), torch.zeros(n_losses, device=device)
        weighted_sum = torch.zeros((), device=device)
        for batch in source.epoch(steps_per_epoch):
            terms, w, stepped = step_for(step)(batch, table[step])
            grad_scaler.update()
            for schedule in schedules[stepped]:
                schedule.after_step()
            for model in stepped:
                opt_steps[model] += 1
            # 8. Strategies that learn from the step's effect (FAMO) get its losses recomputed; others don't.
            if losses_after_step:
                strategy.after_step(partial(full_losses, batch))
            loss_sums += terms.detach()
            weight_sums += w
            weighted_sum += (w * terms.detach()).sum()
            check_running_losses(loss_sums, step, epoch)
            step += 1

        # 9. Validate, then sync once: everything for the epoch in one transfer.
        train_means = loss_sums / steps_per_epoch
        strategy.end_epoch(train_means)
        weight_means = weight_sums / steps_per_epoch
        epoch_values = {f"train_{name}_loss": value for name, value in zip(TERMS, train_means, strict=False)}
        epoch_values["train_weighted_loss"] = weighted_sum / steps_per_epoch
        epoch_values.update({f"weight_{name}": value for name, value in zip(TERMS, weight_means, strict=False)})
        metrics = to_floats({**epoch_values, **evaluate(problem, model_a, model_b, cfg, device)})
        metrics["lr_a"] = opt_a.param_groups[0]["lr"]
        metrics["lr_b"] = opt_b.param_groups[1 if cfg.mode == "joint" else 0]["lr"]
        metrics["opt_steps_a"], metrics["opt_steps_b"] = float(opt_steps["a"]), float(opt_steps["b"])
        metrics["peak_memory_mb"] = peak_memory_mb(device)

        # 10. A NaN/Inf loss ends the trial now: further epochs would only burn time.
        check_finite(metrics, epoch)
        for schedule in {id(sched_a): sched_a, id(sched_b): sched_b}.values():
            schedule.after_epoch(metrics["val_total_loss"])  # reduce-on-plateau steps with the validation loss
        if checkpoint is not None:
            checkpoint(epoch, metrics, {"model_a": plain(model_a), "model_b": plain(model_b)})
        if report is not None:
            report(epoch, metrics)
    return metrics


def test_metrics(
    cfg: AlternatingConfig, problem: CoupledProblem, models: Mapping[str, torch.nn.Module]
) -> dict[str, float]:
    """Trained models' losses and metrics on the problem's held-out test split (``test_a_loss``,
    ``test_b_acc``...): :func:`evaluate` on the test data. Only ``sweep.evaluate`` calls it."""
    cfg, device, problem = prepare(cfg, problem.on_test(), CoupledProblem)
    values = to_floats(evaluate(problem, models["model_a"], models["model_b"], cfg, device))
    return {"test_" + key.removeprefix("val_"): value for key, value in values.items()}


def logged_metrics(task_metrics: Mapping[str, tuple[str, ...]], n_losses: int) -> tuple[str, ...]:
    """Every metric :func:`train` logs per epoch with ``n_losses`` losses, given the extra metric names of
    A's output (``task_metrics["a"]``) and B's (``task_metrics["b"]``)."""
    terms = AlternatingConfig.LOSSES[:n_losses]
    names = [*(f"train_{t}_loss" for t in terms), "train_weighted_loss", *(f"weight_{t}" for t in terms)]
    names += [*(f"val_{t}_loss" for t in terms), *(f"val_a_{m}" for m in task_metrics.get("a", ()))]
    names += [f"val_b_{m}" for m in task_metrics.get("b", ())]
    return (*names, "val_total_loss", "lr_a", "lr_b", "opt_steps_a", "opt_steps_b", "peak_memory_mb")
