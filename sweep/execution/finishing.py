"""The end of a study (:func:`finish`: stray runs, the report, the parent run), done by one process, and
one evaluation, however many processes run it.

Several processes may run one study to its end at once (machines on a shared storage, ``--workers``
coordinators, a comparison started twice). Each of them reaches the end; without agreeing, each wrote
the report (tables, plots) to the study's MLflow parent run and closed it, and each retrained the
configurations of the study file's ``evaluate:``. Here they agree through the study's storage: under a
lock of the study's (:func:`sweep.storage.claims.study_lock`, held for a few reads and writes, under a name of
its own: trial claims never wait for it) the first process records a claim on the study (a system
attribute: who, since when), then does the work outside the lock while a thread renews the claim every
``study.heartbeat_interval`` seconds (the database server's clock, as Optuna's heartbeats). Another
process that finds a live claim (renewed within ``study.grace_period``; on the same machine, its
process still there) says in one line who is at it and does nothing; a dead claimer's claim (``kill
-9``) is taken over by the next process that ends the study (a re-run).

- :func:`close_once` (system attribute :data:`FINISHED_BY`, with the finished count): the claimer
  writes the report, closes the parent run FINISHED and records that it is done; a process that finds it
  done for the same count says who wrote it (a resume that adds trials writes a new report).
- :func:`evaluation_claim` (:data:`EVALUATING`): a comparison's evaluation is claimed on its first
  choice's study. A finished evaluation needs no claim: its results are on the study, and an evaluation
  started later shows them from there (:func:`sweep.commands.evaluate.evaluate`).
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from mlflow.exceptions import MlflowException

from sweep.core.errors import one_line, to_stderr, warn
from sweep.core.faultpoints import pause
from sweep.core.interrupts import Interrupts
from sweep.core.records import SystemAttr
from sweep.core.urls import sqlite_path
from sweep.results.report import write_report
from sweep.storage.claims import study_lock
from sweep.storage.resilient import storage_down
from sweep.storage.storage import count_finished, fail_stale_trials, open_storage, storage_url
from sweep.trials.recovery import agree

if TYPE_CHECKING:
    from sweep.execution.runner import Session
    from sweep.studyfile.sections import StudySection

RUNNING = optuna.trial.TrialState.RUNNING
FINISHED_BY = SystemAttr.FINISHED_BY  # study → {"finished", "report", "by", "at", "running", "done"}: who ends it
EVALUATING = SystemAttr.EVALUATING  # study → {"by", "at", "running", "done"}: who evaluates it


def me() -> str:
    """This process, as the records name it: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def server_now(rdb: optuna.storages.RDBStorage) -> datetime:
    """The storage's clock (naive UTC), as Optuna's heartbeats use it: machines' clocks may differ."""
    from sqlalchemy import func, select

    def now() -> Any:
        with rdb.engine.connect() as conn:
            return conn.execute(select(func.now())).scalar()

    found = rdb.retrying("clock", now) if hasattr(rdb, "retrying") else now()  # type: ignore[attr-defined]
    return found.astimezone(UTC).replace(tzinfo=None) if found.tzinfo else found


def settle(study: optuna.Study, within_s: float, every_s: float) -> None:
    """Trials still RUNNING in a finished study belong to dead processes: fail them once stale (looking every
    ``every_s`` seconds, for at most ``within_s``)."""
    deadline = time.monotonic() + within_s
    while study.get_trials(deepcopy=False, states=(RUNNING,)) and time.monotonic() < deadline:
        time.sleep(min(1.0, every_s))
        fail_stale_trials(study)


class Claim:
    """What :func:`claimed` found: ``other``, the live or settled record of another process (``None``: the
    work is this process's); set ``done`` once the work is done (recorded when the block ends)."""

    def __init__(self, other: dict[str, Any] | None) -> None:
        self.other, self.done = other, False


