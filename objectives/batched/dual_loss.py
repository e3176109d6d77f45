"""The dual-loss loop for K configurations at once: one vectorized program, each member its own training.

Read it beside :mod:`objectives.dual_loss`: the same steps in the same order, over a leading member
axis. Every member starts from the model its standalone run would build (same seed), draws the same
batches (its own generator), gets the same weights and learning rates (its own weight schedule and LR
schedule) and the same update (:class:`~objectives.batched.optim.BatchedOptimizer`), so its metrics
equal its standalone run's: to float64 round-off in float64, to float32 round-off in float32 (the
batched matrix products may round differently from the unbatched ones). Members differ only in what
:data:`objectives.batched.VARIES` lists; :func:`objectives.batched.rules.why_not` says why a set of configs
cannot be one group.

A member stops on its own: its reporter raised (pruned, early-stopped), or its loss became NaN or
infinite. It then leaves the group (its rows are dropped from every stacked tensor) and the others go
on exactly as before; its result is the exception that stopped it.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch.func import functional_call, vmap

from objectives.batched.common import (
    clipped,
    end_epoch,
    member_model,
    not_finite,
    schedule,
    stacked_batches,
    strategy_weights,
)
from objectives.batched.optim import BatchedOptimizer
from objectives.batched.rules import why_not
from objectives.config import DualLossConfig
from objectives.data import epoch_steps, take, val_batches, weighted_means
from objectives.helpers import (
    Checkpoint,
    Reporter,
    derive_seed,
    plan_epoch,
    seed_all,
)
from objectives.numerics import peak_memory_mb, reset_peak_memory
from objectives.problems import Problem, Task, prepare
from objectives.weight_schedules import weight_table
from objectives.weighting import make as make_weighting

Result = dict[str, float] | BaseException


def train_group(
    cfgs: Sequence[DualLossConfig],
    reports: Sequence[Reporter | None],
    problem: Problem | None = None,
    checkpoints: Sequence[Checkpoint | None] | None = None,
) -> list[Result]:
    """Train ``len(cfgs)`` configurations as one program; each member as :func:`objectives.dual_loss.train`.

    Args:
        cfgs: Resolved configs that :func:`objectives.batched.rules.why_not` accepts as one group.
        reports: Each member's reporter, called after each of its epochs; what it raises stops that member.
        problem: The problem, already built (the runner's cache); built from ``cfgs[0]`` when omitted.
        checkpoints: Each member's checkpoint callback (``{"model": ...}``), called before its reporter.

    Returns:
        Per member: its last epoch's metrics, or the exception that stopped it (raised by its reporter,
        or :class:`~objectives.helpers.NonFiniteLossError`).

    Raises:
        ValueError: the configs cannot be one group (the reason from :func:`objectives.batched.rules.why_not`).
    """
    # 1. One problem, on the device once; the group's configs must differ only where vectorizable.
    first, device, problem = prepare(cfgs[0], problem, Problem)
    cfgs = [prepare(c, problem, Problem)[0] for c in cfgs]
    why = why_not(cfgs, problem)
    if why:
        raise ValueError(why)
    checkpoints = checkpoints or [None] * len(cfgs)
    tasks = {"a": problem.a, "b": problem.b}
    reset_peak_memory(device)

    # 2. Each member's model initialised as its standalone run would (its seed), then stacked: one
    #    (K, ...) tensor per parameter; the module itself runs on the meta device as a template.
    models = []
    for c in cfgs:
        seed_all(c.seed)
        models.append(problem.make_model().to(device))
    template = copy.deepcopy(models[0]).to("meta")
    params = {
        name: torch.stack([dict(m.named_parameters())[name].detach() for m in models]).requires_grad_()
        for name, _ in models[0].named_parameters()
    }
    optimizer = BatchedOptimizer([c.optimizer for c in cfgs], params)
    generators = [torch.Generator(device=device).manual_seed(c.seed) for c in cfgs]

    # 3. The epoch plan is every member's (same data, batch sizes, mixing and steps per epoch).
    batch_sizes = (first.batch_size, first.batch_size_b or first.batch_size)
    sizes = (len(problem.a.train[1]), len(problem.b.train[1]))
    per_pass = tuple(
        epoch_steps(task.train, bs, first.data, task.steps_per_epoch)
        for task, bs in zip(tasks.values(), batch_sizes, strict=True)
    )
    plan = plan_epoch(sizes, batch_sizes, first.mixing, (per_pass[0], per_pass[1]))
    total_steps = first.epochs * plan.steps

    # 4. Per-member weights (static × weight schedule) as one (steps, K, 2) table; per-member LR schedules
    #    drive a stand-in optimizer each (torch's schedulers, read one epoch ahead into a table).
    wtable = torch.stack(
        [weight_table(c.weight_schedule, c.weights, c.LOSSES, total_steps, device) for c in cfgs], dim=1
    )
    accum = first.grad_accum_steps
    updates_per_epoch = math.ceil(plan.steps / accum)
    schedules = [schedule(c.optimizer, first.epochs * updates_per_epoch, updates_per_epoch) for c in cfgs]
    # Dynamic strategies whose weights come before the backward (DWA, RLW): one instance per member,
    # seeded as its standalone run's, asked for its row's weights each step.
    strategies = [make_weighting(c.weighting, 2, device, derive_seed(c.seed, "weighting")) for c in cfgs]
    static = first.weighting.type == "static"

    members = list(range(len(cfgs)))  # original index of each row still training
    results: list[Result | None] = [None] * len(cfgs)

    def losses_of(p: dict[str, torch.Tensor], batch_a: tuple[Any, ...], batch_b: tuple[Any, ...]) -> torch.Tensor:
        loss_a = problem.a.loss(_output(template, p, problem.a, batch_a[0]), batch_a[1])
        return torch.stack([loss_a, problem.b.loss(_output(template, p, problem.b, batch_b[0]), batch_b[1])])

    batched_losses = vmap(losses_of)

    def leave(stopped: dict[int, BaseException]) -> list[int]:
        """The members at rows ``stopped`` leave the group (their result: why); returns the rows kept."""
        nonlocal wtable
        for row, why in stopped.items():
            results[members[row]] = why
        keep = [row for row in range(len(members)) if row not in stopped]
        index = torch.tensor(keep, dtype=torch.long, device=device)  # long even when no member is left
        for name in params:
            params[name] = params[name].detach()[index].requires_grad_()
        optimizer.select(index)
        wtable = wtable[:, index]
        for row in sorted(stopped, reverse=True):
            del members[row], generators[row], schedules[row], strategies[row]
        return keep

    step = 0
    for epoch in range(first.epochs):
        if not members:
            break
        template.train()
        # 5. Each member's batches from its own generator (a's then b's, as the standalone loop draws
        #    them), stacked: step i's indices are one (K, B_i) tensor per task.
        idx_a = stacked_batches(sizes[0], batch_sizes[0], plan.steps, generators, device)
        idx_b = stacked_batches(sizes[1], batch_sizes[1], plan.steps, generators, device)
        lrs = [[s.lr for s in schedules]]
        for _ in range(updates_per_epoch - 1):
            for s in schedules:
                s.schedule.after_step()
            lrs.append([s.lr for s in schedules])
        for s in schedules:
            s.schedule.after_step()
        scalars = optimizer.tables(lrs, device)
        k = len(members)
        loss_sums, weight_sums = torch.zeros(k, 2, device=device), torch.zeros(k, 2, device=device)
        weighted_sum = torch.zeros(k, device=device)
        grads: dict[str, torch.Tensor] = {}
        for i in range(plan.steps):
            # 6. Both losses of every member in one vectorized forward; a backward of the sum over members
            #    fills each member's gradient with its own Σ w_i L_i's (members share no parameter). With
            #    accumulation groups each batch's share is scaled by 1/group size and added up, as .grad is.
            losses = batched_losses(params, take(problem.a.train, idx_a[i]), take(problem.b.train, idx_b[i]))
            w = wtable[step] if static else strategy_weights(strategies, losses, wtable[step], first.mixing)
            factor = 1.0 / min(accum, plan.steps - i // accum * accum)
            for name, g in _gradients(params, w, losses, factor, first.mixing == "accumulate").items():
                grads[name] = grads[name] + g if name in grads else g
            if (i + 1) % accum == 0 or i + 1 == plan.steps:
                update = clipped(grads, [cfgs[m].grad_clip for m in members])
                optimizer.step(update, {key: table[i // accum] for key, table in scalars.items()})
                grads = {}
            loss_sums += losses.detach()
            weight_sums += w
            weighted_sum += (w * losses.detach()).sum(dim=1)
            # 7. A member whose running loss is not finite stops within 32 steps, as its standalone run.
            bad = not_finite(loss_sums, epoch, step)
            if bad:
                keep = leave(bad)
                loss_sums, weight_sums, weighted_sum = loss_sums[keep], weight_sums[keep], weighted_sum[keep]
                idx_a, idx_b = tuple(t[keep] for t in idx_a), tuple(t[keep] for t in idx_b)
                scalars = {key: table[:, keep] for key, table in scalars.items()}
                if not members:
                    break
            step += 1
        if not members:
            break
        step = (epoch + 1) * plan.steps

        # 8. Validate every member in one vectorized pass per chunk, then one transfer for everything.
        train_means = loss_sums / plan.steps
        for row, strategy in enumerate(strategies):
            strategy.end_epoch(train_means[row])
        weight_means = weight_sums / plan.steps
        columns = {
            "train_a_loss": train_means[:, 0],
            "train_b_loss": train_means[:, 1],
            "train_weighted_loss": weighted_sum / plan.steps,
            "weight_a": weight_means[:, 0],
            "weight_b": weight_means[:, 1],
            **_evaluate(template, params, tasks, first, device),
        }
        values = torch.stack([v.detach().float() for v in columns.values()], dim=1).tolist()
        peak = peak_memory_mb(device)

        # 9. Each member's epoch end, as the standalone loop's: finite check, plateau schedule, checkpoint,
        #    report. What a member's reporter raises stops that member only.
        rows = [
            {**dict(zip(columns, values[row], strict=True)), "lr": schedules[row].lr, "peak_memory_mb": peak}
            for row in range(len(members))
        ]
        stopped = end_epoch(
            epoch,
            members,
            rows,
            lambda row, loss: schedules[row].schedule.after_epoch(loss),
            lambda row, m: {"model": member_model(models[m], params, row)},
            checkpoints,
            reports,
            results,
        )
        if stopped:
            leave(stopped)
    return [r if r is not None else {} for r in results]


def _output(template: torch.nn.Module, params: dict[str, torch.Tensor], task: Task, inputs: Any) -> torch.Tensor:
    """The task's output of the model with ``params``, called as :func:`objectives.data.call` calls it."""
    if isinstance(inputs, dict):
        out = functional_call(template, params, (), inputs)
    else:
        out = functional_call(template, params, tuple(inputs) if isinstance(inputs, list | tuple) else (inputs,))
    return out if task.head is None else out[task.head]


