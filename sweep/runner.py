"""Run a study: Optuna samples, the loop trains, MLflow records. No training code lives here.

One objective call = one trial:
  1. create the trial's MLflow child run (so even a trial that fails early has one);
  2. sample the search space and resolve a fully fixed config (seeds derived, device chosen);
  3. run the loop with a reporter that queues per-epoch metrics for MLflow and reports the target to
     Optuna for pruning;
  4. return the target metric(s) of the last epoch; a callback then closes the run with the status
     matching the trial's final state.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import optuna
import torch
import yaml
from tqdm.auto import tqdm

from objectives.config import LOSS_NAMES, LoopConfig
from objectives.helpers import derive_seed
from objectives.loops import LOOPS
from objectives.problems import CoupledProblem, Problem, build_problem
from sweep.config import StudyFile, check_target, target_metrics
from sweep.interrupts import Interrupts
from sweep.report import loss_curves_png, write_report
from sweep.samplers import build_pruner, build_sampler
from sweep.space import resolve, sample
from sweep.tracking import RUN_ATTR, Tracker, TrialRun
from sweep.urls import redact, sqlite_init_lock, sqlite_path

FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
DEFAULT_STORAGE = "sqlite:///.sweep/optuna.db"
FAIL_ATTR = "fail_reason"
CONFIG_ATTR = "config"
T = TypeVar("T")


class SweepError(Exception):
    """A run-time problem reported as one line (storage unreachable, study mismatch...)."""


def storage_url(sf: StudyFile) -> str:
    return sf.study.storage or DEFAULT_STORAGE


def open_storage(url: str, heartbeat: tuple[int, int, Callable] | None = None) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage; SQLite gets a busy timeout so several local workers can share it.

    ``heartbeat`` = (interval, grace period, stale-trial callback): a worker that stops beating for the
    grace period has its trial failed by the next worker that looks, and the callback re-queues it.
    """
    path = sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    engine_kwargs: dict[str, Any] = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    try:
        with sqlite_init_lock(url):
            beat: dict[str, Any] = {}
            if heartbeat is not None:
                beat = {"heartbeat_interval": heartbeat[0], "grace_period": heartbeat[1]}
                beat["heartbeat_stale_trial_callback"] = heartbeat[2]
            return retry_schema_race(lambda: optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **beat))
    except Exception as e:  # sqlalchemy errors, missing drivers, bad URLs
        raise SweepError(f"cannot open Optuna storage {redact(url)}: {redact(_one_line(e, with_type=False))}") from None


_RACING = ("already exists", "database is locked", "UNIQUE constraint failed", "duplicate key")


def retry_schema_race(make: Callable[[], T], attempts: int = 5) -> T:
    """Call ``make``, retrying while another process is creating the same database schema.

    Workers started together on a new SQLite file (Optuna's or MLflow's) race to create its tables;
    the losers see "table ... already exists" or a unique-constraint error, and succeed a moment later.
    """
    for attempt in range(attempts):
        try:
            return make()
        except Exception as e:
            if attempt == attempts - 1 or not any(r in str(e) for r in _RACING):
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def load_existing_study(sf: StudyFile) -> optuna.Study:
    """The study a file names, from its storage, for reading (report, export): creates nothing."""
    url = storage_url(sf)
    path = sqlite_path(url)
    if path is not None and not path.exists():
        raise SweepError(f"no study storage at {path}: run python -m sweep.run on the study file first")
    storage = open_storage(url)
    try:
        return optuna.load_study(study_name=sf.study.name, storage=storage)
    except KeyError:
        raise SweepError(f"study {sf.study.name!r} is not in {redact(url)}: run python -m sweep.run first") from None


