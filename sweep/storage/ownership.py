"""Whether the trial a process trains is still its own to write: another process may have ended it.

Another process fails a trial as stale when its heartbeat is older than ``study.grace_period``: its process
was stopped (SIGSTOP, a suspended VM, swapping) or its heartbeats could not reach the storage. When the
first process goes on, its trial is closed (FAILED, re-queued) and its MLflow run too; what it wrote then
would rewrite a closed record (metrics past its end, a new end time, its ``fail_reason`` replaced). So
before it writes, a process asks the storage whether the trial is still RUNNING whenever its last look is
older than ``every_s`` (``study.heartbeat_interval``; while the process runs without a pause its trial
cannot go stale, so a trial that trains uninterrupted costs no look at all); once it is not,
:class:`TrialLost` ends the trial's work in this process and nothing more is written to the trial or its
run (:mod:`sweep.trials.trial`), and one line says so (:func:`sweep.trials.groups.ended_elsewhere`).
"""

from __future__ import annotations

import time
from typing import Any

from optuna.exceptions import UpdateFinishedTrialError


class TrialLost(Exception):
    """Another process ended this process's trial meanwhile: nothing more is written to it or its run."""


class Owner:
    """One trial's ownership by this process, looked up in the storage when it may have changed.

    Args:
        storage: The study's storage (``None``: no other process can end the trial; never lost).
        trial_id: The trial's storage id.
        number: The trial's number (said in :class:`TrialLost`).
        every_s: Look again when the last look is older than this (seconds).
    """

    def __init__(self, storage: Any, trial_id: int | None, number: int, every_s: float) -> None:
        self.storage, self.trial_id, self.every_s = storage, trial_id, every_s
        self.why = f"trial {number} was ended by another process while this one trained it"
        self.lost = False
        self._looked = time.monotonic()  # the trial was this process's when it beat and opened its run

    def check(self) -> None:
        """Raise :class:`TrialLost` when the trial is no longer this process's (looking if it is time)."""
        known = self.lost or self.storage is None or self.trial_id is None
        if not known and time.monotonic() - self._looked >= self.every_s:
            state = self.storage.get_trial(self.trial_id).state
            self._looked = time.monotonic()
            self.lost = state.is_finished()
        if self.lost:
            raise TrialLost(self.why)

    def ended_by(self, e: Exception) -> bool:
        """Whether the trial that raised ``e`` is no longer this process's: ``e`` is the storage refusing to
        update a finished trial, or the trial is found ended (a :class:`TrialLost` that another trial of a
        vectorized group raised ends this one's training, not its ownership). A storage that cannot say is
        taken to mean it still is: its failure is then recorded as any other."""
        self.lost = self.lost or isinstance(e, UpdateFinishedTrialError)
        try:
            self.check()
        except TrialLost:
            return True
        except Exception:
            return False
        return False
