"""A configuration's value over several seeds: ``repeats`` models, one per seed, reported as their mean.

On a small problem one training's value is largely its seed's luck (model initialisation and batch order:
on ``digits_pair`` one configuration's validation loss spans 0.70–1.03 over seven seeds), so a search that
compares single trainings chases noise and names a lucky seed its best. With ``repeats: S`` a trial trains
its configuration with S seeds — its own ``seed`` and S−1 derived from it (:func:`seeds`) — and its
reporter sees, every epoch, each metric's mean over the seeds, plus ``<metric>_sd`` (their sample standard
deviation) for the validation metrics: pruning, early stopping and the trial's value all act on the mean.

How it runs:
  1. the seeds' configs differ only in their seed, so where the loop has a vectorized form that accepts
     them (:func:`objectives.loops.why_not`) they train as one group: S models for about the wall time of
     one on a device with room (:mod:`objectives.batched`; each member as it trains alone);
  2. otherwise one after another: the other seeds first, their metrics kept, then the first seed, whose
     every epoch is reported with the mean — so pruning can still stop its training, and the kept weights
     are the first seed's, at the epoch the mean chose;
  3. a member whose loss stops being finite fails the whole configuration (a config that diverges on one
     seed in S is not one to pick); whatever the reporter raises (pruned, early stopped) stops every seed —
     in a group, the members that already reported that epoch leave at their next report, one epoch on,
     as do the other members of a group once one has diverged (:class:`SeedGone`);
  4. a group that runs out of memory before its first epoch is reported (S models need S× the memory of one)
     trains one after another instead, with a warning.

Checkpoints are the first seed's models (``weights.pt`` holds one model, as with one seed) with the mean's
metrics. Nothing here imports Optuna or MLflow.
"""

from __future__ import annotations

import math
import statistics
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from objectives.config import LoopCommon
from objectives.helpers import derive_seed, is_out_of_memory

Metrics = Mapping[str, float]
Report = Callable[[int, Metrics], None]
Save = Callable[[int, Metrics, Mapping[str, torch.nn.Module]], None]
PEAK = "peak_memory_mb"  # a vectorized group's peak is the group's, reported by each member


def seeds(cfg: LoopCommon) -> list[int]:
    """The seeds of ``cfg``'s repeats: its own, then ``repeats − 1`` derived from it (stable across runs)."""
    assert cfg.seed is not None, "a resolved config has its seed"
    return [cfg.seed] + [derive_seed(cfg.seed, "repeat", i) for i in range(1, cfg.repeats)]


def members(cfg: LoopCommon) -> list[LoopCommon]:
    """One config per seed, each with ``repeats: 1``: what each repeat trains."""
    return [cfg.model_copy(update={"seed": s, "repeats": 1}) for s in seeds(cfg)]


def mean_metrics(rows: Sequence[Metrics]) -> dict[str, float]:
    """Each metric's mean over ``rows`` (one per seed), and ``<name>_sd`` for the validation metrics; the
    peak memory is the highest (what the configuration needs)."""
    out: dict[str, float] = {}
    for name in rows[0]:
        values = [float(row[name]) for row in rows]
        out[name] = max(values) if name == PEAK else math.fsum(values) / len(values)
        if name.startswith("val_") and len(values) > 1:
            out[f"{name}_sd"] = statistics.stdev(values)
    return out


class SeedGone(Exception):
    """Raised at a group member's report once another member stopped without reporting an epoch (its loss
    stopped being finite): the configuration has failed, so no seed trains on (nor holds the trial without
    reporting, as the watchdog's ``stall_timeout`` would see it)."""