def open_study(sf: StudyFile, storage: optuna.storages.BaseStorage, worker: int = 0) -> optuna.Study:
    """Create the study or load it to resume; the sampler seed depends on how many trials exist and on
    the worker, so neither a resume nor a second worker replays the same points."""
    names = {s.study_name: s for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}
    existing = names.get(sf.study.name)
    if existing is not None and tuple(d.name.lower() for d in existing.directions) != sf.study.directions:
        raise SweepError(
            f"study {sf.study.name!r} in storage optimises {[d.name.lower() for d in existing.directions]}, "
            f"the file asks for {list(sf.study.directions)}: use another study name"
        )
    n_existing = existing.n_trials if existing is not None else 0
    # A fresh seed per resume, derived deterministically: the same seed again would replay the
    # random sampler's first points and duplicate trials.
    seed = derive_seed(sf.study.seed, "sampler", n_existing, *([worker] if worker else []))
    return optuna.create_study(
        storage=storage,
        study_name=sf.study.name,
        directions=list(sf.study.directions),
        sampler=build_sampler(sf, seed),
        pruner=build_pruner(sf),
        load_if_exists=True,
    )


def count_finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


@dataclass
class ProblemCache:
    """Built problems by (name, options, data seed, device): data goes to the device once per run."""

    _cache: dict[tuple[str, str, int, str], Problem | CoupledProblem] = field(default_factory=dict)

    def get(self, cfg: LoopConfig) -> Problem | CoupledProblem:
        assert cfg.data_seed is not None
        options = json.dumps(cfg.problem.options, sort_keys=True)
        key = (cfg.problem.name, options, cfg.data_seed, cfg.device)
        if key not in self._cache:
            cpu_key = (*key[:3], "cpu")
            if cpu_key not in self._cache:
                self._cache[cpu_key] = build_problem(cfg.problem.name, cfg.problem.options, cfg.data_seed, cfg.loop)
            self._cache[key] = self._cache[cpu_key].to(cfg.device)
        return self._cache[key]


def _is_out_of_memory(e: BaseException) -> bool:
    return isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower()


def check_tracking(uri: str, timeout: float = 5.0) -> None:
    """Fail fast (one line) when an MLflow tracking server does not answer, before anything is written.

    MLflow's client would otherwise retry for minutes; a local database URI needs no check.
    """
    if not uri.startswith(("http://", "https://")):
        return
    import urllib.error
    import urllib.parse
    import urllib.request

    parts = urllib.parse.urlsplit(uri)
    bare = parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else "")).geturl()  # no user:pass
    try:
        with urllib.request.urlopen(f"{bare.rstrip('/')}/health", timeout=timeout):
            pass
    except urllib.error.HTTPError:
        return  # it answered (an auth or routing error shows up on the first real call)
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise SweepError(f"cannot reach MLflow tracking {redact(uri)}: {redact(str(reason))}") from None


def _one_line(e: BaseException, with_type: bool = True) -> str:
    text = str(e).strip().splitlines()
    if not text:
        return type(e).__name__
    return f"{type(e).__name__}: {text[0]}" if with_type else text[0]


