"""A vectorized group's freed slots refilled from the study (issue #28: successive halving over groups).

While a group of ``study.parallel_trials`` trials trains as one program, each member is told to Optuna as
it ends (:func:`tell`: its records flushed first, then concluded, told, counted), and the slot it frees is
offered to a new trial: claimed without waiting (:meth:`~sweep.storage.claims.Claims.claim`), asked, its
run opened and its config set up as any member's (its params and tags sent before it trains, its epochs
queued with the group's), then handed to the loop when it fits the group
(:mod:`objectives.batched.slots`). So a pruner's freed slots never idle and the sampler learns from each
end as it happens. A trial that does not fit trains alone after the group; every asked trial is told.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import optuna

from objectives.batched.slots import Joiner, Result
from sweep.core.errors import to_stderr
from sweep.core.records import Tag
from sweep.storage.claims import Claims
from sweep.storage.ownership import Owner, TrialLost
from sweep.storage.pruning import CompletedView, decides_in_process
from sweep.trials.console import Progress
from sweep.trials.trial import Member, Objective

TrialState = optuna.trial.TrialState
Callback = Callable[[optuna.Study, optuna.trial.FrozenTrial], None]
Outcome = Callable[[], dict[str, float]]


def tell(
    study: optuna.Study,
    objective: Objective,
    m: Member,
    outcome: Outcome,
    callbacks: Sequence[Callback],
    claims: Claims,
) -> tuple[bool, bool]:
    """Conclude the member (its last records, then its value or why it stopped), tell Optuna, count it.

    Returns:
        Whether it was interrupted (Ctrl-C: its callbacks are not called), and whether the claims let this
        process start more trials.
    """
    state, values, interrupted = TrialState.COMPLETE, None, False
    try:
        values = objective.conclude(m, outcome)
    except optuna.TrialPruned:
        state = TrialState.PRUNED
    except KeyboardInterrupt:
        state, interrupted = TrialState.FAIL, True
    except Exception:
        state = TrialState.FAIL
    elsewhere = False
    try:
        frozen = study.tell(m.trial, values, state=None if state == TrialState.COMPLETE else state)
    except ValueError as e:
        if not ended_elsewhere(e):
            raise
        frozen, elsewhere = ended(study, m.trial.number), True
    if not interrupted:
        for callback in callbacks:
            if not (elsewhere and isinstance(callback, Progress)):  # ended() said it: no "failed" line
                callback(study, frozen)
    return interrupted, claims.count(frozen, ended_elsewhere=elsewhere)


def ended_elsewhere(e: ValueError) -> bool:
    """Optuna's refusal to record the end of a trial that has already ended (another process ended it)."""
    return str(e).startswith("Cannot tell a ")


def ended(study: optuna.Study, number: int) -> optuna.trial.FrozenTrial:
    """The trial another process ended, said once (:mod:`sweep.storage.ownership`: nothing more was written to it)."""
    trial = next(t for t in study.get_trials(deepcopy=False) if t.number == number)
    to_stderr(
        f"note: trial {number} was ended ({trial.state.name}) by another process while this one trained it "
        "(this process's heartbeats stopped for longer than study.grace_period: it was stopped, or could not "
        "reach the storage); this process wrote nothing more to it or its run, and dropped its result"
    )
    return trial


def outcome_of(result: Result) -> Outcome:
    """What :meth:`~sweep.trials.trial.Objective.conclude` runs for a member's result: return it, or raise it."""

    def again() -> dict[str, float]:
        if isinstance(result, BaseException):
            raise result
        return result

    return again


def still_mine(owner: Owner) -> Callable[[], bool]:
    """Whether the member is still this process's (asked before another member sends its queued metrics)."""

    def mine() -> bool:
        try:
            owner.check()
        except TrialLost:
            return False
        except Exception:  # a storage that cannot say: taken to mean it still is (Owner.ended_by)
            return True
        return True

    return mine


