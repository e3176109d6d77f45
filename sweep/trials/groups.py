"""``study.parallel_trials: K``: ask Optuna for K trials at once and train them as one vectorized program.

Each member is its own Optuna trial and its own MLflow child run, recorded exactly as a trial run alone
(:class:`sweep.trials.trial.Objective` opens, sets up and concludes each), plus a ``sweep.group`` tag naming
the trials it trained with. The members' configs are grouped by what must be equal
(:func:`objectives.batched.group_key`); a group of two or more that :func:`objectives.loops.why_not`
accepts trains as one program (its loop's ``train_group``: :func:`objectives.loops.train_group`), each
member reporting its own
epochs (so pruning, early stopping and a NaN stop that member alone); the rest train one after
another, with one line saying why. Trials are claimed one at a time as usual (:class:`sweep.storage.claims.Claims`),
so a group never takes more than the study's ``n_trials`` leave.

The members' records cost less than their training (issue #28): their params and tags (the ``sweep.group``
tag included) go to MLflow in one transaction before training, and their per-epoch metrics wait in one queue
sent for all of them at once (:mod:`sweep.tracking.bulk`), at the latest when a member ends: every record
of a member lands before Optuna is told its end.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence

import optuna

from objectives.batched import group_key
from objectives.loops import train_group, why_not
from sweep.core.errors import to_stderr
from sweep.core.records import Tag
from sweep.storage.claims import Claims
from sweep.storage.pruning import CompletedView, decides_in_process
from sweep.trials.console import Progress
from sweep.trials.slots import Outcome, Slots, ended_elsewhere, outcome_of, still_mine, tell
from sweep.trials.slots import ended as said_ended
from sweep.trials.trial import Member, Objective

TrialState = optuna.trial.TrialState
Callback = Callable[[optuna.Study, optuna.trial.FrozenTrial], None]
# Freed slots of a vectorized group refilled (sweep.trials.slots); False only to measure groups without it
# (benchmarks/halving.py). A study with study.trial_timeout never refills: the limit holds the group's training.
REFILL = True
__all__ = ["ended_elsewhere", "run_groups", "run_one_by_one"]


def run_groups(
    study: optuna.Study,
    objective: Objective,
    k: int,
    claims: Claims,
    callbacks: Sequence[Callback],
    timeout: float | None = None,
) -> None:
    """Run groups of up to ``k`` trials until the claims say stop (call after ``claims.claim()`` said run).

    Raises:
        KeyboardInterrupt: interrupted; every trial of the group is told FAIL and its run closed first.
    """
    start = time.monotonic()
    said: set[str] = set()
    while True:
        # 1. Claim and ask up to k trials; each member opens its run as a trial alone would.
        members: list[Member] = []
        while True:
            with warnings.catch_warnings():  # Optuna's "heartbeat ... with Study.optimize": _beating beats
                warnings.filterwarnings("ignore", message="Heartbeat of storage", category=UserWarning)
                trial = study.ask()
            try:
                members.append(objective.open(trial))
            except Exception:
                frozen = study.tell(trial, state=TrialState.FAIL)
                for callback in callbacks:
                    callback(study, frozen)
                if not claims.count(frozen):
                    return
            if len(members) == k or not claims.claim(wait=False):
                break
        if not members:
            if not claims.claim():
                return
            continue
        # 2. Train them (heartbeats for all of them meanwhile; a vectorized group tells each member as it ends
        #    and refills its slot: sweep.trials.slots), then tell each the rest its end.
        beating = [m.tid for m in members if m.tid is not None]
        deadline = None if timeout is None else start + timeout
        with objective.records.beating(beating):
            outcomes = _train(objective, members, said, (claims, callbacks, beating, deadline))
        interrupted = False
        for m, outcome in outcomes:
            stopped, _ = tell(study, objective, m, outcome, callbacks, claims)
            interrupted = interrupted or stopped
        if interrupted:
            raise KeyboardInterrupt
        if claims.gave_up or claims.halt():
            return
        if timeout is not None and time.monotonic() - start > timeout:
            return
        if not claims.claim():
            return


def run_one_by_one(
    study: optuna.Study,
    objective: Objective,
    claims: Claims,
    callbacks: Sequence[Callback],
    timeout: float | None = None,
) -> None:
    """``study.optimize`` (call after ``claims.claim()`` said run), carried on past a trial that another
    process ended while this one trained it: failed as stale when this process's heartbeats could not
    reach the storage (an outage). Optuna then refuses this process's result ("Cannot tell a FAIL
    trial") and stops ``optimize``: the trial's run is closed with the state the storage holds, and
    the claims decide on the next trial as after any other."""
    start = time.monotonic()
    while True:
        left = None if timeout is None else timeout - (time.monotonic() - start)
        if left is not None and left <= 0:
            return
        try:
            study.optimize(objective, timeout=left, catch=(Exception,), callbacks=callbacks)
            return
        except (ValueError, AssertionError):  # Optuna's "Cannot tell a FAIL trial" (or its "Should not reach")
            mine = objective.mine()  # a trial that failed before its run opened too
            ended = [t for t in study.get_trials(deepcopy=False) if t.number in mine and t.state.is_finished()]
            if not ended:
                raise
        for trial in ended:
            frozen = said_ended(study, trial.number)
            for callback in callbacks:
                # Not the claims' (its own call stops optimize; here we decide below), nor the progress
                # bar's (its "failed" line: _ended said what happened).
                if callback is not claims and not isinstance(callback, Progress):
                    callback(study, frozen)
            claims.count(frozen, ended_elsewhere=True)
        if not claims.claim():
            return


def _train(
    objective: Objective,
    members: list[Member],
    said: set[str],
    refilling: tuple[Claims, Sequence[Callback], list[int], float | None],
) -> list[tuple[Member, Outcome]]:
    """Set every member up and train them: in vectorized groups where possible, else one by one.

    Args:
        refilling: What a vectorized group's :class:`~sweep.trials.slots.Slots` tells and asks with (the
            claims, the callbacks, the heartbeats' trial ids, the deadline).

    Returns:
        Each member not yet told (a group's members are told as they end, its joiners included), with what
        :meth:`~sweep.trials.trial.Objective.conclude` runs: return its metrics or raise what stopped it (a
        member trained alone trains there, so its end is recorded right after its training).
    """
    outcomes: dict[int, Outcome] = {}
    groups: dict[str, list[Member]] = {}
    study, records = members[0].trial.study, objective.records
    view = CompletedView(study) if decides_in_process(study.pruner) else None  # one read for all members
    records.hold([m.run for m in members])  # 1. their params and tags: written together below
    for m in members:
        try:
            objective.setup(m, view)
        except BaseException as e:  # Ctrl-C too (its config.yaml over HTTP): the member ends with it
            outcomes[m.trial.number] = outcome_of(e)
            continue
        assert m.cfg is not None
        groups.setdefault(f"{id(m.problem)}:{group_key(m.cfg)}", []).append(m)
    plans: list[tuple[list[Member], str]] = []
    tags: dict[int, dict[str, str]] = {}
    for group in groups.values():
        numbers = ", ".join(str(m.trial.number) for m in group)
        why = why_not([m.cfg for m in group], group[0].problem) if len(group) > 1 else "a group of one"  # type: ignore[misc]
        plans.append((group, why))
        if why:
            if len(group) > 1 and why not in said:
                said.add(why)
                to_stderr(f"note: trials {numbers} train one after another: {why}")
        else:
            tags.update({m.trial.number: {Tag.GROUP: numbers} for m in group})
    try:  # 2. every member's params and tags (a group's sweep.group too) in one transaction
        errors = records.send_held([(m.run, tags.get(m.trial.number, {})) for m in members])
    except BaseException as e:  # the store gave up, or Ctrl-C (raised at once in an HTTP call): every member
        errors = {m.run.run_id: e for m in members}  # fails with it, re-queued (TrackingDown, KeyboardInterrupt)
    for m in members:
        if m.run.run_id in errors and m.trial.number not in outcomes:
            outcomes[m.trial.number] = outcome_of(errors[m.run.run_id])
    for group, why in plans:
        group = [m for m in group if m.trial.number not in outcomes]
        if why or len(group) < 2:
            for m in group:
                outcomes[m.trial.number] = lambda m=m: objective.train_one(m)
            continue
        records.grouped([(m.run, still_mine(m.owner)) for m in group])  # 3. their epochs' metrics: together
        slots = Slots(objective, group, *refilling)
        refill = slots.refill if REFILL and objective.watchdog.trial_timeout is None else None
        try:
            watch = objective.watchdog.watching(lambda why, s=slots: objective.abandoner(s.live())(why))
            with watch, warnings.catch_warnings(), objective.interrupts.training():
                warnings.simplefilter("once")
                results = train_group(
                    [m.cfg for m in group],  # type: ignore[misc]
                    [m.report for m in group],
                    problem=group[0].problem,
                    checkpoints=[m.keeper for m in group],
                    refill=refill,
                    on_end=slots.on_end,
                )
        except BaseException as e:  # the whole group: each member not yet told fails (or is interrupted) with it
            results = [e] * len(slots.members)
        for m, result in zip(slots.members, results, strict=True):
            if m.trial.number not in slots.told:
                outcomes[m.trial.number] = outcome_of(result)
        alone = [m for m in [*slots.ready, *slots.aside] if m.trial.number not in slots.told]
        members = [*members, *slots.members[len(group) :], *alone]
        for m in alone:  # 4. asked while the group trained, not of it (or not handed to it): each alone
            outcomes[m.trial.number] = lambda m=m: objective.train_one(m)
    return [(m, outcomes[m.trial.number]) for m in members if m.trial.number in outcomes]
