"""One trial: sample → resolve → train → record. No training code lives here.

One objective call = one trial:
  1. open the trial's tracking (heartbeat, then its MLflow child run), so even a trial that fails
     early has a run;
  2. sample the search space and resolve a fully fixed config (seeds derived, device chosen);
  3. run the loop with a reporter that queues per-epoch metrics for MLflow and reports the target to
     Optuna for pruning — under the trial's time limits (:mod:`sweep.trials.watchdog`), and writing only while
     the trial is still this process's (:mod:`sweep.storage.ownership`: another may have failed it as stale);
  4. return the trial's value (the last epoch's target, or the best epoch's with ``study.score: best``
     or early stopping) and write the kept weights once; :meth:`Objective.on_trial_end` then closes
     the run with the status matching the trial's final state. A failed trial's memory is let go before
     the next trial starts (:mod:`sweep.trials.memory`).
"""

from __future__ import annotations

import json
import tempfile
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from objectives.config import LoopCommon
from objectives.loops import LOOPS, train
from objectives.problems import build_problem
from sweep.core.errors import reason
from sweep.core.faultpoints import pause
from sweep.core.interrupts import Interrupts
from sweep.core.records import Attr, Tag
from sweep.core.urls import redact
from sweep.results.report import loss_curves_png
from sweep.results.scoring import EarlyStop, Keeper, Score, keeper
from sweep.storage.ownership import Owner, TrialLost
from sweep.storage.pruning import CompletedView, Reports
from sweep.studyfile.sections import StudySection
from sweep.studyfile.space import SearchSection, resolve, sample
from sweep.tracking.tracking import TrialRun
from sweep.tracking.trackingretry import TrackingDown, gave_up
from sweep.tracking.trialruns import TrialRuns
from sweep.trials.console import show_traceback
from sweep.trials.memory import MemoryLog, details, oom_reason, out_of_memory, release
from sweep.trials.recovery import requeue_unrun, unrecorded
from sweep.trials.watchdog import Watchdog, abandon


class SurplusTrial(RuntimeError):
    """A trial claimed beside another (a storage blip, a stopped lock holder), one more than the study needs."""


@dataclass
class ProblemCache:
    """Built problems by (name, options, data seed, device): data goes to the device once per run."""

    _cache: dict[tuple[str, str, int, str], Any] = field(default_factory=dict)

    def get(self, cfg: LoopCommon) -> Any:
        assert cfg.data_seed is not None
        options = json.dumps(cfg.problem.options, sort_keys=True)
        key = (cfg.problem.name, options, cfg.data_seed, cfg.device)
        if key not in self._cache:
            cpu_key = (*key[:3], "cpu")
            if cpu_key not in self._cache:
                loop = LOOPS[cfg.loop]
                self._cache[cpu_key] = build_problem(
                    cfg.problem.name, cfg.problem.options, cfg.data_seed, loop.name, loop.problem
                )
            self._cache[key] = self._cache[cpu_key].to(cfg.device)
        return self._cache[key]


@dataclass
class Member:
    """One trial from its start to its end: what its training needs and what records how it went."""

    trial: optuna.Trial
    run: TrialRun
    tid: int | None  # the trial's id in the storage (heartbeats)
    owner: Owner  # whether the trial is still this process's to write (sweep.storage.ownership)
    cfg: LoopCommon | None = None
    score: Score | None = None
    keeper: Keeper | None = None
    reports: Reports | None = None
    report: Callable[[int, Mapping[str, float]], None] | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    problem: Any = None


