"""A session of a study: check before writing, open the study and its parent run, run trials, finish.

:func:`run_study` runs trials in this process (alone or as a worker of :mod:`sweep.execution.workers`) while
:class:`sweep.storage.claims.Claims` allows; :func:`open_session` and :func:`finish` are what the coordinator
of several workers shares with it.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import optuna

from objectives.config import LoopCommon
from objectives.data import DataError, check_data
from objectives.helpers import is_out_of_memory
from objectives.loops import LOOPS
from objectives.preflight import PreflightError, check_batch
from objectives.problems import ProblemError
from sweep.core.errors import ConfigError, SweepError, one_line, to_stderr, warn
from sweep.core.faultpoints import pause
from sweep.core.interrupts import Interrupts
from sweep.core.records import Tag
from sweep.core.sqlite import use_wal
from sweep.core.urls import redact, sqlite_init_lock
from sweep.execution.comparable import check_unchanged, settings
from sweep.execution.finishing import finish
from sweep.search.builders import SeededAtFirstTrial, build_pruner, build_sampler
from sweep.search.defaults import chosen_pruner, chosen_sampler, first_points
from sweep.storage.claims import Claims
from sweep.storage.storage import (
    count_finished,
    open_storage,
    open_study,
    retry_schema_race,
    storage_url,
)
from sweep.studyfile.config import StudyFile
from sweep.studyfile.sections import StudySection
from sweep.studyfile.space import grid_space, resolve
from sweep.studyfile.targets import check_target
from sweep.tracking.artifacts import artifact_root, check_artifact_space
from sweep.tracking.lineage import replay_run_prefix
from sweep.tracking.tracking import Tracker, check_tracking, flatten
from sweep.tracking.trialruns import TrialRuns
from sweep.trials.console import Progress, optuna_output
from sweep.trials.groups import run_groups, run_one_by_one
from sweep.trials.recovery import DeadTrials, agree
from sweep.trials.trial import Objective, ProblemCache
from sweep.trials.watchdog import Watchdog

RUNNING = optuna.trial.TrialState.RUNNING


@dataclass
class Session:
    """What a run (or one worker of it) has open: the study, its MLflow side and the problem cache."""

    study: optuna.Study
    tracker: Tracker
    storage: str
    problems: ProblemCache
    rdb: optuna.storages.RDBStorage


@dataclass
class Others:
    """What the other processes of a ``--workers`` run did (:func:`sweep.execution.workers.run_workers`)."""

    ran: int = 0
    failed: int = 0
    incomplete: str = ""  # why the study is short of n_trials because some of them died


@dataclass
class Outcome:
    """How a run ended: what the summary and the exit status are made from."""

    study: optuna.Study
    tracker: Tracker
    storage: str
    ran: int
    interrupted: bool = False
    incomplete: str = ""  # why the study is short of n_trials (run.py exits 1)
    failed: int = 0  # of the trials run now, how many FAILED (all of them: run.py exits 1)


def preflight(study: StudySection, objective: LoopCommon, source: Path, problems: ProblemCache) -> bool:
    """Checks that need the built problem running, before anything is written: build it (this runs a
    user problem's code), check its data, and push one batch of each task through the model(s), the
    losses, the metrics and one backward pass on the study's device (:func:`objectives.preflight.check_batch`).

    Returns:
        Whether the batch check ran to the end: ``False`` when it ran out of memory (said in a warning;
        trials with other batch sizes or models may fit, and a trial that does not fails on its own).

    Raises:
        ConfigError: ``objective.problem``, one line naming the problem and what is wrong: its function
            raised or returned no problem of the loop's type, its data is empty (or a stream without
            steps per epoch), or the batch failed a check (a loss that is no finite 0-d tensor, a
            broadcasting prediction/target pair, a metric that is no 0-d tensor, no gradient...); or
            the problem's metrics do not include the target.
    """
    cfg = resolve(objective, study.seed, 0, {}, tuple(objective.weights))
    name = cfg.problem.name
    checked = True
    try:  # the user's code, before anything is written: a signal ends it at once (KeyboardInterrupt)
        with Interrupts.active().raising():
            problem = problems.get(cfg.model_copy(update={"device": "cpu"}))
            check_data(problem, cfg.data)
            try:
                check_batch(cfg, problems.get(cfg))  # the copy on the study's device, which the trials reuse
            except Exception as e:
                if not is_out_of_memory(e):
                    raise
                why = one_line(e, with_type=False)
                warn(f"{name}: one batch on {cfg.device} ran out of memory ({why}); not checked")
                checked = False
    except (ProblemError, DataError, PreflightError) as e:
        message = str(e).strip().splitlines()[0].removeprefix(f"{name} ")  # the name once, first
        raise ConfigError(source, "objective.problem", f"{name}: {message}") from None
    except (Exception, SystemExit) as e:  # anything else the user's code raised (or sys.exit) on the way
        raise ConfigError(source, "objective.problem", f"{name}: {one_line(e)}") from None
    loop = LOOPS[cfg.loop]
    check_target(study.metric, study.direction, loop.targets(problem.metric_names(), len(cfg.weights)), source)
    return checked


def weights_bytes(objective: LoopCommon, seed: int, problems: ProblemCache) -> int:
    """The size of one trial's ``weights.pt`` (every model's state), from the problem's untrained model(s)."""
    cfg = resolve(objective, seed, 0, {}, tuple(objective.weights))
    problem = problems.get(cfg.model_copy(update={"device": "cpu"}))
    factories = [getattr(problem, n) for n in ("make_model", "make_model_a", "make_model_b") if hasattr(problem, n)]
    states = [f().state_dict().values() for f in factories]
    return sum(t.numel() * t.element_size() for state in states for t in state)