@contextlib.contextmanager
def claimed(
    rdb: optuna.storages.RDBStorage,
    url: str,
    study_name: str,
    key: str,
    section: Any,
    settled: Callable[[dict[str, Any]], bool] = lambda _record: False,
    **fields: Any,
) -> Iterator[Claim]:
    """Claim the work ``key`` names on study ``study_name`` for the block, unless ``settled`` says the
    record shows it done, or another live process holds the claim (see the module's docstring).

    Args:
        section: The study file's ``study:`` (its ``grace_period`` and ``heartbeat_interval``).
        fields: Recorded with the claim (what ``settled`` compares with).
    """
    study_id = rdb.get_study_id_from_name(study_name)
    shielded = Interrupts.active().shielded  # no signal in the middle of these writes (sweep.core.interrupts)
    with shielded(), study_lock(rdb.engine, url, f"{study_name} [{key}]"):  # not the trials' lock: no claim waits
        record = rdb.get_study_system_attrs(study_id).get(key) or {}
        busy = record.get("running") and record.get("by") != me() and _alive(record, rdb, section.grace_period)
        if not (busy or settled(record)):
            record = {**fields, "by": me(), "running": True, "done": False, "at": server_now(rdb).isoformat()}
            rdb.set_study_system_attr(study_id, key, record)
    claim = Claim(None if record.get("by") == me() and record.get("running") else record)
    if claim.other is not None:
        yield claim
        return
    stop = threading.Event()
    beat = threading.Thread(target=_renew, args=(rdb, study_id, key, stop, section.heartbeat_interval), daemon=True)
    beat.start()
    try:
        yield claim
    finally:
        stop.set()
        beat.join()
        with contextlib.suppress(Exception), shielded(), study_lock(rdb.engine, url, f"{study_name} [{key}]"):
            record = rdb.get_study_system_attrs(study_id).get(key) or {}
            if record.get("by") == me():  # (the storage gone: the claim goes stale)
                rdb.set_study_system_attr(study_id, key, {**record, "running": False, "done": claim.done})


def close_once(session: Session, report: Callable[[], bool | None] | None, section: StudySection) -> str:
    """Write the report (``report``; ``None``: none asked for) and close the parent run FINISHED, unless
    another process does or did so for the study as it stands now (see the module's docstring). A report
    interrupted by a signal (``report`` returns ``False``) closes the parent run KILLED and leaves the
    study to whoever ends it next.

    Returns:
        Why the parent run could not be closed (one line), or ``""``.
    """
    study, tracker, rdb = session.study, session.tracker, session.rdb
    pause("finish")  # every process that ends the study passes here (tests hold them all)
    closed = False
    try:
        n = count_finished(study)

        def settled(record: dict[str, Any]) -> bool:  # ended for this count (with a report, if one is asked for)
            return (
                bool(record.get("done"))
                and record.get("finished", -1) >= n
                and bool(record.get("report") or not report)
            )

        with claimed(
            rdb, session.storage, study.study_name, FINISHED_BY, section, settled, finished=n, report=bool(report)
        ) as claim:
            if claim.other is not None:
                if claim.other.get("done") and tracker.client.get_run(tracker.parent_id).info.status == "RUNNING":
                    tracker.finish("FINISHED")  # reopened by a process started after the close (sweep.tracking)
                done, by = claim.other.get("done"), claim.other.get("by")
                if claim.other.get("report"):
                    what = f"the report of the study's {n} finished trials is {'' if done else 'being '}written"
                else:
                    what = f"the study's parent run ({n} finished trials) is {'' if done else 'being '}closed"
                to_stderr(f"note: {what} by {by}")
                return ""
            pause("finish_claimed")  # claimed, nothing written yet (tests kill it here)
            if report is not None:
                to_stderr(f"note: this process ({me()}) writes the report of the study's {n} finished trials")
                if report() is False:  # interrupted: the next process to end the study writes it
                    tracker.finish("KILLED")
                    return ""
            tracker.finish("FINISHED")
            closed = claim.done = True
        return ""
    except Exception as e:  # the storage or the tracking store gone: the next run finishes it
        down = storage_down(e)
        if not closed:
            with contextlib.suppress(Exception):
                tracker.finish("FAILED")
        return str(down) if down else f"could not finish the study ({one_line(e)}); run the same command again"


def _alive(record: dict[str, Any], rdb: optuna.storages.RDBStorage, grace_s: float) -> bool:
    """Whether the process a claim names may still be at work: its claim renewed within ``grace_s``
    seconds (and, on this machine, its process still there)."""
    host, _, pid = str(record.get("by", "")).rpartition(":")
    if host == socket.gethostname() and pid.isdigit():
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # another user's process: alive
    try:
        at = datetime.fromisoformat(str(record["at"]))
    except (KeyError, ValueError):
        return False
    return (server_now(rdb) - at).total_seconds() < grace_s


