"""The alternating loop for K configurations at once: two coupled models per member, one program.

Read it beside :mod:`objectives.alternating`: the same steps in the same order over a leading member
axis. Every member builds A then B from its seed, draws its own batches, gets its own weights, learning
rates (per model) and updates (:class:`~objectives.batched.optim.BatchedOptimizer`, one per model), so
its metrics equal its standalone run's (to float64 round-off in float64, float32 round-off in float32).
A member stops alone (its reporter raised, or a loss became NaN or infinite) and leaves the group.

Each mode's step takes gradients only for the model(s) the standalone step updates: ``alternate`` A
steps for A (B is not updated), B steps for B (A's output enters B's loss as a value); ``b_on_detached``
A from its own loss and B from the rest on the detached code (and detached A parameters where the
problem's own consistency term calls A); ``joint`` both from every term. The problem's own consistency
term runs inside the vmap with the member's models as functions (:mod:`objectives.batched.coupled`).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, vmap

from objectives.batched.common import (
    Schedule,
    clipped,
    end_epoch,
    member_model,
    not_finite,
    schedule,
    stacked_batches,
    strategy_weights,
)
from objectives.batched.coupled import call, losses
from objectives.batched.optim import BatchedOptimizer
from objectives.batched.rules import why_not
from objectives.batched.slots import OnEnd, Refill, tell_ends
from objectives.config import AlternatingConfig
from objectives.data import epoch_steps, take, val_batches, weighted_means
from objectives.helpers import (
    Checkpoint,
    Reporter,
    build_optimizer,
    derive_seed,
    param_group,
    seed_all,
)
from objectives.lr_schedules import LRSchedule
from objectives.numerics import peak_memory_mb, reset_peak_memory
from objectives.problems import CoupledProblem, prepare
from objectives.weight_schedules import weight_table
from objectives.weighting import make as make_weighting

Result = dict[str, float] | BaseException


def train_group(
    cfgs: Sequence[AlternatingConfig],
    reports: Sequence[Reporter | None],
    problem: CoupledProblem | None = None,
    checkpoints: Sequence[Checkpoint | None] | None = None,
    refill: Refill | None = None,
    on_end: OnEnd | None = None,
) -> list[Result]:
    """Train ``len(cfgs)`` configurations as one program; each member as :func:`objectives.alternating.train`.

    Args:
        cfgs: Resolved configs that :func:`objectives.batched.rules.why_not` accepts as one group.
        reports: Each member's reporter; what it raises stops that member.
        problem: The coupled problem, already built; built from ``cfgs[0]`` when omitted.
        checkpoints: Each member's checkpoint callback (``{"model_a": ..., "model_b": ...}``).
        refill: Never asked: a joiner would be at another place of the A/B step cycle than the members
            (one kind of step per group step) and the ``opt_steps_*`` counts are the group's.
        on_end: Told each member's end as it happens: ``on_end(index, result)``.

    Returns:
        Per member: its last epoch's metrics, or the exception that stopped it.

    Raises:
        ValueError: the configs cannot be one group.
    """
    # 1. One problem on the device once; configs that differ only where vectorizable.
    first, device, problem = prepare(cfgs[0], problem, CoupledProblem)
    cfgs = [prepare(c, problem, CoupledProblem)[0] for c in cfgs]
    why = why_not(cfgs, problem)
    if why:
        raise ValueError(why)
    checkpoints = checkpoints or [None] * len(cfgs)
    reset_peak_memory(device)

    # 2. Each member's A and B built as its standalone run builds them (its seed, A first), then stacked.
    models_a, models_b = [], []
    for c in cfgs:
        seed_all(c.seed)
        models_a.append(problem.make_model_a().to(device))
        models_b.append(problem.make_model_b().to(device))
    tmpl_a, tmpl_b = copy.deepcopy(models_a[0]).to("meta"), copy.deepcopy(models_b[0]).to("meta")
    pa, pb = _stacked(models_a), _stacked(models_b)
    opt_a = BatchedOptimizer([c.model_a.optimizer for c in cfgs], pa)
    opt_b = BatchedOptimizer([c.model_b.optimizer for c in cfgs], pb)  # joint: group b's settings, the same maths
    generators = [torch.Generator(device=device).manual_seed(c.seed) for c in cfgs]

    # 3. The epoch, the weights, the strategies and the LR schedules, as the standalone loop plans them.
    n, bs = len(problem.train[1]), first.batch_size
    per_pass = epoch_steps(problem.train, bs, first.data, problem.steps_per_epoch)  # as the standalone Source
    cycle = first.steps_a + first.steps_b
    steps_per_epoch = per_pass
    if first.epoch == "model_steps" and first.mode == "alternate":
        steps_per_epoch = math.ceil(per_pass * cycle / min(first.steps_a, first.steps_b))
    total = first.epochs * steps_per_epoch
    terms_on = first.loss_terms  # the same in every member (group_key)
    n_losses = len(terms_on)
    wtable = torch.stack([weight_table(c.weight_schedule, c.weights, terms_on, total, device) for c in cfgs], dim=1)
    strategies = [make_weighting(c.weighting, n_losses, device, derive_seed(c.seed, "weighting")) for c in cfgs]
    static = first.weighting.type == "static"

    def stepped(step: int) -> str:
        if first.mode == "alternate":
            return "a" if step % cycle < first.steps_a else "b"
        return "ab"

    a_steps = sum(1 for s in range(total) if stepped(s) == "a") if first.mode == "alternate" else total
    b_steps = total - a_steps if first.mode == "alternate" else total
    sched = [_Schedules(c, a_steps, b_steps) for c in cfgs]
    opt_steps = {"a": 0, "b": 0}

    def terms_of(p_a: dict, p_b: dict, batch: tuple[Any, ...]) -> torch.Tensor:
        z = call(tmpl_a, p_a, batch[0])
        if first.mode != "b_on_detached":
            return losses(problem, tmpl_a, p_a, tmpl_b, p_b, batch, z, terms_on)
        # A learns from its own loss; B from the rest on the code (A a constant where the consistency calls it).
        own = problem.loss_a(z, batch[2]).unsqueeze(0)
        fixed_a = {name: p.detach() for name, p in p_a.items()}
        return torch.cat([own, losses(problem, tmpl_a, fixed_a, tmpl_b, p_b, batch, z.detach(), terms_on)[1:]])

    batched_terms = vmap(terms_of)
    members = list(range(len(cfgs)))
    results: list[Result | None] = [None] * len(cfgs)

    def leave(stopped: dict[int, BaseException]) -> list[int]:
        nonlocal wtable
        for row, why in stopped.items():
            results[members[row]] = why
        keep = [row for row in range(len(members)) if row not in stopped]
        index = torch.tensor(keep, dtype=torch.long, device=device)  # long even when no member is left
        for params, opt in ((pa, opt_a), (pb, opt_b)):
            for name in params:
                params[name] = params[name].detach()[index].requires_grad_()
            opt.select(index)
        wtable = wtable[:, index]
        gone = [members[row] for row in sorted(stopped)]
        for row in sorted(stopped, reverse=True):
            del members[row], generators[row], sched[row], strategies[row]
        tell_ends(on_end, [(m, results[m]) for m in gone])  # type: ignore[misc]
        return keep

    step = 0
    for epoch in range(first.epochs):
        if not members:
            break
        # 4. The epoch's batches (each member's generator) and each model's LRs for its updates in it.
        idx = stacked_batches(n, bs, steps_per_epoch, generators, device)
        kinds = [stepped(s) for s in range(step, step + steps_per_epoch)]
        lrs: dict[str, list[list[float]]] = {"a": [], "b": []}
        for kind in kinds:
            for model in kind:
                lrs[model].append([s.lr(model) for s in sched])
            for s in sched:
                s.after_step(kind)
        tables = {"a": opt_a.tables(lrs["a"], device), "b": opt_b.tables(lrs["b"], device)}
        used = {"a": 0, "b": 0}
        k = len(members)
        loss_sums, weight_sums = torch.zeros(k, n_losses, device=device), torch.zeros(k, n_losses, device=device)
        weighted_sum = torch.zeros(k, device=device)
        for i, kind in enumerate(kinds):
            # 5. Every member's terms in one vectorized forward; gradients for the model(s) this step trains.
            terms = batched_terms(pa, pb, take(problem.train, idx[i]))
            base = wtable[step]
            w = base if static else strategy_weights(strategies, terms, base, "cycle")
            trained = [(pa, opt_a, "a"), (pb, opt_b, "b")]
            trained = [entry for entry in trained if entry[2] in kind]
            tensors = [p for params, _, _ in trained for p in params.values()]
            grads = iter(torch.autograd.grad((w * terms).sum(), tensors))
            for params, opt, model in trained:
                g = {name: next(grads) for name in params}
                clips = [(cfgs[m].model_a if model == "a" else cfgs[m].model_b).grad_clip for m in members]
                opt.step(clipped(g, clips), {key: table[used[model]] for key, table in tables[model].items()})
                used[model] += 1
                opt_steps[model] += 1
            loss_sums += terms.detach()
            weight_sums += w
            weighted_sum += (w * terms.detach()).sum(dim=1)
            # 6. A member whose running loss is not finite stops within 32 steps, as its standalone run.
            bad = not_finite(loss_sums, epoch, step)
            if bad:
                keep = leave(bad)
                loss_sums, weight_sums, weighted_sum = loss_sums[keep], weight_sums[keep], weighted_sum[keep]
                idx = tuple(t[keep] for t in idx)
                tables = {m: {key: t[:, keep] for key, t in tab.items()} for m, tab in tables.items()}
                if not members:
                    break
            step += 1
        if not members:
            break
        step = (epoch + 1) * steps_per_epoch

        # 7. Validate every member at once, then one transfer for everything.
        train_means = loss_sums / steps_per_epoch
        for row, strategy in enumerate(strategies):
            strategy.end_epoch(train_means[row])
        weight_means = weight_sums / steps_per_epoch
        columns = {f"train_{name}_loss": train_means[:, j] for j, name in enumerate(terms_on)}
        columns["train_weighted_loss"] = weighted_sum / steps_per_epoch
        columns.update({f"weight_{name}": weight_means[:, j] for j, name in enumerate(terms_on)})
        columns.update(_evaluate(problem, tmpl_a, tmpl_b, pa, pb, first, device))
        values = torch.stack([v.detach().float() for v in columns.values()], dim=1).tolist()
        peak = peak_memory_mb(device)

        # 8. Each member's epoch end as the standalone loop's: finite check, plateau, checkpoint, report.
        steps = {"opt_steps_a": float(opt_steps["a"]), "opt_steps_b": float(opt_steps["b"])}
        rows = [
            {
                **dict(zip(columns, values[row], strict=True)),
                **{"lr_a": sched[row].lr("a"), "lr_b": sched[row].lr("b"), **steps, "peak_memory_mb": peak},
            }
            for row in range(len(members))
        ]
        stopped = end_epoch(
            epoch,
            members,
            rows,
            lambda row, loss: sched[row].after_epoch(loss),
            lambda row, m: {
                "model_a": member_model(models_a[m], pa, row),
                "model_b": member_model(models_b[m], pb, row),
            },
            checkpoints,
            reports,
            results,
        )
        if stopped:
            leave(stopped)
    tell_ends(on_end, [(m, results[m] if results[m] is not None else {}) for m in members])  # every epoch trained
    return [r if r is not None else {} for r in results]


class _Schedules:
    """A member's LR schedules: A's and B's on stand-in optimizers, or in ``joint`` mode one optimizer with a
    group per model and one schedule, exactly as its standalone run builds them."""

    def __init__(self, cfg: AlternatingConfig, a_steps: int, b_steps: int) -> None:
        def stand_in() -> nn.Module:
            module = nn.Module()
            module.p = nn.Parameter(torch.zeros(1))
            return module

        epochs = cfg.epochs
        self.joint = cfg.mode == "joint"
        if self.joint:
            groups = [param_group(stand_in(), cfg.model_a.optimizer), param_group(stand_in(), cfg.model_b.optimizer)]
            joint = build_optimizer(groups, cfg.model_a.optimizer)
            schedule = LRSchedule(joint, cfg.model_a.optimizer.schedule, a_steps, math.ceil(a_steps / epochs))
            joint.step()  # no gradients: changes nothing; torch's schedulers expect a step before theirs
            self.a = self.b = Schedule(joint, schedule)
            return
        self.a = _single(cfg.model_a.optimizer, a_steps, epochs)
        self.b = _single(cfg.model_b.optimizer, b_steps, epochs)

    def lr(self, model: str) -> float:
        if self.joint:
            return self.a.optimizer.param_groups[0 if model == "a" else 1]["lr"]
        return (self.a if model == "a" else self.b).lr

    def after_step(self, kind: str) -> None:
        for model in ("a",) if self.joint else kind:
            (self.a if model == "a" else self.b).schedule.after_step()

    def after_epoch(self, metric: float) -> None:
        for s in (self.a,) if self.joint else (self.a, self.b):
            s.schedule.after_epoch(metric)


def _single(cfg: Any, steps: int, epochs: int) -> Schedule:
    return schedule(cfg, steps, math.ceil(steps / epochs))


def _stacked(models: Sequence[nn.Module]) -> dict[str, torch.Tensor]:
    names = [name for name, _ in models[0].named_parameters()]
    return {
        name: torch.stack([dict(m.named_parameters())[name].detach() for m in models]).requires_grad_()
        for name in names
    }


@torch.no_grad()
def _evaluate(
    problem: CoupledProblem,
    tmpl_a: nn.Module,
    tmpl_b: nn.Module,
    pa: dict[str, torch.Tensor],
    pb: dict[str, torch.Tensor],
    cfg: AlternatingConfig,
    device: torch.device,
) -> dict[str, torch.Tensor]:
    """Every member's validation values, ``(K,)`` tensors, as :func:`objectives.alternating.evaluate`."""
    tmpl_a.eval()
    tmpl_b.eval()

    def member(p_a: dict, p_b: dict, batch: tuple[Any, ...]) -> dict[str, torch.Tensor]:
        _, y, t = batch
        z = call(tmpl_a, p_a, batch[0])
        terms = losses(problem, tmpl_a, p_a, tmpl_b, p_b, batch, z, cfg.loss_terms)
        out = functional_call(tmpl_b, p_b, (z,))
        means = {f"val_{name}_loss": terms[j] for j, name in enumerate(cfg.loss_terms)}
        means.update({f"val_a_{key}": fn(z, t) for key, fn in problem.metrics_a.items()})
        means.update({f"val_b_{key}": fn(out, y) for key, fn in problem.metrics.items()})
        return means

    batched = vmap(member, in_dims=(0, 0, None))
    batches = val_batches(problem.val, cfg.eval_batch_size, cfg.data, device, problem.collate_fn)
    results = weighted_means(batches, lambda b: batched(pa, pb, b))
    results["val_total_loss"] = results["val_a_loss"] + results["val_b_loss"]
    tmpl_a.train()
    tmpl_b.train()
    return results