def open_session(
    sf: StudyFile, source: Path, source_text: str, worker: int = 0, allow_changes: bool = False
) -> Session:
    """Check everything that can fail before writing, then open (or create) the study and its parent run.
    A ``worker`` of ``--workers`` (> 0) waits out a storage outage at its first connection too.

    Raises:
        ConfigError: the problem's metrics do not include the target (user problems).
        SweepError: storage or tracking cannot be opened, or the stored study does not match.
    """
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # set_metric_names, QMC...
    problems = ProblemCache()
    preflight(sf.study, sf.objective, source, problems)
    check_tracking(sf.tracking.uri)  # before the study is created: an unreachable server writes nothing
    root = artifact_root(sf.tracking)
    if root is not None:  # a full or read-only artifact store: refused now, not trial after trial
        check_artifact_space(root, weights_bytes(sf.objective, sf.study.seed, problems))
    url = storage_url(sf.study.storage)
    use_wal()  # SQLite commits without an fsync each (sweep.core.sqlite)
    dead = DeadTrials(sf.study.max_retry, sf.study.grace_period, sf.study.n_trials)
    beat = (sf.study.heartbeat_interval, sf.study.grace_period, dead)
    pause("opening")
    rdb = open_storage(url, beat, sf.study.storage_retry, wait_at_open=worker > 0)  # see sweep.storage.resilient
    chosen = chosen_sampler(sf.study, sf.search, sf.objective)  # the file's, else the space's default
    grid = grid_space(sf.search, sf.objective.loss_terms) if chosen.type == "grid" else None
    sampler = SeededAtFirstTrial(lambda seed: build_sampler(chosen, seed, grid), sf.study.seed)
    pruner = build_pruner(chosen_pruner(sf.study, chosen), sf.study.multi_objective)
    with optuna_output(verbose=False):  # no "A new study created" line per process
        study = open_study(sf.study.name, sf.study.directions, rdb, sampler, pruner)
    check_unchanged(study, settings(sf.study, sf.objective, sf.search), source, allow_changes, note=worker == 0)
    try:
        with sqlite_init_lock(sf.tracking.uri):
            prefix = replay_run_prefix(sf.provenance)  # an export's replay
            tracker = retry_schema_race(lambda: Tracker(sf.tracking, study, sf.study.tracking_retry, prefix))
        provenance = {Tag.PROVENANCE + k: redact(str(v)) for k, v in (sf.provenance or {}).items()}
        tracker.set_parent_tags({Tag.STORAGE: redact(url), Tag.STUDY_FILE: str(source), **provenance})
    except Exception as e:
        raise SweepError(f"cannot open MLflow tracking {redact(sf.tracking.uri)}: {one_line(e)}") from None
    dead.bind(tracker.client)
    agree(study, rdb, tracker.client, tracker.experiment_id, "at start")
    if worker == 0:
        study_params = {
            "metric": ",".join(sf.study.metric),
            "directions": ",".join(sf.study.directions),
            "sampler": chosen.type,
            "pruner": pruner.__class__.__name__,
            "loop": sf.objective.loop,
            "problem": sf.objective.problem.name,
            "seed": sf.study.seed,
            "score": sf.study.score,
        }
        fixed = {k: v for k, v in flatten(sf.objective.model_dump(mode="json")).items() if k not in sf.search.params}
        tracker.log_study_params({**fixed, **study_params})  # the study's fixed settings, as its trials name them
        tracker.log_parent_text(redact(source_text), "study.yaml")  # no password from a URL in the file
        study.set_metric_names(list(sf.study.metric))
        for point in first_points(sf.study, sf.search, sf.objective):  # baselines first; a resume finds them there
            study.enqueue_trial(dict(point), skip_if_exists=True)
    return Session(study=study, tracker=tracker, storage=url, problems=problems, rdb=rdb)


