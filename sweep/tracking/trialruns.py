"""The records of the trials one process runs: each trial's heartbeat and MLflow run, from open to close.

:class:`TrialRuns` is the one owner of them. It beats and opens a trial's run (:meth:`TrialRuns.open`), beats
for a group's members while they train (:meth:`TrialRuns.beating`), writes a trial's files and kept weights,
and closes its run with the state of the trial's end (:meth:`TrialRuns.close`); which trials another process
ended meanwhile (nothing more is written to them) and whether files can be written at all
(:class:`~sweep.tracking.artifacts.ArtifactWatch`) are its to know. The trial's sequence
(:mod:`sweep.trials.trial`) calls it; nothing else writes its fields.
"""

from __future__ import annotations

import contextlib
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
from mlflow.exceptions import MlflowException

from sweep.core.errors import one_line, warn
from sweep.core.records import Attr, Tag
from sweep.storage.storage import WEIGHTS, best_value, trial_id
from sweep.tracking.artifacts import ArtifactWatch, unwritable
from sweep.tracking.bulk import GroupLog, Records, write_many
from sweep.tracking.tracking import Tracker, TrialRun, close_run, tags_of
from sweep.tracking.trackingretry import gave_up


class TrialRuns:
    """The heartbeats and MLflow runs of this process's trials.

    Args:
        tracker: The study's MLflow side (experiment, parent run, client).
        beat: The study's storage, to record a trial's heartbeat before its run exists (``None``: no beats).
    """

    def __init__(self, tracker: Tracker, beat: optuna.storages.RDBStorage | None = None) -> None:
        self.tracker, self.beat = tracker, beat
        self.files = ArtifactWatch()  # stops the study when trials in a row could write no file
        self._runs: dict[int, TrialRun] = {}
        self._lost: set[int] = set()  # trials another process ended while this one trained them

    def open(self, trial: optuna.Trial) -> tuple[TrialRun, int | None]:
        """Beat once, then open the trial's child run (:meth:`TrialRun.open`).

        Returns:
            The run, and the trial's id in the storage (``None`` without beats).

        Raises:
            Exception: what the storage or the tracking store raised; a store that refused for lack of room
                or permission first counts towards stopping the study (:meth:`store_refused`).
        """
        try:
            tid = trial_id(self.beat, trial.study, trial.number) if self.beat is not None else None
            run = self._runs[trial.number] = TrialRun.open(self.tracker, trial, self.beat, tid)
        except Exception as e:
            self.store_refused(e)
            raise
        return run, tid

    def numbers(self) -> set[int]:
        """The trials whose runs are open."""
        return set(self._runs)

    def is_open(self, number: int) -> bool:
        """Whether trial ``number``'s run is open (not yet closed, nor given up as unrecorded)."""
        return number in self._runs

    def take(self, number: int) -> TrialRun | None:
        """Trial ``number``'s run, no longer this object's to close (a trial left unrecorded closes it itself)."""
        return self._runs.pop(number, None)

    def lost(self, number: int) -> None:
        """Trial ``number`` was ended by another process: its run gets nothing more from this one."""
        self._lost.add(number)
        run = self._runs.get(number)
        if run is not None and run.group is not None:  # nor from its group's shared queue
            run.group.drop(run.run_id)

    def hold(self, runs: Sequence[TrialRun]) -> None:
        """Keep ``runs``' params and tags (:meth:`TrialRun.record_config`) until :meth:`send_held` sends them."""
        for run in runs:
            run.held = []

    def send_held(self, runs: Sequence[tuple[TrialRun, Mapping[str, Any]]]) -> dict[str, Exception]:
        """Send each run's held params and tags, and ``tags`` more, for all runs in one transaction
        (:func:`~sweep.tracking.bulk.write_many`); the runs hold nothing more.

        Returns:
            The runs whose records were refused, with what their own ``log_batch`` raised.
        """
        batches: dict[str, Records] = {}
        for run, tags in runs:
            held, run.held = run.held or [], None
            params = [p for ps, _ in held for p in ps]
            batches[run.run_id] = ((), params, [t for _, ts in held for t in ts] + tags_of(tags))
        return write_many(self.tracker.client, batches)

    def grouped(self, runs: Sequence[tuple[TrialRun, Callable[[], bool]]]) -> None:
        """A vectorized group's runs: their per-epoch metrics queued and sent together from now on
        (:class:`~sweep.tracking.bulk.GroupLog`).

        Args:
            runs: Each member's run, and whether it is still this process's to write (asked before another
                member sends its queue).
        """
        shared = GroupLog(self.tracker.client)
        for run, mine in runs:
            run.group = shared
            shared.join(run.run_id, mine)

    @contextlib.contextmanager
    def beating(self, trial_ids: Sequence[int]) -> Iterator[None]:
        """Record every one of ``trial_ids``' heartbeats every ``heartbeat_interval`` seconds while the block
        runs (what Optuna's own heartbeat thread does for a trial run by ``study.optimize``): a group's members."""
        interval = getattr(self.beat, "heartbeat_interval", None)
        if not interval or not trial_ids:
            yield
            return
        stop = threading.Event()
        storage = self.beat
        assert storage is not None

        def beat() -> None:
            while not stop.wait(interval):
                for tid in trial_ids:
                    with contextlib.suppress(Exception):  # a blip: the next beat comes within the grace period
                        storage.record_heartbeat(tid)

        thread = threading.Thread(target=beat, name="sweep-group-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def store_refused(self, e: BaseException) -> None:
        """A tracking store that refused a write for lack of room or permission stops the study after this
        trial (:meth:`sweep.tracking.artifacts.ArtifactWatch.store_failed`)."""
        why = unwritable(e) if isinstance(e, MlflowException) else ""
        if why:
            self.files.store_failed(why)

    def keep_weights(self, trial: optuna.Trial, run: TrialRun, save: Callable[[Path], Path | None], epoch: int) -> None:
        """Write a trial's kept weights once, at its end, as the run's ``weights.pt``, with the epoch they are from.

        Args:
            trial: The trial.
            run: Its run.
            save: Writes the weights to the path it is given; ``None`` when there are none (nothing kept).
            epoch: The epoch the weights are from.
        """
        with tempfile.TemporaryDirectory() as tmp:
            if save(Path(tmp) / WEIGHTS) is not None and run.log_artifact(Path(tmp) / WEIGHTS):
                run.set_tags({Tag.CHECKPOINT_EPOCH: epoch})
                trial.set_user_attr(Attr.CHECKPOINT_EPOCH, epoch)

    def files_written(self, trial: optuna.Trial, run: TrialRun) -> None:
        """Say why a file could not be written (the trial keeps its metrics and state), and count it towards
        stopping the study when no file can be written at all (:class:`ArtifactWatch`)."""
        self.files.trial_files(run.files_written, run.artifact_errors)
        if run.artifact_errors:
            why = "; ".join(run.artifact_errors)
            run.set_tags({Tag.ARTIFACT_ERROR: why})
            trial.set_user_attr(Attr.ARTIFACT_ERROR, why)
            if self.files.in_a_row == 1:
                warn(f"trial {trial.number}: could not write {why}")

    def close(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """Close the trial's child run with the status of its final state, and add the trial to the parent
        run's best-so-far curve. A store that refuses costs a warning (closed at the next start); one
        unreachable past ``study.tracking_retry`` stops the study once this process's trials have ended (the
        run stays RUNNING until :func:`sweep.trials.recovery.close_stray_runs` closes it at the next start).

        Raises:
            TrackingDown: tracking gave up and this was the process's last open trial.
        """
        run = self._runs.pop(trial.number, None)
        if trial.number in self._lost:  # another process ended it, and closed its run: nothing to write
            self._lost.discard(trial.number)
            return
        if (down := gave_up(self.tracker.client)) is not None:  # nothing more is sent (sweep.tracking.trackingretry)
            if not self._runs:  # this process's last open trial: it stops (sweep.run: one line, exit 1)
                raise down
            return
        try:
            if run is not None:  # with the parent's best-so-far point (its failure: the curve misses a point)
                run.close(trial.state, also=self.tracker.best_point(trial, best_value(study)))
                return
            if Attr.RUN in trial.user_attrs:  # a run this process did not open (a re-queued trial's)
                run_id = trial.user_attrs[Attr.RUN]
                close_run(self.tracker.client, run_id, trial.state, trial.user_attrs.get(Attr.FAIL))
        except MlflowException as e:
            warn(f"could not close trial {trial.number}'s MLflow run ({one_line(e)}); closed at the next start")
            return
        with contextlib.suppress(MlflowException):  # the parent's best-so-far curve misses a point
            self.tracker.trial_finished(trial, best_value(study))