class _Mean:
    """Collects the seeds' epochs; once every seed has reported epoch ``e``, saves (with the first seed's
    models) and reports the mean. Whatever the outer reporter raised is raised again at each seed's next
    report, so every seed stops."""

    def __init__(self, n: int, report: Report | None, save: Save | None) -> None:
        self.n, self.report, self.save = n, report, save
        self.epochs: dict[int, dict[int, Metrics]] = {}
        self.models: dict[int, Mapping[str, torch.nn.Module]] = {}  # the first seed's, by epoch
        self.stop: BaseException | None = None
        self.last: dict[str, float] = {}

    def checkpoint(self, member: int) -> Save:
        def keep(epoch: int, metrics: Metrics, models: Mapping[str, torch.nn.Module]) -> None:
            if member == 0:
                self.models[epoch] = models

        return keep

    def reporter(self, member: int) -> Report:
        def report(epoch: int, metrics: Metrics) -> None:
            if self.stop is not None:
                raise self.stop
            if any(e < epoch for e in self.epochs):  # a seed never reported an earlier epoch: it diverged
                raise SeedGone(f"another seed stopped before epoch {epoch}")
            row = self.epochs.setdefault(epoch, {})
            row[member] = dict(metrics)
            if len(row) == self.n:
                self.emit(epoch)

        return report

    def emit(self, epoch: int) -> None:
        row = self.epochs.pop(epoch)
        self.last = mean_metrics([row[m] for m in range(self.n)])
        models = self.models.pop(epoch, None)
        try:
            if self.save is not None and models is not None:
                self.save(epoch, self.last, models)
            if self.report is not None:
                self.report(epoch, self.last)
        except BaseException as e:
            self.stop = e
            raise


def train_repeats(
    cfg: LoopCommon,
    report: Report | None,
    *,
    problem: Any,
    checkpoint: Save | None,
    train: Callable[..., dict[str, float]],
    train_group: Callable[..., list[Any]] | None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, float]:
    """Train ``cfg`` once per seed (see the module's docstring) and return the last epoch's mean metrics.

    Args:
        cfg: A resolved config with ``repeats`` > 1.
        report: The per-epoch callback: it sees the seeds' mean.
        problem: The built problem (shared by every seed: the same data).
        checkpoint: Called with the mean's metrics and the first seed's models, before ``report``.
        train: The loop's ``train`` (one seed).
        train_group: Its vectorized form, when the seeds can train as one group (else ``None``).
        progress: Called with each epoch of the seeds trained before the first (one after another), which
            report nothing (the runner's watchdog: :meth:`sweep.trials.watchdog.Watchdog.progress`).

    Raises:
        Whatever stopped the training: a seed's non-finite loss, or what ``report`` raised.
    """
    cfgs = members(cfg)
    mean = _Mean(len(cfgs), report, checkpoint)
    too_big = ""
    if train_group is not None:  # 1.
        try:
            results = train_group(
                cfgs, [mean.reporter(m) for m in range(len(cfgs))], problem=problem,
                checkpoints=[mean.checkpoint(m) for m in range(len(cfgs))],
            )  # fmt: skip
        except Exception as e:
            # 4. S models need S× the memory of one: a group that runs out of it before its first report
            #    trains one after another instead (once the error, and the group's tensors it holds, are gone).
            if not is_out_of_memory(e) or mean.epochs or mean.last:
                raise
            too_big = str(e).splitlines()[0] if str(e) else type(e).__name__
        else:
            if mean.stop is not None:
                raise mean.stop
            failed = [r for r in results if isinstance(r, BaseException)]  # 3. what stopped a seed, not SeedGone
            for result in sorted(failed, key=lambda r: isinstance(r, SeedGone)):
                raise result
            return mean.last
    if too_big:
        mean.models.clear()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        warnings.warn(
            f"objective.repeats: {len(cfgs)} seeds as one vectorized group ran out of memory ({too_big}); "
            "training them one after another",
            stacklevel=2,
        )
    # 2. The other seeds first (their metrics kept), then the first seed, reported as the mean each epoch.
    others: dict[int, list[Metrics]] = {}
    beat = progress  # the caller's "still training" clock (the runner's watchdog)

    def keep(epoch: int, metrics: Metrics) -> None:
        others.setdefault(epoch, []).append(dict(metrics))
        if beat is not None:  # an epoch of another seed is progress: no stall_timeout while they train
            beat(epoch)

    for member in cfgs[1:]:
        train(member, keep, problem=problem)
    kept: dict[int, Mapping[str, torch.nn.Module]] = {}

    def first_save(epoch: int, metrics: Metrics, models: Mapping[str, torch.nn.Module]) -> None:
        kept[epoch] = models

    def first_report(epoch: int, metrics: Metrics) -> None:
        mean.last = mean_metrics([metrics, *others.get(epoch, [])])
        if checkpoint is not None:
            checkpoint(epoch, mean.last, kept.pop(epoch))
        if report is not None:
            report(epoch, mean.last)

    train(cfgs[0], first_report, problem=problem, checkpoint=first_save)
    return mean.last
