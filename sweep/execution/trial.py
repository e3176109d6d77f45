"""One trial: sample → resolve → train → record. No training code lives here.

One objective call = one trial:
  1. open the trial's tracking (heartbeat, then its MLflow child run), so even a trial that fails
     early has a run;
  2. sample the search space and resolve a fully fixed config (seeds derived, device chosen);
  3. run the loop with a reporter that queues per-epoch metrics for MLflow and reports the target to
     Optuna for pruning — under the trial's time limits (:mod:`sweep.execution.watchdog`), and writing only while
     the trial is still this process's (:mod:`sweep.storage.ownership`: another may have failed it as stale);
  4. return the trial's value (the last epoch's target, or the best epoch's with ``study.score: best``
     or early stopping) and write the kept weights once; :meth:`Objective.on_trial_end` then closes
     the run with the status matching the trial's final state. A failed trial's memory is let go before
     the next trial starts (:mod:`sweep.execution.memory`).
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from mlflow.exceptions import MlflowException

from objectives.config import LoopCommon
from objectives.loops import LOOPS
from objectives.problems import build_problem
from sweep.core.errors import one_line, reason, warn
from sweep.core.faultpoints import pause
from sweep.core.interrupts import Interrupts
from sweep.core.records import Attr, Tag
from sweep.core.urls import redact
from sweep.execution.console import show_traceback
from sweep.execution.memory import MemoryLog, details, oom_reason, out_of_memory, release
from sweep.execution.recovery import requeue_unrun, unrecorded
from sweep.execution.watchdog import Watchdog, abandon
from sweep.results.report import loss_curves_png
from sweep.results.scoring import EarlyStop, Keeper, Score
from sweep.storage.ownership import Owner, TrialLost
from sweep.storage.pruning import CompletedView, Reports
from sweep.storage.storage import WEIGHTS, best_value, trial_id
from sweep.studyfile.config import StudyFile
from sweep.studyfile.space import resolve, sample
from sweep.tracking.artifacts import ArtifactWatch, unwritable
from sweep.tracking.tracking import Tracker, TrialRun, close_run
from sweep.tracking.trackingretry import TrackingDown, gave_up


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
                loop = LOOPS[cfg.loop]  # type: ignore[attr-defined]
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
    """The Optuna objective for one study file, plus the callback that closes MLflow runs."""

    def __init__(
        self,
        sf: StudyFile,
        tracker: Tracker,
        problems: ProblemCache,
        interrupts: Interrupts,
        beat: optuna.storages.RDBStorage | None = None,
        verbose: bool = False,
        started: Callable[[int], bool] = lambda _number: True,
    ) -> None:
        self.sf, self.tracker, self.problems, self.interrupts = sf, tracker, problems, interrupts
        self.started = started  # called once the trial exists (sweep.storage.claims.Claims.release)
        self.verbose = verbose  # print a failed trial's traceback
        self.beat = beat  # the study's storage, to record a heartbeat when a trial starts
        self.runs: dict[int, TrialRun] = {}
        self.asked: int | None = None  # the trial being run now, also before (or without) its MLflow run
        self.files = ArtifactWatch()  # stops the study when trials in a row could write no file
        self.watchdog = Watchdog(None, None, interrupts, 0)  # the trials' time limits (the runner sets them)
        self.lost: set[int] = set()  # trials another process ended while this one trained them
        self.memory = MemoryLog()  # trials that ran out of memory

    def __call__(self, trial: optuna.Trial) -> float | list[float]:
        self.asked = trial.number
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
            tid = trial_id(self.beat, trial.study, trial.number) if self.beat is not None else None
            run = self.runs[trial.number] = TrialRun.open(self.tracker, trial, self.beat, tid)  # 1.
        except Exception as e:
            self._store_refused(e)
            trial.set_user_attr(Attr.FAIL, e.reason if isinstance(e, TrackingDown) else reason(e))
            raise
        return Member(trial, run, tid, Owner(self.beat, tid, trial.number, self.sf.study.heartbeat_interval))

    def setup(self, m: Member, view: CompletedView | None = None) -> None:
        """Sample and resolve the trial's config (2.), record it, and make what training reports to
        (``view``: the completed trials pruning compares with, shared by a group's members)."""
        sf, trial = self.sf, m.trial
        sampled, weights = sample(trial, sf.search, sf.objective)  # 2.
        m.cfg = cfg = resolve(sf.objective, sf.study.seed, trial.number, sampled, weights)
        m.run.record_config(trial, cfg.model_dump(mode="json"), {Tag.DEVICE: cfg.device, Tag.LOOP: cfg.loop})
        m.score = Score(sf.study.directions[0], sf.study.score, cfg.early_stopping)
        m.keeper = self._keeper(cfg, m.score)
        if self.beat is not None and m.tid is not None and not sf.study.multi_objective:  # no pruning otherwise
            m.reports = Reports(trial, self.beat, m.tid, view=view)
        m.report = self._reporter(trial, m.run, m.history, m.score, m.reports, m.owner)
        m.problem = self.problems.get(cfg)

    def train_one(self, m: Member) -> dict[str, float]:
        """Train the member's config on its own (3.)."""
        assert m.cfg is not None
        with self.watchdog.watching(self.abandoner([m])), warnings.catch_warnings(), self.interrupts.training():
            warnings.simplefilter("once")
            return LOOPS[m.cfg.loop].train(m.cfg, m.report, problem=m.problem, checkpoint=m.keeper)  # type: ignore[attr-defined]  # 3.

    def abandoner(self, members: list[Member]) -> Callable[[str], None]:
        """What the watchdog does with ``members`` when their training does not stop (sweep.execution.watchdog)."""
        runs = [(m.trial.number, m.tid, m.run.log_text) for m in members]
        return lambda why: abandon(self.beat, members[0].trial.study, runs, why)

    def conclude(self, m: Member, train: Callable[[], dict[str, float]]) -> float | list[float]:
        """Run ``train`` (the member's training, or what its group's training gave it) and record how the
        trial ended (4.): its value, its kept weights, or why it failed; re-raises what stopped it. A trial
        another process ended meanwhile gets no record from this process (:class:`TrialLost`)."""
        sf, trial, run = self.sf, m.trial, m.run
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
            self._keep_weights(trial, run, m.keeper)
            if sf.study.multi_objective:  # 4. the last epoch's values (no single best epoch)
                return [metrics[name] for name in sf.study.metric]
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
            unrecorded(trial, self.runs.pop(trial.number, None), e, sf.study.max_retry)
            raise
        except Exception as e:
            oom = out_of_memory(e)
            m.keeper = m.report = None  # the trial's models and tensors: freed with its frames (release)
            if isinstance(e, TrackingDown):  # not the config's fault: it fails with the reason, re-queued
                unrecorded(trial, self.runs.pop(trial.number, None), e, sf.study.max_retry)
                raise
            if m.owner.ended_by(e):
                release(e, oom)
                raise TrialLost(m.owner.why) from None
            text = details(e)
            self._store_refused(e)
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
            if trial.number in self.runs:
                run.flush()
                if m.history:  # tracking.trial_plots (off by default: the MLflow UI draws these curves)
                    with tempfile.TemporaryDirectory() as tmp:
                        run.log_artifact(loss_curves_png(m.history, Path(tmp) / "loss_curves.png"))
                self._files(trial, run)
        except optuna.exceptions.UpdateFinishedTrialError:
            m.owner.lost = True  # ended by another process between the last look and this write
        except (TrackingDown, KeyboardInterrupt) as e:  # its last records not written: it fails, re-queued
            unrecorded(trial, self.runs.pop(trial.number, None), e, self.sf.study.max_retry)
            raise
        finally:
            if m.owner.lost:
                self.lost.add(trial.number)
            m.keeper, m.report, m.problem, m.history = None, None, None, []

    def _store_refused(self, e: Exception) -> None:
        """A tracking store that refused a write for lack of room or permission stops the study after this
        trial (:meth:`sweep.tracking.artifacts.ArtifactWatch.store_failed`)."""
        why = unwritable(e) if isinstance(e, MlflowException) else ""
        if why:
            self.files.store_failed(why)

    def _files(self, trial: optuna.Trial, run: TrialRun) -> None:
        """Say why a file could not be written (the trial keeps its metrics and state), and count it
        towards stopping the study when no file can be written at all (:class:`ArtifactWatch`)."""
        self.files.trial_files(run.files_written, run.artifact_errors)
        if run.artifact_errors:
            why = "; ".join(run.artifact_errors)
            run.set_tags({Tag.ARTIFACT_ERROR: why})
            trial.set_user_attr(Attr.ARTIFACT_ERROR, why)
            if self.files.in_a_row == 1:
                warn(f"trial {trial.number}: could not write {why}")

    def _keeper(self, cfg: LoopCommon, score: Score) -> Keeper | None:
        """The checkpoint callback ``objective.checkpoint`` asks for (by default: the epoch the trial reports)."""
        mode = cfg.checkpoint or ("best" if score.rule == "best" or cfg.early_stopping else "last")
        return None if mode == "none" else Keeper(mode, self.sf.study.metric[0], score)

    @staticmethod
    def _keep_weights(trial: optuna.Trial, run: TrialRun, keeper: Keeper | None) -> None:
        """Write the kept weights once, at the end, as the run's ``weights.pt`` (a pruned trial keeps none)."""
        if keeper is None:
            return
        with tempfile.TemporaryDirectory() as tmp:
            if keeper.save(Path(tmp) / WEIGHTS) is not None and run.log_artifact(Path(tmp) / WEIGHTS):
                run.set_tags({Tag.CHECKPOINT_EPOCH: keeper.epoch})
                trial.set_user_attr(Attr.CHECKPOINT_EPOCH, keeper.epoch)

    def _reporter(
        self,
        trial: optuna.Trial,
        run: TrialRun,
        history: list[dict[str, float]],
        score: Score,
        reports: Reports | None,
        owner: Owner,
    ) -> Callable[[int, Mapping[str, float]], None]:
        target, can_prune = self.sf.study.metric[0], not self.sf.study.multi_objective
        plots = self.sf.tracking.trial_plots
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
        """Close the child run with the status of the trial's final state: a store that refuses costs a warning,
        one unreachable past ``study.tracking_retry`` stops the study once this process's trials have ended
        (the run stays RUNNING until :func:`sweep.execution.recovery.close_stray_runs` closes it at the next start)."""
        pause("told")
        run = self.runs.pop(trial.number, None)
        self.memory.ended(trial.state)
        if trial.number in self.lost:  # another process ended it, and closed its run: nothing to write
            self.lost.discard(trial.number)
            return
        if (down := gave_up(self.tracker.client)) is not None:  # nothing more is sent (sweep.tracking.trackingretry)
            if not self.runs:  # this process's last open trial: it stops (sweep.run: one line, exit 1)
                raise down
            return
        try:
            if run is not None:
                run.close(trial.state)
            elif Attr.RUN in trial.user_attrs:  # a run this process did not open (a re-queued trial's)
                run_id = trial.user_attrs[Attr.RUN]
                close_run(self.tracker.client, run_id, trial.state, trial.user_attrs.get(Attr.FAIL))
        except MlflowException as e:
            warn(f"could not close trial {trial.number}'s MLflow run ({one_line(e)}); closed at the next start")
            return
        with contextlib.suppress(MlflowException):  # the parent's best-so-far curve misses a point
            self.tracker.trial_finished(trial, best_value(study))
        pause("closed")
