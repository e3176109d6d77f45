"""What the user reads while a study runs: the progress bar, a failed trial's traceback, the end-of-run summary.

All printing of a run happens here, in the one-line helpers of :mod:`sweep.core.errors` (``error:``,
``warning:``) or in the commands; the rest of ``sweep`` returns values or raises.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from tqdm.auto import tqdm

from sweep.core.records import Attr
from sweep.core.urls import mask_known, redact
from sweep.storage.storage import FINISHED, best_value, count_finished
from sweep.studyfile.sections import StudySection

if TYPE_CHECKING:
    from sweep.tracking.tracking import Tracker


def show_traceback(number: int, text: str) -> None:
    """``--verbose``: a failed trial's traceback, above the progress bar."""
    tqdm.write(f"trial {number} failed:\n{text.rstrip()}", file=sys.stderr)


class _QuietFailures(logging.Filter):
    """Optuna logs each failed trial with a traceback (we print one line per failure instead). (A lost
    database connection's log is dropped by :mod:`sweep.storage.resilient`, in or out of this block.)"""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not (msg.startswith("Trial ") and " failed " in msg)


class _Redacting(logging.Filter):
    """A log line with its credentials masked (:func:`~sweep.core.urls.redact`) before any handler writes it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = redact(message)
        if masked != message:
            record.msg, record.args = masked, ()
        return True


@contextlib.contextmanager
def optuna_output(verbose: bool) -> Iterator[None]:
    """Within the block Optuna prints no per-trial INFO lines (they would tear the progress bar, which
    shows the same facts) unless ``verbose``, and no failure traceback (:class:`Progress` prints one line);
    what Optuna and MLflow log has its credentials masked."""
    optuna.logging.set_verbosity(optuna.logging.INFO if verbose else optuna.logging.WARNING)
    optuna_logger, mlflow_logger = logging.getLogger("optuna"), logging.getLogger("mlflow")
    quiet, masked = _QuietFailures(), _Redacting()
    added = [(target, quiet) for target in [optuna_logger, *optuna_logger.handlers]]
    added += [(target, masked) for logger in (optuna_logger, mlflow_logger) for target in [logger, *logger.handlers]]
    for target, what in added:
        target.addFilter(what)
    try:
        yield
    finally:
        for target, what in added:
            target.removeFilter(what)


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
        if trial.state in FINISHED:  # from the storage: other processes may finish trials too
            self.bar.n = min(count_finished(study), self.bar.total)
        self._show_best(study)
        self.bar.refresh()
        if trial.state == optuna.trial.TrialState.FAIL:
            first = str(trial.user_attrs.get(Attr.FAIL, "?")).splitlines()[0]
            tqdm.write(f"trial {trial.number} failed: {first}", file=sys.stderr)

    def _show_best(self, study: optuna.Study) -> None:
        best = best_value(study)
        if best is not None:
            self.bar.set_postfix(best=f"{best:.5g}", refresh=False)

    def refresh(self, study: optuna.Study) -> None:
        """Catch up from the storage (the coordinator of several workers has no callbacks)."""
        self.bar.n = min(count_finished(study), self.bar.total)
        self._show_best(study)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def fmt(v: Any) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def _named_weights(losses: Sequence[str], trial: optuna.trial.FrozenTrial) -> list[tuple[str, float]]:
    return list(zip(losses, trial.user_attrs.get(Attr.WEIGHTS, ()), strict=False))


def summary(
    study: optuna.Study, tracker: Tracker, storage: str, ran: int, section: StudySection, losses: Sequence[str]
) -> str:
    """What the user reads at the end: counts, the best trial(s), and how to open the MLflow UI.

    Args:
        study: The study.
        tracker: Its MLflow side.
        storage: Its storage URL (shown redacted).
        ran: The trials this command ran.
        section: The study file's ``study`` section (targets).
        losses: The loop's losses, in the order of a trial's weights.
    """
    trials = study.get_trials(deepcopy=False)
    counts = {s: sum(t.state == s for t in trials) for s in optuna.trial.TrialState}
    S = optuna.trial.TrialState
    open_ = "".join(f", {counts[s]} {s.name.lower()}" for s in (S.RUNNING, S.WAITING) if counts[s])
    lines = [
        f"Study {study.study_name!r}: {len(trials)} trials ({counts[S.COMPLETE]} complete, {counts[S.PRUNED]} "
        f"pruned, {counts[S.FAIL]} failed{open_}; {ran} run now by this command) in {redact(storage)}"
    ]
    if counts[S.RUNNING]:
        lines.append(
            f"    {counts[S.RUNNING]} trial(s) RUNNING: another process's, or a dead process's (failed and re-queued "
            "by the next run once its heartbeat is older than study.grace_period)"
        )
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        lines.append("No trial completed yet.")
    elif section.multi_objective:
        front = sorted(study.best_trials, key=lambda t: t.values[0])
        lines.append(f"Pareto front: {len(front)} trial(s){' (first 10)' if len(front) > 10 else ''}")
        for t in front[:10]:
            values = ", ".join(f"{m} = {fmt(v)}" for m, v in zip(section.metric, t.values, strict=True))
            weights = ", ".join(f"w_{n} = {w:.4g}" for n, w in _named_weights(losses, t))
            lines.append(f"    #{t.number}: {values}{f'  ({weights})' if weights else ''}")
    else:
        t = study.best_trial
        lines.append(f"Best trial #{t.number}: {section.metric[0]} = {fmt(t.value)}")
        lines += [f"    {name} = {fmt(value)}" for name, value in t.params.items()]
        if Attr.WEIGHTS in t.user_attrs:
            lines.append(f"    (loss weights: {', '.join(f'{n} = {w:.6g}' for n, w in _named_weights(losses, t))})")
        if Attr.RUN in t.user_attrs:
            lines.append(f"    MLflow run: {t.user_attrs[Attr.RUN]}")
    python = sys.executable
    try:
        python = str(Path(python).relative_to(Path.cwd()))
    except ValueError:
        python = "python"
    lines += [
        f"MLflow: experiment {tracker.experiment_name!r} (id {tracker.experiment_id}), parent run {tracker.parent_id}",
        "Open the MLflow UI with:",
        f"    {tracker.ui_command(f'{python} -m mlflow')}",
        f"  then browse {tracker.ui_url(target=section, trials=trials)}",
    ]
    return mask_known("\n".join(lines))  # a value from the environment anywhere in it (a metric's name...)