class Objective:
    """The Optuna objective for one study: it sequences each trial (open → set up → train → conclude) and
    leaves the records to their owners — the trial's heartbeat and MLflow run to :class:`TrialRuns`, its
    score and kept weights to :mod:`sweep.results.scoring`, its time limits to the :class:`Watchdog`, its
    memory to :class:`MemoryLog`. ``on_trial_end`` is the Optuna callback that closes the run.

    Args:
        study: The study file's ``study`` section (targets, score, retries, heartbeats).
        search: Its ``search`` section.
        objective: Its ``objective`` section: the loop's config, some values still to sample.
        records: The trials' heartbeats and MLflow runs.
        problems: Built problems, shared by the trials.
        interrupts: The process's signal handling (training is interruptible).
        watchdog: The trials' time limits (none when omitted).
        started: Called once the trial exists (:meth:`sweep.storage.claims.Claims.release`); ``False`` when the
            trial is one more than the study needs.
        trial_plots: ``tracking.trial_plots``: a ``loss_curves.png`` per trial.
        verbose: Print a failed trial's traceback.
    """

    def __init__(
        self,
        study: StudySection,
        search: SearchSection,
        objective: LoopCommon,
        records: TrialRuns,
        problems: ProblemCache,
        interrupts: Interrupts,
        watchdog: Watchdog | None = None,
        started: Callable[[int], bool] = lambda _number: True,
        trial_plots: bool = False,
        verbose: bool = False,
    ) -> None:
        self.study, self.search, self.objective = study, search, objective
        self.records, self.problems, self.interrupts = records, problems, interrupts
        self.watchdog = watchdog or Watchdog(None, None, interrupts, 0)
        self.started, self.trial_plots, self.verbose = started, trial_plots, verbose
        self.memory = MemoryLog()  # trials that ran out of memory
        self._asked: int | None = None  # the trial being run now, also before (or without) its MLflow run

    def mine(self) -> set[int]:
        """The trials this process runs now: those with an open run, and the one asked (its run may not be open)."""
        return {*self.records.numbers(), *([] if self._asked is None else [self._asked])}

    def __call__(self, trial: optuna.Trial) -> float | list[float]:
        self._asked = trial.number
        member = self.open(trial)

        def work() -> dict[str, float]:
            self.setup(member)
            return self.train_one(member)

        return self.conclude(member, work)

    def open(self, trial: optuna.Trial) -> Member:
        """Start the trial's tracking (1.): a heartbeat, then its MLflow child run; what fails here fails the
        trial at once (recorded as its reason)."""
        if not self.started(trial.number):
            why = (
                "not needed: claimed beside another process (its claim lock lost in a storage blip, or given "
                "up on a stopped holder), and the lower-numbered trials make the study's n_trials without it"
            )
            trial.set_user_attr(Attr.FAIL, why)
            requeue_unrun(trial)  # a queued point it took goes back to the queue
            raise SurplusTrial(why)
        pause("asked")
        try:
            run, tid = self.records.open(trial)  # 1.
        except Exception as e:
            trial.set_user_attr(Attr.FAIL, e.reason if isinstance(e, TrackingDown) else reason(e))
            raise
        return Member(trial, run, tid, Owner(self.records.beat, tid, trial.number, self.study.heartbeat_interval))

    def setup(self, m: Member, view: CompletedView | None = None) -> None:
        """Sample and resolve the trial's config (2.), record it, and make what training reports to
        (``view``: the completed trials pruning compares with, shared by a group's members)."""
        study, trial = self.study, m.trial
        sampled, weights = sample(trial, self.search, self.objective)  # 2.
        m.cfg = cfg = resolve(self.objective, study.seed, trial.number, sampled, weights)
        m.run.record_config(trial, cfg.model_dump(mode="json"), {Tag.DEVICE: cfg.device, Tag.LOOP: cfg.loop})
        m.score = Score(study.directions[0], study.score, cfg.early_stopping)
        m.keeper = keeper(cfg, m.score, study.metric[0])
        beat = self.records.beat
        if beat is not None and m.tid is not None and not study.multi_objective:  # no pruning otherwise
            m.reports = Reports(trial, beat, m.tid, view=view)
        m.report = self._reporter(m)
        m.problem = self.problems.get(cfg)

    def train_one(self, m: Member) -> dict[str, float]:
        """Train the member's config on its own (3.)."""
        assert m.cfg is not None
        with self.watchdog.watching(self.abandoner([m])), warnings.catch_warnings(), self.interrupts.training():
            warnings.simplefilter("once")
            return train(m.cfg, m.report, problem=m.problem, checkpoint=m.keeper, progress=self.watchdog.progress)  # 3.

    def abandoner(self, members: list[Member]) -> Callable[[str], None]:
        """What the watchdog does with ``members`` when their training does not stop (sweep.trials.watchdog)."""
        runs = [(m.trial.number, m.tid, m.run.log_text) for m in members]
        return lambda why: abandon(self.records.beat, members[0].trial.study, runs, why)

    def conclude(self, m: Member, train: Callable[[], dict[str, float]]) -> float | list[float]:
        """Run ``train`` (the member's training, or what its group's training gave it) and record how the
        trial ended (4.): its value, its kept weights, or why it failed; re-raises what stopped it. A trial
        another process ended meanwhile gets no record from this process (:class:`TrialLost`)."""
        study, trial, run = self.study, m.trial, m.run
        try:
            try:
                metrics = train()
            except EarlyStop:
                metrics = {}
                m.owner.check()
                assert m.score is not None
                run.set_tags({Tag.EARLY_STOP: m.score.stopped_at})
                trial.set_user_attr(Attr.EARLY_STOP, m.score.stopped_at)
            m.owner.check()
            assert m.score is not None
            if m.keeper is not None and m.keeper.epoch is not None:  # the kept weights, written once at the end
                self.records.keep_weights(trial, run, m.keeper.save, m.keeper.epoch)
            if study.multi_objective:  # 4. the last epoch's values (no single best epoch)
                return [metrics[name] for name in study.metric]
            if m.score.uses_best:
                run.set_tags({Tag.BEST_EPOCH: m.score.best_epoch})
                trial.set_user_attr(Attr.BEST_EPOCH, m.score.best_epoch)
            return m.score.value()
        except optuna.TrialPruned:
            raise
        except KeyboardInterrupt as e:
            if m.owner.lost:
                raise
            # Optuna marks the trial FAIL and re-raises without calling callbacks: re-queue it, close its run.
            unrecorded(trial, self.records.take(trial.number), e, study.max_retry)
            raise
        except Exception as e:
            oom = out_of_memory(e)
            m.keeper = m.report = None  # the trial's models and tensors: freed with its frames (release)
            if isinstance(e, TrackingDown):  # not the config's fault: it fails with the reason, re-queued
                unrecorded(trial, self.records.take(trial.number), e, study.max_retry)
                raise
            if m.owner.ended_by(e):
                release(e, oom)
                raise TrialLost(m.owner.why) from None
            text = details(e)
            self.records.store_refused(e)
            run.fail(trial, oom_reason(e, m.cfg.device if m.cfg else None) if oom else reason(e), text)
            if oom:
                self.memory.add(trial.number, m.cfg.device if m.cfg else None)
            if self.verbose:
                show_traceback(trial.number, redact(text))
            release(e, oom)  # before the next trial allocates (the traceback holds the frames)
            raise
        finally:
            self._last_writes(m)

    def _last_writes(self, m: Member) -> None:
        """A trial's last records: queued values, queued metrics, its plot and files; none for a trial
        another process ended. Then what it trained with is let go (its memory, before the next trial)."""
        trial, run = m.trial, m.run
        try:
            if m.owner.lost or gave_up(run.client) is not None:
                return
            if m.reports is not None:
                m.reports.flush()  # every epoch's value stored before Optuna records the trial's end
            if self.records.is_open(trial.number):
                run.flush()
                if m.history:  # tracking.trial_plots (off by default: the MLflow UI draws these curves)
                    with tempfile.TemporaryDirectory() as tmp:
                        run.log_artifact(loss_curves_png(m.history, Path(tmp) / "loss_curves.png"))
                self.records.files_written(trial, run)
        except optuna.exceptions.UpdateFinishedTrialError:
            m.owner.lost = True  # ended by another process between the last look and this write
        except (TrackingDown, KeyboardInterrupt) as e:  # its last records not written: it fails, re-queued
            unrecorded(trial, self.records.take(trial.number), e, self.study.max_retry)
            raise
        finally:
            if m.owner.lost:
                self.records.lost(trial.number)
            m.keeper, m.report, m.problem, m.history = None, None, None, []

    def _reporter(self, m: Member) -> Callable[[int, Mapping[str, float]], None]:
        """The loop's per-epoch callback (3.): the epoch's metrics to MLflow, its target to pruning and to the
        score, while the trial is still this process's; an instant the fault tests stop at."""
        trial, run, history, score, reports, owner = m.trial, m.run, m.history, m.score, m.reports, m.owner
        assert score is not None
        target, can_prune = self.study.metric[0], not self.study.multi_objective
        plots = self.trial_plots
        progress = self.watchdog.progress

        def report(epoch: int, metrics: Mapping[str, float]) -> None:
            progress(epoch)
            if plots:
                history.append(dict(metrics))
            with self.interrupts.shielded():  # database writes: an interrupt waits for their end
                owner.check()  # still this process's trial (else TrialLost: nothing more is written)
                run.log_epoch(epoch, metrics)
                prune = False
                if can_prune:
                    if reports is not None:  # queued, written in batches; pruning decided in process
                        prune = reports.report(metrics[target], epoch)
                    else:
                        trial.report(metrics[target], epoch)
                        prune = trial.should_prune()
                    if prune:
                        run.set_tags({Tag.PRUNED_AT: epoch})
            pause("epoch", epoch)  # an instant inside training, for the fault tests (sweep.core.faultpoints)
            if prune:
                raise optuna.TrialPruned(f"pruned at epoch {epoch}")
            if can_prune:
                score.add(epoch, metrics[target])  # raises EarlyStop when the target has stalled

        return report

    def on_trial_end(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """Optuna's callback at a trial's end: its run closed (:meth:`TrialRuns.close`), its memory counted."""
        pause("told")
        self.memory.ended(trial.state)
        self.records.close(study, trial)
        pause("closed")
