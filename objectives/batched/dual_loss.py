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
on exactly as before; its result is the exception that stopped it. Its row, or that of a member that
trained all its epochs, may be taken by a new member at the epoch's end (``refill``,
:mod:`objectives.batched.slots`): each member counts its own epochs and steps.
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
from objectives.batched.rules import why_not
from objectives.batched.slots import JoinableOptimizer, OnEnd, Refill, Row, epoch_weights, join_params, tell_ends
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
    refill: Refill | None = None,
    on_end: OnEnd | None = None,
) -> list[Result]:
    """Train ``len(cfgs)`` configurations as one program; each member as :func:`objectives.dual_loss.train`.

    Args:
        cfgs: Resolved configs that :func:`objectives.batched.rules.why_not` accepts as one group.
        reports: Each member's reporter, called after each of its epochs; what it raises stops that member.
        problem: The problem, already built (the runner's cache); built from ``cfgs[0]`` when omitted.
        checkpoints: Each member's checkpoint callback (``{"model": ...}``), called before its reporter.
        refill: Asked for a new member for each row freed in an epoch (:mod:`objectives.batched.slots`).
        on_end: Told each member's end as it happens: ``on_end(index, result)``.

    Returns:
        Per member (then per joiner, in the order they joined): its last epoch's metrics, or the exception
        that stopped it (raised by its reporter, or :class:`~objectives.helpers.NonFiniteLossError`).

    Raises:
        ValueError: the configs cannot be one group (the reason from :func:`objectives.batched.rules.why_not`).
    """
    # 1. One problem, on the device once; the group's configs must differ only where vectorizable.
    first, device, problem = prepare(cfgs[0], problem, Problem)
    cfgs = [prepare(c, problem, Problem)[0] for c in cfgs]
    why = why_not(cfgs, problem)
    if why:
        raise ValueError(why)
    reports, checkpoints = list(reports), list(checkpoints or [None] * len(cfgs))
    tasks = problem.in_order(first.tasks)
    reset_peak_memory(device)

    # 2. The epoch plan is every member's (same data, batch sizes, mixing and steps per epoch).
    batch_sizes = tuple(first.batch_size_of(name) for name in tasks)
    sizes = tuple(len(task.train[1]) for task in tasks.values())
    per_pass = tuple(
        epoch_steps(task.train, bs, first.data, task.steps_per_epoch)
        for task, bs in zip(tasks.values(), batch_sizes, strict=True)
    )
    plan = plan_epoch(sizes, batch_sizes, first.mixing, per_pass)
    accum = first.grad_accum_steps
    updates_per_epoch = math.ceil(plan.steps / accum)
    static = first.weighting.type == "static"

    def member(index: int, c: DualLossConfig) -> tuple[Row, torch.nn.Module]:
        """3. A member's own state, as its standalone run makes it: its model from its seed, its weights
        (static × weight schedule, by its own step), LR schedule (torch's schedulers on a stand-in
        optimizer, read one epoch ahead), batches' generator and strategy (DWA, RLW: seeded as its run's)."""
        seed_all(c.seed)
        model = problem.make_model().to(device)
        weights = weight_table(c.weight_schedule, c.weights, c.tasks, c.epochs * plan.steps, device)
        lrs = schedule(c.optimizer, c.epochs * updates_per_epoch, updates_per_epoch)
        generator = torch.Generator(device=device).manual_seed(c.seed)
        strategy = make_weighting(c.weighting, len(tasks), device, derive_seed(c.seed, "weighting"))
        return Row(index, c, 0, weights, lrs, generator, strategy), model

    # 4. The members' parameters stacked: one (K, ...) tensor per parameter; the module itself runs on the
    #    meta device as a template. Each member's own module stays for its checkpoints.
    rows: list[Row] = []
    models: list[torch.nn.Module | None] = []
    for index, c in enumerate(cfgs):
        row, model = member(index, c)
        rows.append(row)
        models.append(model)
    built = [m for m in models if m is not None]
    template = copy.deepcopy(built[0]).to("meta")
    params = {
        name: torch.stack([dict(m.named_parameters())[name].detach() for m in built]).requires_grad_()
        for name, _ in built[0].named_parameters()
    }
    optimizer = JoinableOptimizer([c.optimizer for c in cfgs], params)
    results: list[Result | None] = [None] * len(cfgs)
    slots = len(cfgs)

    def losses_of(p: dict[str, torch.Tensor], *batches: tuple[Any, ...]) -> torch.Tensor:
        pairs = zip(tasks.values(), batches, strict=True)
        return torch.stack([task.loss(_output(template, p, task, batch[0]), batch[1]) for task, batch in pairs])

    batched_losses = vmap(losses_of)

    def leave(ended: dict[int, Result]) -> list[int]:
        """The members at rows ``ended`` leave the group (their result: why, or their metrics); returns the
        rows kept. Each end is told (``on_end``) once the group is without it."""
        gone = [(rows[row].index, result) for row, result in sorted(ended.items())]
        keep = [row for row in range(len(rows)) if row not in ended]
        index = torch.tensor(keep, dtype=torch.long, device=device)  # long even when no member is left
        for name in params:
            params[name] = params[name].detach()[index].requires_grad_()
        optimizer.select(index)
        rows[:] = [rows[row] for row in keep]
        for m, result in gone:
            results[m], models[m] = result, None
        tell_ends(on_end, gone)
        return keep

    def fits(c: Any) -> bool:
        return not why_not([first, prepare(c, problem, Problem)[0]], problem)

    def fill() -> None:
        """5. Each free row asked for a new member (``refill``): it joins at its own epoch 0. One that does not
        fit, or whose building failed (its model out of memory, say), ends at once with why; the group goes on."""
        while refill is not None and len(rows) < slots:
            joiner = refill(fits, slots - len(rows))
            if joiner is None:
                return
            m = len(results)
            results.append({})  # its result when it trains no epoch
            models.append(None)
            reports.append(joiner.report)
            checkpoints.append(joiner.checkpoint)
            try:
                c = prepare(joiner.cfg, problem, Problem)[0]
                why = why_not([first, c], problem)
                if why:
                    raise ValueError(f"it cannot join the group: {why}")
                if c.epochs:
                    row, model = member(m, c)
                    models[m] = model
                    optimizer.join(c.optimizer)
                    join_params(params, model)  # all its rows or none
                    rows.append(row)
                    continue
            except Exception as e:
                results[m], models[m] = e, None
                optimizer.select(torch.arange(len(rows), device=device))  # the row it may have joined
            tell_ends(on_end, [(m, results[m])])  # type: ignore[list-item]

    if first.epochs == 0:  # every member: no epoch to train
        leave({row: {} for row in range(len(rows))})
    while True:
        fill()
        if not rows:
            break
        template.train()
        # 6. Each member's batches from its own generator (task by task, as the standalone loop draws
        #    them), stacked: step i's indices are one (K, B_i) tensor per task.
        generators = [r.generator for r in rows]
        indices = [
            stacked_batches(n, bs, plan.steps, generators, device) for n, bs in zip(sizes, batch_sizes, strict=True)
        ]
        lrs = [[r.schedule.lr for r in rows]]
        for _ in range(updates_per_epoch - 1):
            for r in rows:
                r.schedule.schedule.after_step()
            lrs.append([r.schedule.lr for r in rows])
        for r in rows:
            r.schedule.schedule.after_step()
        scalars = optimizer.tables(lrs, device)
        wtable = epoch_weights(rows, plan.steps)
        k = len(rows)
        loss_sums, weight_sums = torch.zeros(k, len(tasks), device=device), torch.zeros(k, len(tasks), device=device)
        weighted_sum = torch.zeros(k, device=device)
        grads: dict[str, torch.Tensor] = {}
        for i in range(plan.steps):
            # 7. Both losses of every member in one vectorized forward; a backward of the sum over members
            #    fills each member's gradient with its own Σ w_i L_i's (members share no parameter). With
            #    accumulation groups each batch's share is scaled by 1/group size and added up, as .grad is.
            batches = (take(task.train, idx[i]) for task, idx in zip(tasks.values(), indices, strict=True))
            losses = batched_losses(params, *batches)
            strategies = [r.strategy for r in rows]
            w = wtable[i] if static else strategy_weights(strategies, losses, wtable[i], first.mixing)
            factor = 1.0 / min(accum, plan.steps - i // accum * accum)
            for name, g in _gradients(params, w, losses, factor, first.mixing == "accumulate").items():
                grads[name] = grads[name] + g if name in grads else g
            if (i + 1) % accum == 0 or i + 1 == plan.steps:
                update = clipped(grads, [r.cfg.grad_clip for r in rows])
                optimizer.step(update, {key: table[i // accum] for key, table in scalars.items()})
                grads = {}
            loss_sums += losses.detach()
            weight_sums += w
            weighted_sum += (w * losses.detach()).sum(dim=1)
            # 8. A member whose running loss is not finite stops within 32 of its steps, as its standalone run.
            bad = not_finite(loss_sums, [r.epoch for r in rows], [r.step(plan.steps, i) for r in rows])
            if bad:
                keep = leave(bad)  # type: ignore[arg-type]
                loss_sums, weight_sums, weighted_sum = loss_sums[keep], weight_sums[keep], weighted_sum[keep]
                indices = [tuple(t[keep] for t in idx) for idx in indices]
                scalars = {key: table[:, keep] for key, table in scalars.items()}
                grads = {name: g[keep] for name, g in grads.items()}  # mid-accumulation: the others' pending sums
                wtable = wtable[:, keep]
                if not rows:
                    break
        if not rows:
            continue  # every member left within the epoch: their rows are refilled first

        # 9. Validate every member in one vectorized pass per chunk, then one transfer for everything.
        train_means = loss_sums / plan.steps
        for row, r in enumerate(rows):
            r.strategy.end_epoch(train_means[row])
        weight_means = weight_sums / plan.steps
        columns = {
            **{f"train_{name}_loss": train_means[:, j] for j, name in enumerate(tasks)},
            "train_weighted_loss": weighted_sum / plan.steps,
            **{f"weight_{name}": weight_means[:, j] for j, name in enumerate(tasks)},
            **_evaluate(template, params, tasks, first, device),
        }
        values = torch.stack([v.detach().float() for v in columns.values()], dim=1).tolist()
        peak = peak_memory_mb(device)

        # 10. Each member's epoch end, as the standalone loop's: finite check, plateau schedule, checkpoint,
        #     report (each at its own epoch). What a member's reporter raises stops that member only; a
        #     member that trained its last epoch leaves too. Either frees its row for the next member.
        metrics = [
            {**dict(zip(columns, values[row], strict=True)), "lr": r.schedule.lr, "peak_memory_mb": peak}
            for row, r in enumerate(rows)
        ]
        stopped: dict[int, Result] = dict(
            end_epoch(
                [r.epoch for r in rows],
                [r.index for r in rows],
                metrics,
                lambda row, loss: rows[row].schedule.schedule.after_epoch(loss),
                lambda row, m: {"model": member_model(models[m], params, row)},  # type: ignore[arg-type]
                checkpoints,
                reports,
                results,
            )
        )
        for row, r in enumerate(rows):
            r.epoch += 1
            if row not in stopped and r.epoch == r.cfg.epochs:
                stopped[row] = results[r.index]  # type: ignore[assignment]  # its last metrics (end_epoch)
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