class Objective:
    """The Optuna objective for one study file, plus the callback that closes MLflow runs."""

    def __init__(
        self,
        sf: StudyFile,
        tracker: Tracker,
        problems: ProblemCache,
        interrupts: Interrupts,
        beat: optuna.storages.RDBStorage | None = None,
    ) -> None:
        self.sf, self.tracker, self.problems, self.interrupts = sf, tracker, problems, interrupts
        self.beat = beat  # the study's storage, to record a heartbeat when a trial starts
        self.runs: dict[int, TrialRun] = {}

    def __call__(self, trial: optuna.Trial) -> float | list[float]:
        sf = self.sf
        history: list[dict[str, float]] = []
        # 0. Optuna's heartbeat thread writes its first beat concurrently with this call; a worker
        # killed before that write leaves a trial no one can see as stale (RUNNING for ever). Beat
        # once here, synchronously, so every trial that gets an MLflow run can be recovered.
        if self.beat is not None and self.beat.heartbeat_interval:
            self.beat.record_heartbeat(trial._trial_id)  # Optuna has no public trial id
        run = self.tracker.start_trial(trial)  # 1.
        self.runs[trial.number] = run
        try:
            sampled, weights = sample(trial, sf)  # 2.
            cfg = resolve(sf, trial.number, sampled, weights)
            trial.set_user_attr("weights", list(cfg.weights))
            trial.set_user_attr("seed", cfg.seed)
            trial.set_user_attr(CONFIG_ATTR, cfg.model_dump(mode="json"))  # what export replays
            run.log_params(trial.params)  # exactly what Optuna stored, weights included
            run.log_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), "config.yaml")
            run.set_tags({"sweep.device": cfg.device, "sweep.loop": cfg.loop})
            report = self._reporter(trial, run, history)
            problem = self.problems.get(cfg)
            with warnings.catch_warnings(), self.interrupts.training():
                warnings.simplefilter("once")
                metrics = LOOPS[cfg.loop](cfg, report, problem=problem)  # 3.
            values = [metrics[m] for m in sf.study.metric]  # 4.
            return values[0] if len(values) == 1 else values
        except optuna.TrialPruned:
            raise
        except KeyboardInterrupt:
            # Optuna marks the trial FAIL and re-raises without calling callbacks: close the run here.
            trial.set_user_attr(FAIL_ATTR, "interrupted (KeyboardInterrupt)")
            self.runs.pop(trial.number).end(optuna.trial.TrialState.FAIL, "interrupted (KeyboardInterrupt)")
            raise
        except Exception as e:
            trial.set_user_attr(FAIL_ATTR, redact(_one_line(e)))  # error texts can embed a URL
            if _is_out_of_memory(e):
                # Drop this trial's tensors before the next trial allocates: the exception's traceback
                # holds the frames, so free after it is recorded, then return the cached blocks.
                e.__traceback__ = None
                gc.collect()
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            raise
        finally:
            if trial.number in self.runs:
                run.flush()
                if history:
                    with tempfile.TemporaryDirectory() as tmp:
                        run.log_artifact(loss_curves_png(history, Path(tmp) / "loss_curves.png"))

    def _reporter(
        self, trial: optuna.Trial, run: TrialRun, history: list[dict[str, float]]
    ) -> Callable[[int, Mapping[str, float]], None]:
        target = self.sf.study.metric[0]
        can_prune = not self.sf.study.multi_objective

        def report(epoch: int, metrics: Mapping[str, float]) -> None:
            history.append(dict(metrics))
            with self.interrupts.shielded():  # database writes: an interrupt waits for their end
                run.log_epoch(epoch, metrics)
                prune = False
                if can_prune:
                    trial.report(metrics[target], epoch)
                    prune = trial.should_prune()
                    if prune:
                        run.set_tags({"sweep.pruned_at_epoch": epoch})
            if prune:
                raise optuna.TrialPruned(f"pruned at epoch {epoch}")

        return report

    def on_trial_end(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """Close the child run with the status of the trial's final state."""
        run = self.runs.pop(trial.number, None)
        if run is None and RUN_ATTR in trial.user_attrs:
            run = TrialRun(self.tracker.client, trial.user_attrs[RUN_ATTR])
        if run is not None:
            run.end(trial.state, trial.user_attrs.get(FAIL_ATTR))
        best = _best_value(study)
        self.tracker.trial_finished(trial, best)


def _best_value(study: optuna.Study) -> float | None:
    if study._is_multi_objective():
        return None
    try:
        return study.best_value
    except ValueError:
        return None


class _QuietFailures(logging.Filter):
    """Optuna logs each failed trial with a traceback; we print one line per failure instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not (msg.startswith("Trial ") and " failed " in msg)


class Progress:
    """A progress bar over finished trials (n/N) showing the best value so far."""

    def __init__(self, study: optuna.Study, total: int, enabled: bool) -> None:
        self.bar = tqdm(
            total=total,
            initial=min(count_finished(study), total),
            desc=study.study_name,
            unit="trial",
            disable=not (enabled and sys.stderr.isatty()),
            file=sys.stderr,
            dynamic_ncols=True,
        )

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if trial.state in FINISHED:
            self.bar.update(1)
        best = _best_value(study)
        if best is not None:
            self.bar.set_postfix(best=f"{best:.5g}", refresh=False)
        if trial.state == optuna.trial.TrialState.FAIL:
            tqdm.write(f"trial {trial.number} failed: {trial.user_attrs.get(FAIL_ATTR, '?')}", file=sys.stderr)

    def refresh(self, study: optuna.Study) -> None:
        """Catch up from the storage (the coordinator of several workers has no callbacks)."""
        self.bar.n = min(count_finished(study), self.bar.total)
        best = _best_value(study)
        if best is not None:
            self.bar.set_postfix(best=f"{best:.5g}", refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def preflight(sf: StudyFile, source: Path, problems: ProblemCache) -> None:
    """Checks that need the built problem (a user problem's metrics), before anything is written."""
    cfg = resolve(sf, 0, {}, tuple(sf.objective.weights))
    problem = problems.get(cfg.model_copy(update={"device": "cpu"}))
    names = problem.metric_names()
    extra = tuple(sorted(set(names["a"]) | set(names["b"])))
    allowed = tuple(
        m
        for m in target_metrics(cfg.loop, extra, len(cfg.weights)) or ()
        if not (m.startswith("val_a_") and m[6:] in extra and m[6:] not in names["a"])
        and not (m.startswith("val_b_") and m[6:] in extra and m[6:] not in names["b"])
    )
    check_target(sf.study, allowed, source)


@dataclass
class Outcome:
    study: optuna.Study
    tracker: Tracker
    storage: str
    ran: int
    interrupted: bool = False
    incomplete: str = ""  # why the study is short of n_trials when workers failed (run.py exits 1)


@dataclass
class Session:
    """What a run (or one worker of it) has open: the study, its MLflow side and the problem cache."""

    study: optuna.Study
    tracker: Tracker
    storage: str
    problems: ProblemCache
    rdb: optuna.storages.RDBStorage


class DeadTrials:
    """Optuna's stale-trial callback: a dead worker's trial (its heartbeat stopped) is re-queued, then its
    MLflow run is closed FAILED with the reason."""

    def __init__(self, max_retry: int | None, grace_period: int) -> None:
        self.retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
        self.reason = f"worker died (no heartbeat for {grace_period} s); re-queued"
        self.tracker: Tracker | None = None

    def bind(self, tracker: Tracker) -> None:
        """Close MLflow runs through ``tracker`` from now on (the storage, which calls this, opens first)."""
        self.tracker = tracker

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self.retry(study, trial)  # first: the re-queue must not depend on the tracking store answering
        run_id = trial.user_attrs.get(RUN_ATTR)
        if run_id is None or self.tracker is None:
            return
        try:
            TrialRun(self.tracker.client, run_id).end(optuna.trial.TrialState.FAIL, self.reason)
        except Exception as e:  # busy or unreachable store: the trial is safe; say which run stays open
            print(
                f"warning: could not close MLflow run {run_id} of dead trial {trial.number}: {redact(_one_line(e))}",
                file=sys.stderr,
            )


def open_session(sf: StudyFile, source: Path, source_text: str, worker: int = 0) -> Session:
    """Check everything that can fail before writing, then open (or create) the study and its parent run.

    Raises:
        ConfigError: the problem's metrics do not include the target (user problems).
        SweepError: storage or tracking cannot be opened, or the stored study does not match.
    """
    problems = ProblemCache()
    preflight(sf, source, problems)
    check_tracking(sf.tracking.uri)  # before the study is created: an unreachable server writes nothing
    url = storage_url(sf)
    dead = DeadTrials(sf.study.max_retry, sf.study.grace_period)
    storage = open_storage(url, (sf.study.heartbeat_interval, sf.study.grace_period, dead))
    study = open_study(sf, storage, worker)
    try:
        with sqlite_init_lock(sf.tracking.uri):
            tracker = retry_schema_race(
                lambda: Tracker(
                    sf.tracking,
                    study,
                    parent_tags={
                        "sweep.storage": redact(url),
                        "sweep.study_file": str(source),
                        **{f"sweep.provenance.{k}": redact(str(v)) for k, v in (sf.provenance or {}).items()},
                    },
                )
            )
    except Exception as e:
        raise SweepError(f"cannot open MLflow tracking {redact(sf.tracking.uri)}: {redact(_one_line(e))}") from None
    dead.bind(tracker)
    if worker == 0:
        tracker.log_study_params(
            {
                "metric": ",".join(sf.study.metric),
                "directions": ",".join(sf.study.directions),
                "sampler": sf.study.sampler.type,
                "pruner": build_pruner(sf).__class__.__name__,
                "loop": sf.objective.loop,
                "problem": sf.objective.problem.name,
                "seed": sf.study.seed,
            }
        )
        tracker.log_parent_text(redact(source_text), "study.yaml")  # no password from a URL in the file
        study.set_user_attr("sweep.metric", list(sf.study.metric))
    return Session(study=study, tracker=tracker, storage=url, problems=problems, rdb=storage)


class QuotaStop:
    """When to stop starting trials: after ``quota`` of them, unless trials of a dead worker are missing.

    Quotas split the trials still to run, so workers that all live end with exactly ``n_trials``
    finished. Past its quota a worker fails stale trials itself (a dead worker's), runs any re-queued
    trial, waits while others are still running, and tops up only when a trial was lost with a dead
    worker — never past ``quota + n_trials`` trials of its own.
    """

    def __init__(
        self, target: int, quota: int, interval: int, grace: int, interrupts: Interrupts, first_trial: int = 0
    ) -> None:
        self.target, self.quota, self.interval, self.grace = target, quota, interval, grace
        self.interrupts = interrupts
        self.first_trial = first_trial  # trials numbered from here on belong to this run
        self.ran = 0

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self.ran += 1
        if self.interrupts.requested:
            study.stop()
            return
        if self.ran < self.quota:
            # Other processes on the same study (another machine, another terminal) may have filled it.
            taken = study.get_trials(deepcopy=False, states=(*FINISHED, optuna.trial.TrialState.RUNNING))
            if len(taken) >= self.target:
                study.stop()
            return
        deadline = time.monotonic() + 2 * self.grace + self.interval
        while True:
            optuna.storages.fail_stale_trials(study)
            trials = study.get_trials(deepcopy=False)
            finished = sum(t.state in FINISHED for t in trials)
            running = sum(t.state == optuna.trial.TrialState.RUNNING for t in trials)
            waiting = sum(t.state == optuna.trial.TrialState.WAITING for t in trials)
            if finished >= self.target or self.ran >= self.quota + self.target or self.interrupts.requested:
                break
            if waiting:
                return  # a re-queued trial of a dead worker: run it
            if running and time.monotonic() < deadline:
                time.sleep(min(self.interval, 1.0))  # others still running (or a dead one not yet stale)
                continue
            lost = any(t.system_attrs.get("failed_trial", -1) >= self.first_trial for t in trials)
            if lost and finished + running < self.target:
                return  # top up what a dead worker left undone
            break
        study.stop()


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def run_study(
    sf: StudyFile,
    source: Path,
    source_text: str,
    progress: bool = True,
    verbose: bool = False,
    report: bool = True,
    interrupts: Interrupts | None = None,
    worker: int | None = None,
    quota: int | None = None,
    first_trial: int | None = None,
) -> Outcome:
    """Run (or resume) a study until it has ``study.n_trials`` finished trials or times out.

    As a worker of :func:`run_workers` (``worker`` set), run ``quota`` trials and leave the parent
    run and the report to the coordinator; ``first_trial`` is the number the coordinator's run starts
    at (counted here, a worker that starts late would also count trials its siblings already began).

    Raises:
        ConfigError: the problem's metrics do not include the target (user problems).
        SweepError: storage or tracking cannot be opened, or the stored study does not match.
    """
    # Optuna's per-trial INFO lines would tear the progress bar; the bar shows the same facts.
    optuna.logging.set_verbosity(optuna.logging.INFO if verbose else optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    if sf.study.multi_objective and not worker:
        print(
            "note: multi-objective study: pruning is off (Optuna cannot prune multi-objective studies)", file=sys.stderr
        )
    session = open_session(sf, source, source_text, worker or 0)
    study, tracker = session.study, session.tracker
    remaining = sf.study.n_trials - count_finished(study)
    quota = remaining if quota is None else quota
    interrupts = interrupts or Interrupts()
    objective = Objective(sf, tracker, session.problems, interrupts, beat=session.rdb)
    bar = Progress(study, sf.study.n_trials, progress and worker is None)
    before = len(study.get_trials(deepcopy=False))
    beat = (sf.study.heartbeat_interval, sf.study.grace_period)
    stop = QuotaStop(
        sf.study.n_trials, quota, *beat, interrupts, first_trial=before if first_trial is None else first_trial
    )
    optuna_logger = logging.getLogger("optuna")
    quiet = _QuietFailures()
    optuna_logger.addFilter(quiet)
    for handler in optuna_logger.handlers:
        handler.addFilter(quiet)
    interrupted = False
    try:
        if quota > 0 and not interrupts.requested:
            study.optimize(
                objective,
                timeout=sf.study.timeout,
                catch=(Exception,),
                callbacks=[objective.on_trial_end, bar, stop],
            )
    except KeyboardInterrupt:
        interrupted = True
    finally:
        interrupted = interrupted or interrupts.requested
        bar.close()
        for handler in optuna_logger.handlers:
            handler.removeFilter(quiet)
        optuna_logger.removeFilter(quiet)
        if worker is None:
            finish(session, sf, report, interrupted)
    ran = stop.ran if worker is not None else len(study.get_trials(deepcopy=False)) - before
    return Outcome(study=study, tracker=tracker, storage=session.storage, ran=ran, interrupted=interrupted)


def finish(session: Session, sf: StudyFile, report: bool, interrupted: bool, failed: bool = False) -> None:
    """Log the study's report (tables and plots) to the parent run and close it."""
    if report and not interrupted:
        with tempfile.TemporaryDirectory() as tmp:
            write_report(session.study, sf, Path(tmp))
            session.tracker.log_parent_dir(tmp, "report")
    session.tracker.finish("KILLED" if interrupted else "FAILED" if failed else "FINISHED")


def run_workers(
    sf: StudyFile,
    source: Path,
    source_text: str,
    workers: int,
    devices: list[str],
    passthrough: list[str],
    progress: bool = True,
    report: bool = True,
    interrupts: Interrupts | None = None,
) -> Outcome:
    """Run a study with ``workers`` processes on its storage (Optuna's own distributed mode).

    This process creates the study and its parent run, starts the workers (``python -m sweep.run
    ... --worker i --quota q``, each in its own session so one Ctrl-C reaches them once, through
    here), spreads them over ``devices`` (CUDA_VISIBLE_DEVICES, round robin), shows progress from the
    storage, and writes the report when they are done.
    """
    interrupts = interrupts or Interrupts()
    session = open_session(sf, source, source_text, 0)
    study = session.study
    before = len(study.get_trials(deepcopy=False))
    remaining = max(0, sf.study.n_trials - count_finished(study))
    procs: list[tuple[int, subprocess.Popen]] = []
    for i, quota in enumerate(_split(remaining, workers)):
        if quota == 0:
            continue
        env = dict(os.environ)
        if devices:
            env["CUDA_VISIBLE_DEVICES"] = devices[i % len(devices)]
        command = [sys.executable, "-m", "sweep.run", str(source), "--worker", str(i), "--quota", str(quota)]
        command += ["--first-trial", str(before)]
        procs.append((i, subprocess.Popen([*command, *passthrough], env=env, start_new_session=True)))
    bar = Progress(study, sf.study.n_trials, progress)
    forwarded = 0
    try:
        while any(p.poll() is None for _, p in procs):
            if interrupts.requested and forwarded == 0:
                forwarded = 1
                for _, p in procs:
                    if p.poll() is None:
                        p.send_signal(signal.SIGINT)
            time.sleep(1.0)
            bar.refresh(study)
    except KeyboardInterrupt:  # a second Ctrl-C: the workers stop at once
        for _, p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for _, p in procs:
            p.wait()
    bar.refresh(study)
    bar.close()
    failed = [i for i, p in procs if p.returncode not in (0, 130, -signal.SIGINT)]
    for i, p in procs:
        if i in failed:
            print(f"warning: worker {i} exited with code {p.returncode}", file=sys.stderr)
    interrupted = interrupts.requested
    incomplete = ""
    finished = count_finished(study)
    if failed and not interrupted and finished < sf.study.n_trials:
        # The living workers top up a dead one's trials; here none was left to do it.
        incomplete = (
            f"the study has {finished} of {sf.study.n_trials} finished trials after worker(s) "
            f"{', '.join(map(str, failed))} failed: run the same command again to add the rest"
        )
    finish(session, sf, report, interrupted, failed=bool(incomplete))
    ran = len(study.get_trials(deepcopy=False)) - before
    return Outcome(
        study=study,
        tracker=session.tracker,
        storage=session.storage,
        ran=ran,
        interrupted=interrupted,
        incomplete=incomplete,
    )


def _fmt(v: Any) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def summary(outcome: Outcome, sf: StudyFile) -> str:
    """What the user reads at the end: counts, the best trial(s), and how to open the MLflow UI."""
    study, tracker = outcome.study, outcome.tracker
    trials = study.get_trials(deepcopy=False)
    counts = {s: sum(t.state == s for t in trials) for s in optuna.trial.TrialState}
    lines = [
        f"Study {study.study_name!r}: {len(trials)} trials "
        f"({counts[optuna.trial.TrialState.COMPLETE]} complete, {counts[optuna.trial.TrialState.PRUNED]} pruned, "
        f"{counts[optuna.trial.TrialState.FAIL]} failed; {outcome.ran} run now) in {redact(outcome.storage)}"
    ]
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        lines.append("No trial completed yet.")
    else:
        if sf.study.multi_objective:
            front = sorted(study.best_trials, key=lambda t: t.values[0])
            lines.append(f"Pareto front: {len(front)} trial(s){' (first 10)' if len(front) > 10 else ''}")
            for t in front[:10]:
                values = ", ".join(f"{m} = {_fmt(v)}" for m, v in zip(sf.study.metric, t.values, strict=True))
                named = zip(LOSS_NAMES[sf.objective.loop], t.user_attrs.get("weights", ()), strict=False)
                weights = ", ".join(f"w_{n} = {w:.4g}" for n, w in named)
                weights = f"  ({weights})" if weights else ""
                lines.append(f"    #{t.number}: {values}{weights}")
        else:
            t = study.best_trial
            lines.append(f"Best trial #{t.number}: {sf.study.metric[0]} = {_fmt(t.value)}")
            for name, value in t.params.items():
                lines.append(f"    {name} = {_fmt(value)}")
            if "weights" in t.user_attrs:
                named = zip(LOSS_NAMES[sf.objective.loop], t.user_attrs["weights"], strict=False)
                lines.append(f"    (loss weights: {', '.join(f'{n} = {w:.6g}' for n, w in named)})")
            if RUN_ATTR in t.user_attrs:
                lines.append(f"    MLflow run: {t.user_attrs[RUN_ATTR]}")
    python = sys.executable
    try:
        python = str(Path(python).relative_to(Path.cwd()))
    except ValueError:
        python = "python"
    lines += [
        f"MLflow: experiment {tracker.experiment_name!r} (id {tracker.experiment_id}), parent run {tracker.parent_id}",
        "Open the MLflow UI with:",
        f"    {tracker.ui_command(f'{python} -m mlflow')}",
        f"  then browse {tracker.ui_url()}",
    ]
    return "\n".join(lines)