def run_study(
    sf: StudyFile,
    source: Path,
    source_text: str,
    progress: bool = True,
    verbose: bool = False,
    report: bool = True,
    interrupts: Interrupts | None = None,
    worker: int | None = None,
    allow_changes: bool = False,
    session: Session | None = None,
    others: Callable[[Progress], Others] | None = None,
) -> Outcome:
    """Run (or resume) a study until it has ``study.n_trials`` finished trials (or times out).

    Several processes may run the same study at once (``--workers``, other machines): each claims
    trials through :class:`sweep.storage.claims.Claims`, so together they end with exactly ``n_trials``
    finished, and whichever lives tops up a trial another lost. As a worker of
    :func:`sweep.execution.workers.run_workers` (``worker`` set) leave the parent run and the report to the
    coordinator.

    Raises:
        ConfigError: the problem's metrics do not include the target (user problems).
        SweepError: storage or tracking cannot be opened, the stored study does not match, or the
            storage stayed unreachable longer than ``study.storage_retry``.
    """
    session = session or open_session(sf, source, source_text, worker or 0, allow_changes)
    study = session.study
    interrupts = interrupts or Interrupts()
    say = None if worker is not None else (lambda line: to_stderr(f"note: {line}"))
    interval = sf.study.heartbeat_interval
    records = TrialRuns(session.tracker, beat=session.rdb)  # the trials' heartbeats and MLflow runs
    claims = Claims(
        study,
        session.rdb.engine,
        session.storage,
        sf.study.n_trials,
        interval,
        interrupts,
        say,
        halt=records.files.stop,
        retry=session.rdb.retrying,
        grace=sf.study.grace_period,  # a stopped holder of the claim lock holds this process up no longer
        storage=session.rdb,  # says when the trial exists: the lock goes then
    )
    limits = sf.study.trial_timeout, sf.study.stall_timeout
    watchdog = Watchdog(*limits, interrupts, grace=sf.study.grace_period)  # hung trials
    objective = Objective(
        sf.study,
        sf.search,
        sf.objective,
        records,
        session.problems,
        interrupts,
        watchdog,
        started=claims.release,
        trial_plots=sf.tracking.trial_plots,
        verbose=verbose,
    )
    bar = Progress(study, sf.study.n_trials, progress and worker is None)
    interrupted, error = False, False
    try:
        with optuna_output(verbose), watchdog.installed():
            if claims.claim():
                k, timeout = sf.study.parallel_trials, sf.study.timeout
                if k > 1:  # K trials at once as one program (sweep.trials.groups)
                    run_groups(study, objective, k, claims, [objective.on_trial_end, bar], timeout)
                else:
                    run_one_by_one(study, objective, claims, [objective.on_trial_end, bar, claims], timeout)
    except KeyboardInterrupt:
        interrupted = True
    except BaseException:
        error = True
        raise
    finally:
        claims.release()
        if others is None:
            bar.close()
        interrupted = interrupted or interrupts.requested
        if worker is None and error:
            with contextlib.suppress(Exception):  # the storage is down: the parent closes FAILED
                session.tracker.finish("FAILED")
    if objective.memory.summary():
        warn(objective.memory.summary())
    incomplete = records.files.why() if records.files.stopped else ""
    if claims.gave_up:
        incomplete = (
            f"{claims.failed} trials failed in this run, as many as n_trials: stopped with "
            f"{count_finished(study)} of {sf.study.n_trials} finished (each failed run's error.txt in MLflow "
            "has the traceback; or re-run with --verbose)"
        )
    ran, failed = claims.ran, claims.failed
    if others is not None:  # the processes started beside this one (sweep.execution.workers): wait for them
        them = others(bar)
        bar.close()
        ran, failed = ran + them.ran, failed + them.failed
        interrupted = interrupted or interrupts.requested
        incomplete = incomplete or them.incomplete
    if worker is None:
        losses = sf.objective.loop_losses
        unfinished = finish(session, sf.study, losses, report, interrupted, failed=bool(incomplete))
        incomplete = incomplete or unfinished
    return Outcome(study, session.tracker, session.storage, ran, interrupted, incomplete, failed=failed)