class Slots:
    """One vectorized group's members as they end and join: the loop's ``on_end`` and ``refill``.

    Args:
        objective: The study's objective (opens, sets up, concludes members).
        group: The group's first members, in the loop's order.
        claims: Whether one more trial may start (asked without waiting).
        callbacks: Called with each member's end (its run closed, the progress bar).
        beating: The trial ids whose heartbeats are recorded while the group trains (joiners are added,
            ended members removed).
        deadline: ``time.monotonic()`` after which no trial joins (the session's timeout).
    """

    def __init__(
        self,
        objective: Objective,
        group: list[Member],
        claims: Claims,
        callbacks: Sequence[Callback],
        beating: list[int],
        deadline: float | None = None,
    ) -> None:
        self.objective, self.claims, self.callbacks, self.beating = objective, claims, callbacks, beating
        self.members = list(group)  # by the loop's index
        self.study = group[0].trial.study
        self.problem = group[0].problem
        self.told: set[int] = set()  # trial numbers told to Optuna
        self.aside: list[Member] = []  # asked, but not of this group: each trains alone after it
        self.ready: list[Member] = []  # asked for this epoch's end's free rows, not yet handed to the loop
        self.deadline = deadline
        self.stopped = False  # the claims (or the deadline) said no more trials

    def live(self) -> list[Member]:
        """The members asked and not yet told (for the watchdog's last resort)."""
        return [m for m in [*self.members, *self.ready, *self.aside] if m.trial.number not in self.told]

    def on_end(self, index: int, result: Result) -> None:
        """The loop's word that member ``index`` ended: tell it now (its records first), shielded from Ctrl-C
        (a Ctrl-C meanwhile is raised after it, and ends the group)."""
        m = self.members[index]
        with self.objective.interrupts.shielded():
            self._tell(m, outcome_of(result))

    def _tell(self, m: Member, outcome: Outcome) -> None:
        self.told.add(m.trial.number)
        if m.tid in self.beating:
            self.beating.remove(m.tid)
        interrupted, go_on = tell(self.study, self.objective, m, outcome, self.callbacks, self.claims)
        self.stopped = self.stopped or not go_on
        if interrupted:
            raise KeyboardInterrupt

    def refill(self, fits: Callable[[Any], bool], free: int = 1) -> Joiner | None:
        """A new trial for a freed row (its run open, its config set up and recorded, its epochs queued with
        the group's); ``None`` when the claims say no or none of those asked fits (each trains alone after the
        group). The first call of an epoch's end asks for every free row at once (``free``)."""
        if not self.ready:
            self.ready = self._prepare(fits, free)
        if not self.ready:
            return None
        with self.objective.interrupts.shielded():  # a Ctrl-C meanwhile comes once it is a member (told by _train)
            m = self.ready.pop(0)
            self.members.append(m)
            shared = self.members[0].run.group
            if shared is not None:  # its epochs' metrics queued with the group's
                m.run.group = shared
                shared.join(m.run.run_id, still_mine(m.owner))
        return Joiner(m.cfg, m.report, m.keeper)  # type: ignore[arg-type]

    def _prepare(self, fits: Callable[[Any], bool], free: int) -> list[Member]:
        """Up to ``free`` new trials, asked and set up; their params and tags in one write. Returns those that
        fit the group (the others wait aside)."""
        if self.stopped or len(self.aside) >= len(self.members) or self._late():
            return []
        with self.objective.interrupts.shielded():  # database work: a Ctrl-C meanwhile comes after it
            asked: list[Member] = []
            self.ready = asked  # asked and not told: a Ctrl-C while asking the next leaves them to _train
            while len(asked) < free and (m := self._ask()) is not None:
                asked.append(m)
            fit = {id(m) for m in asked if m.problem is self.problem and fits(m.cfg)}
            # sweep.group: the trials it starts beside (the members training on, the others joining now)
            live = [n.trial.number for n in self.members if n.trial.number not in self.told]
            numbers = sorted(live + [m.trial.number for m in asked if id(m) in fit])
            tags = {Tag.GROUP: ", ".join(str(n) for n in numbers)} if len(numbers) > 1 else {}
            try:
                errors = self.objective.records.send_held([(m.run, tags if id(m) in fit else {}) for m in asked])
            except BaseException as e:  # the store gave up, or Ctrl-C: each fails with it (re-queued)
                errors = {m.run.run_id: e for m in asked}
            failed = [m for m in asked if m.run.run_id in errors]
            self.ready = [m for m in asked if id(m) in fit and m.run.run_id not in errors]
            self.aside += [m for m in asked if id(m) not in fit and m.run.run_id not in errors]  # alone, after
            interrupted = False
            for m in failed:  # each told, even after a Ctrl-C told one of them
                try:
                    self._tell(m, outcome_of(errors[m.run.run_id]))
                except KeyboardInterrupt:
                    interrupted = True
            if interrupted:
                raise KeyboardInterrupt
        return self.ready

    def _late(self) -> bool:
        return self.deadline is not None and time.monotonic() > self.deadline

    def _ask(self) -> Member | None:
        """Claim, ask, open and set up one trial (its params and tags held); ``None`` when none may start, or
        it failed before training (told)."""
        objective, study = self.objective, self.study
        while True:
            if not self.claims.claim(wait=False):  # 1. one more trial, if the study needs it now
                self.stopped = True
                return None
            with warnings.catch_warnings():  # Optuna's "heartbeat ... with Study.optimize": beating beats
                warnings.filterwarnings("ignore", message="Heartbeat of storage", category=UserWarning)
                trial = study.ask()
            try:
                m = objective.open(trial)
                break
            except Exception:
                frozen = study.tell(trial, state=TrialState.FAIL)
                for callback in self.callbacks:
                    callback(study, frozen)
                if not self.claims.count(frozen):
                    self.stopped = True
                    return None
        if m.tid is not None:
            self.beating.append(m.tid)
        # 2. Set up as every member (sweep.trials.groups._train): its params and tags held, sent by refill.
        objective.records.hold([m.run])
        try:
            objective.setup(m, CompletedView(study) if decides_in_process(study.pruner) else None)
        except BaseException as e:  # Ctrl-C too (its config.yaml over HTTP): it ends with it
            with contextlib.suppress(Exception):  # what it recorded of its config, as a member's
                objective.records.send_held([(m.run, {})])
            self._tell(m, outcome_of(e))
            return None
        return m
