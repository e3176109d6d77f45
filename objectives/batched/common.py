"""What the vectorized loops share: per-member LR schedules, batches, clipping, strategy weights, views."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch

from objectives.config import OptimizerConfig
from objectives.helpers import (
    FINITE_CHECK_EVERY,
    Checkpoint,
    NonFiniteLossError,
    Reporter,
    build_optimizer,
    check_finite,
    epoch_batches,
)
from objectives.lr_schedules import LRSchedule
from objectives.weighting.base import Weighting


class Schedule:
    """A member's LR schedule, driving a stand-in optimizer whose ``lr`` is the member's."""

    def __init__(self, optimizer: torch.optim.Optimizer, schedule: LRSchedule) -> None:
        self.optimizer, self.schedule = optimizer, schedule

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]


def schedule(cfg: OptimizerConfig, total_steps: int, steps_per_epoch: int) -> Schedule:
    stand_in = torch.zeros(1, requires_grad=True)
    optimizer = build_optimizer([stand_in], cfg)
    schedule = LRSchedule(optimizer, cfg.schedule, total_steps, steps_per_epoch)
    optimizer.step()  # no gradient: changes nothing, but torch's schedulers expect a step before theirs
    return Schedule(optimizer, schedule)


def strategy_weights(
    strategies: Sequence[Weighting], losses: torch.Tensor, base: torch.Tensor, mixing: str
) -> torch.Tensor:
    """Each member's effective weights from its own strategy, ``(K, n)``, asked as the standalone loop asks
    (``mixing: accumulate`` passes the base weights for the losses: the weights come before any loss)."""
    rows = []
    for row, strategy in enumerate(strategies):
        seen = base[row] if mixing == "accumulate" else losses[row]
        rows.append(strategy.weights(seen, base[row]).detach())
    return torch.stack(rows)


def stacked_batches(
    n: int, batch_size: int, steps: int, generators: Sequence[torch.Generator], device: torch.device
) -> tuple[torch.Tensor, ...]:
    """``steps`` index batches per member (:func:`objectives.helpers.epoch_batches`), as ``(K, B_i)`` tensors."""
    per_member = [epoch_batches(n, batch_size, steps, g, device) for g in generators]
    split = [len(b) for b in per_member[0]]
    return torch.stack([torch.cat(batches) for batches in per_member]).split(split, dim=1)


def clipped(grads: dict[str, torch.Tensor], clips: Sequence[float | None]) -> dict[str, torch.Tensor]:
    """Each member's gradient clipped to its own norm as ``torch.nn.utils.clip_grad_norm_`` does (no sync)."""
    if all(c is None for c in clips):
        return grads
    some = next(iter(grads.values()))
    norms = torch.stack([torch.linalg.vector_norm(g.flatten(1), 2, dim=1) for g in grads.values()])
    total = torch.linalg.vector_norm(norms, 2, dim=0)
    limit = torch.tensor([c if c is not None else float("inf") for c in clips], dtype=some.dtype, device=some.device)
    coef = torch.clamp(limit / (total + 1e-6), max=1.0)
    return {name: g * coef.reshape(-1, *([1] * (g.dim() - 1))) for name, g in grads.items()}


@torch.no_grad()
def member_model(model: torch.nn.Module, params: dict[str, torch.Tensor], row: int) -> torch.nn.Module:
    """The member's own module, its parameters set to row ``row`` of the stacked ones (for checkpoints)."""
    for name, p in model.named_parameters():
        p.copy_(params[name][row])
    return model


def not_finite(
    loss_sums: torch.Tensor, epoch: int | Sequence[int], step: int | Sequence[int]
) -> dict[int, BaseException]:
    """Every ``FINITE_CHECK_EVERY`` steps, the rows whose running loss sums are NaN or infinite, each with
    the error its standalone run raises there (:func:`objectives.helpers.check_running_losses`).

    ``epoch`` and ``step``: the group's, or each row's own (members that joined later count their own)."""
    k = loss_sums.shape[0]
    epochs = [epoch] * k if isinstance(epoch, int) else list(epoch)
    steps = [step] * k if isinstance(step, int) else list(step)
    due = [row for row in range(k) if (steps[row] + 1) % FINITE_CHECK_EVERY == 0]
    if not due:
        return {}
    finite = torch.isfinite(loss_sums).all(dim=1).tolist()  # one host sync for every row due
    return {
        row: NonFiniteLossError(f"a training loss is not finite at epoch {epochs[row]}, step {steps[row]}")
        for row in due
        if not finite[row]
    }


def end_epoch(
    epoch: int | Sequence[int],
    members: Sequence[int],
    rows: Sequence[Mapping[str, float]],
    after_epoch: Callable[[int, float], None],
    models: Callable[[int, int], dict[str, torch.nn.Module]],
    checkpoints: Sequence[Checkpoint | None],
    reports: Sequence[Reporter | None],
    results: list,
) -> dict[int, BaseException]:
    """Each member's epoch end as its standalone loop's: finite check, plateau schedule, checkpoint, report.

    Args:
        epoch: The epoch (the group's, or each row's own).
        members: The original index of each row.
        rows: Each row's metrics of the epoch.
        after_epoch: ``after_epoch(row, val_total_loss)``: the row's epoch-wise LR schedule steps.
        models: ``models(row, member)``: the member's modules by name, holding its row's parameters.
        checkpoints: Checkpoint callbacks by member.
        reports: Reporters by member.
        results: By member: set to the epoch's metrics for each member that goes on.

    Returns:
        The rows that stop (a loss not finite, or their reporter raised), with why.
    """
    stopped: dict[int, BaseException] = {}
    epochs = [epoch] * len(members) if isinstance(epoch, int) else epoch
    for row, m in enumerate(members):
        metrics, at = dict(rows[row]), epochs[row]
        try:
            check_finite(metrics, at)
            after_epoch(row, metrics["val_total_loss"])
            if checkpoints[m] is not None:
                checkpoints[m](at, metrics, models(row, m))
            if reports[m] is not None:
                reports[m](at, metrics)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as e:  # that member stops; the others go on
            stopped[row] = e
            continue
        results[m] = metrics
    return stopped