def _renew(rdb: optuna.storages.RDBStorage, study_id: int, key: str, stop: threading.Event, every_s: float) -> None:
    """A claim's heartbeat (a thread): renew it every ``every_s`` seconds while it is still ours."""
    while not stop.wait(every_s):
        with contextlib.suppress(Exception):  # an outage: the next beat tries again
            record = rdb.get_study_system_attrs(study_id).get(key) or {}
            if record.get("by") == me() and record.get("running"):
                rdb.set_study_system_attr(study_id, key, {**record, "at": server_now(rdb).isoformat()})


@contextlib.contextmanager
def evaluation_claim(study: StudySection, name: str) -> Iterator[str | None]:
    """Claim the evaluation of the study for this process while the block runs.

    Args:
        study: The study file's ``study`` section (its storage).
        name: The study the claim is held on: its own, or a comparison's first choice's (for all its choices).

    Yields:
        ``None``: this process evaluates; else who does (``host:pid``): evaluate nothing. A study not in
        its storage yields ``None`` (the evaluation says what is missing).
    """
    url = storage_url(study.storage)
    path = sqlite_path(url)
    if path is not None and not path.exists():  # nothing to open (nor to create here)
        yield None
        return
    rdb = open_storage(url, retry_s=study.storage_retry)
    try:
        rdb.get_study_id_from_name(name)
    except KeyError:
        yield None
        return
    pause("evaluate")  # every process about to evaluate passes here (tests hold them all)
    with claimed(rdb, url, name, EVALUATING, study) as claim:
        if claim.other is None:
            pause("evaluate_claimed")  # claimed, nothing retrained yet
        yield None if claim.other is None else str(claim.other.get("by"))


def finish(
    session: Session,
    section: StudySection,
    losses: Sequence[str],
    report: bool,
    interrupted: bool,
    failed: bool = False,
) -> str:
    """Close what the run leaves: stray MLflow runs, then the report (tables, plots) and the parent run —
    FINISHED once the study is done (by one of the processes that end it, :func:`sweep.execution.finishing.close_once`),
    FAILED when it had to give up, KILLED when interrupted; left RUNNING while others still run trials.

    Never raises (but for an interrupt): a report that cannot be written is a warning, and whatever
    else fails here (the storage gone, memory exhausted) closes the parent run FAILED.

    Returns:
        Why the study could not be finished (one line), or ``""``.
    """
    study, tracker = session.study, session.tracker
    why = ""
    try:
        done = count_finished(study) >= section.n_trials
        if done and not interrupted:  # trials still RUNNING belong to dead processes: failed once stale
            settle(study, section.grace_period + 2 * section.heartbeat_interval, section.heartbeat_interval)
        agree(study, session.rdb, tracker.client, tracker.experiment_id, "at the end")
        if not done and not failed and study.get_trials(deepcopy=False, states=(RUNNING,)):
            return ""  # the study goes on in other processes: the one that finishes it closes the parent
    except Exception as e:  # the storage gone (its own line), memory exhausted...
        down = storage_down(e)
        why = str(down) if down else f"could not finish the study ({one_line(e)}); run the same command again"
    status = "KILLED" if interrupted else "FAILED" if failed or why else "FINISHED"
    if status == "FINISHED":  # of all the processes on the study, one writes the report and closes the run
        return close_once(session, (lambda: _report(session, section, losses)) if report else None, section)
    if report and not interrupted and not why:
        _report(session, section, losses)
    try:
        tracker.finish(status)
    except Exception as e:  # the tracking store is gone: the next start or finish closes it
        return why or f"could not close the study's MLflow parent run ({one_line(e)}); run the same command again"
    return why


def _report(session: Session, section: StudySection, losses: Sequence[str]) -> bool:
    """The report (tables, plots) on the parent run; a failure is one warning (``python -m sweep.report`` writes
    it again). A signal ends the reading and drawing at once (no lock held), said in one line: ``False``."""
    try:
        with tempfile.TemporaryDirectory() as tmp, Interrupts.active().raising():  # no database write in it
            client = session.tracker.client
            write_report(session.study, section.metric, section.directions, losses, Path(tmp), client=client)
            session.tracker.log_parent_dir(tmp, "report")
    except KeyboardInterrupt:
        to_stderr("Interrupted while writing the report: every trial is saved; python -m sweep.report writes it")
        return False
    except Exception as e:  # a full artifact store, memory exhausted, a plot that fails
        plain = isinstance(e, OSError | MlflowException)  # their own words say what failed
        warn(f"could not write the report to the parent run: {one_line(e, with_type=not plain)}")
    return True