def _gradients(
    params: dict[str, torch.Tensor], w: torch.Tensor, losses: torch.Tensor, factor: float, per_task: bool
) -> dict[str, torch.Tensor]:
    """Each member's gradient of its ``Σ w_i L_i · factor``, stacked like ``params``.

    ``per_task`` (``mixing: accumulate``): one backward per task, added in task order, as the standalone
    loop's two ``backward`` calls add into ``.grad`` (a parameter one task does not reach gets zeros).
    """
    tensors = list(params.values())
    if not per_task:
        return dict(zip(params, torch.autograd.grad(((w * losses).sum(dim=1) * factor).sum(), tensors), strict=True))
    total: list[torch.Tensor | None] = [None] * len(tensors)
    for task in range(losses.shape[1]):
        last = task == losses.shape[1] - 1
        part = torch.autograd.grad(
            (w[:, task] * losses[:, task] * factor).sum(), tensors, retain_graph=not last, allow_unused=True
        )
        total = [t if g is None else g if t is None else t + g for t, g in zip(total, part, strict=True)]
    return {name: torch.zeros_like(p) if g is None else g for (name, p), g in zip(params.items(), total, strict=True)}


@torch.no_grad()
def _evaluate(
    template: torch.nn.Module,
    params: dict[str, torch.Tensor],
    tasks: dict[str, Task],
    cfg: DualLossConfig,
    device: torch.device,
) -> dict[str, torch.Tensor]:
    """Every member's validation losses and metrics, ``(K,)`` tensors, as :func:`objectives.dual_loss.evaluate`."""
    template.eval()
    results: dict[str, torch.Tensor] = {}
    for name, task in tasks.items():
        fns = {"loss": task.loss, **task.metrics}

        def member(p: dict[str, torch.Tensor], batch: tuple[Any, ...], task: Task = task, fns: dict = fns) -> dict:
            out = _output(template, p, task, batch[0])
            return {key: fn(out, batch[1]) for key, fn in fns.items()}

        batched = vmap(member, in_dims=(0, None))
        batches = val_batches(task.val, cfg.eval_batch_size, cfg.data, device, task.collate_fn)
        for key, value in weighted_means(batches, lambda b, batched=batched: batched(params, b)).items():
            results[f"val_{name}_{key}"] = value
    results["val_total_loss"] = sum(results[f"val_{name}_loss"] for name in tasks)
    template.train()
    return results
