"""Per-epoch values for Optuna without a database round trip per epoch.

``trial.report`` writes one row per epoch in its own transaction, and ``trial.should_prune`` has the
median pruner re-read the study's trials from the storage every epoch: 3-14 ms an epoch on SQLite,
more than many small trainings take. :class:`Reports` keeps what a user relies on and drops the
round trips:

1. Values are queued and written in one transaction when the queue is older than ``flush_every_s``,
   before a prune and when the trial ends (:meth:`Reports.flush`): the stored intermediate values are
   the same; another process sees them up to ``flush_every_s`` later.
2. Pruners that only read the study (median, patient over median, none) decide in process on a view
   of the study's COMPLETE trials (:class:`CompletedView`), refreshed when this trial starts and then
   at most every ``flush_every_s``. In a single process that is exactly what Optuna decides (trials
   complete only between trials); with several processes a trial finished elsewhere counts up to
   ``flush_every_s`` later. Hyperband and successive halving write their rungs to the storage as they
   decide: for them Optuna's own ``trial.report`` / ``trial.should_prune`` run unchanged.
"""

from __future__ import annotations

import time
from collections.abc import Container, Sequence
from datetime import datetime
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

_READ_ONLY = (optuna.pruners.MedianPruner, optuna.pruners.NopPruner, optuna.pruners.PercentilePruner)


def decides_in_process(pruner: optuna.pruners.BasePruner) -> bool:
    """Whether ``pruner`` only reads the study (so a cached view decides as it would)."""
    if isinstance(pruner, optuna.pruners.PatientPruner):
        inner = pruner._wrapped_pruner  # Optuna exposes no getter for the wrapped pruner
        return inner is None or decides_in_process(inner)
    return isinstance(pruner, _READ_ONLY)


class CompletedView:
    """What a read-only pruner asks of a study: its direction and its COMPLETE trials (cached)."""

    def __init__(self, study: optuna.Study) -> None:
        self._study = study
        self.direction = study.direction
        self.directions = study.directions
        self._complete: list[FrozenTrial] = []
        self._at = 0.0
        self.refresh()

    def refresh(self) -> None:
        self._complete = self._study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        self._at = time.monotonic()

    def refresh_if_older(self, seconds: float) -> None:
        """Re-read the study when this view is ``seconds`` old (several trials may share one view: the
        members of a vectorized group, :mod:`sweep.trials.groups`)."""
        if time.monotonic() - self._at >= seconds:
            self.refresh()

    def get_trials(self, deepcopy: bool = True, states: Container[TrialState] | None = None) -> Sequence[FrozenTrial]:
        if states is not None and any(s not in (TrialState.COMPLETE,) for s in states):  # pragma: no cover
            raise NotImplementedError("the pruning view holds COMPLETE trials only")
        return list(self._complete)


class Reports:
    """One trial's target values for Optuna: queued, written in batches, pruning decided in process.

    Args:
        trial: The running trial.
        storage: The study's RDB storage (:class:`sweep.storage.resilient.ResilientStorage`), written directly.
        trial_id: The trial's storage id.
        flush_every_s: The longest a value waits in the queue (and the view's age).
        view: A view of the completed trials to share (a group's members); by default this trial's own.
    """

    def __init__(
        self,
        trial: optuna.Trial,
        storage: Any,
        trial_id: int,
        flush_every_s: float = 2.0,
        view: CompletedView | None = None,
    ) -> None:
        self.trial, self.storage, self.trial_id, self.flush_every_s = trial, storage, trial_id, flush_every_s
        self.native = not decides_in_process(trial.study.pruner)
        self._values: dict[int, float] = {}
        self._queue: dict[int, float] = {}
        self._last = time.monotonic()
        self._view: CompletedView | None = None if self.native else view or CompletedView(trial.study)
        self._started = datetime.now()

    def report(self, value: float, step: int) -> bool:
        """Record ``value`` at ``step``; returns whether the trial should be pruned now (the queue is
        written first, so a pruned trial's last value is stored, as Optuna's ``tell`` expects)."""
        if self.native:
            self.trial.report(value, step)
            return self.trial.should_prune()
        if step in self._values:
            return False  # as Trial.report: a step is reported once
        self._values[step] = self._queue[step] = float(value)
        stale = time.monotonic() - self._last >= self.flush_every_s
        if stale:
            self.flush()
            assert self._view is not None
            self._view.refresh_if_older(self.flush_every_s)
        prune = self.trial.study.pruner.prune(self._view, self._frozen())  # type: ignore[arg-type]
        if prune:
            self.flush()
        return prune

    def flush(self) -> None:
        """Write the queued values in one transaction."""
        if self._queue:
            self.storage.set_trial_intermediate_values(self.trial_id, dict(self._queue))
            self._queue.clear()
        self._last = time.monotonic()

    def _frozen(self) -> FrozenTrial:
        """This trial as the pruner sees it: its number and intermediate values (it reads nothing else)."""
        return FrozenTrial(
            number=self.trial.number,
            state=TrialState.RUNNING,
            value=None,
            datetime_start=self._started,
            datetime_complete=None,
            params={},
            distributions={},
            user_attrs={},
            system_attrs={},
            intermediate_values=dict(self._values),
            trial_id=self.trial_id,
        )
