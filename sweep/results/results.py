"""Evaluation results: which trials a study's evaluation covers, what was recorded for them, the table.

Shared by ``sweep.evaluate`` (which retrains and records) and ``sweep.report`` (which only reads): a
trial's evaluation lives on its Optuna study as the user attribute :data:`EVALUATION_ATTR`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import optuna

from sweep.core.errors import SweepError
from sweep.core.records import Attr
from sweep.results.evaluation import Interval, mean_ci, metric_range
from sweep.storage.storage import load_existing_study
from sweep.studyfile.sections import StudySection

COMPLETE = optuna.trial.TrialState.COMPLETE
EVALUATION_ATTR = Attr.EVALUATION  # study → {trial number: {"seeds", "run_id", "values"}} (sweep.evaluate)


@dataclass
class Evaluated:
    """One configuration's evaluation: where it came from and its per-seed results."""

    study: str
    method: str | None  # the compared choice, for a comparison
    trial: optuna.trial.FrozenTrial
    trials: str  # the study's trials: complete (and failed), as the table shows them
    s_per_trial: float
    seeds: list[int]
    runs: list[dict[str, float]] = field(default_factory=list)  # per seed; {} where training diverged
    run_id: str | None = None

    @property
    def finite(self) -> list[dict[str, float]]:
        """The seeds' results whose training stayed finite."""
        return [r for r in self.runs if r]

    @property
    def diverged(self) -> int:
        """Seeds whose training ended with a NaN/Inf loss (counted, never averaged)."""
        return sum(not r for r in self.runs)

    def metric_names(self) -> list[str]:
        """The metric names of its results (``epoch`` included)."""
        return list(self.finite[0]) if self.finite else []

    def interval(self, metric: str) -> Interval:
        """Mean and 95 % CI of ``metric`` over the finite seeds, clipped to the metric's range."""
        return mean_ci([r[metric] for r in self.finite], bounds=metric_range(metric))

    def restore(self, found: dict) -> None:
        """Take the results recorded on the study (:data:`EVALUATION_ATTR`) for this trial."""
        self.seeds, self.run_id = list(found["seeds"]), found["run_id"]
        values = found["values"]
        self.runs = [{k: v[i] for k, v in values.items() if v[i] is not None} for i in range(len(self.seeds))]

    def cell(self, metric: str) -> str:
        """``mean ± ci``, with the diverged seeds said; ``—`` when not evaluated."""
        if not self.runs:
            return "—"
        text = self.interval(metric).text() if self.finite else "diverged"
        return text + (f" ({self.diverged}/{len(self.runs)} diverged)" if self.diverged else "")


def chosen(study: optuna.Study, section: StudySection, top: int, number: int | None) -> list[optuna.trial.FrozenTrial]:
    """The trials to evaluate: trial ``number``, or the ``top`` complete trials by the first metric
    (a multi-objective study: its Pareto front, by trial number)."""
    complete = study.get_trials(deepcopy=False, states=[COMPLETE])
    if number is not None:
        picked = [t for t in complete if t.number == number]
        if not picked:
            raise SweepError(f"trial {number} is not a complete trial of study {study.study_name!r}")
        return picked
    if not complete:
        raise SweepError(f"study {study.study_name!r} has no complete trial to evaluate")
    if section.multi_objective:
        return sorted(study.best_trials, key=lambda t: t.number)[:top]
    sign = 1.0 if section.directions[0] == "minimize" else -1.0
    return sorted(complete, key=lambda t: (sign * t.values[0], t.number))[:top]


def counts(study: optuna.Study) -> str:
    """Complete trials, and the failed ones (a budget spent too: failed trials are replaced)."""
    trials = study.get_trials(deepcopy=False)
    complete = sum(t.state == COMPLETE for t in trials)
    failed = sum(t.state == optuna.trial.TrialState.FAIL for t in trials)
    return f"{complete} (+{failed} failed)" if failed else str(complete)


def seconds_per_trial(study: optuna.Study) -> float:
    spans = [
        (t.datetime_complete - t.datetime_start).total_seconds()
        for t in study.get_trials(deepcopy=False, states=[COMPLETE])
        if t.datetime_complete and t.datetime_start
    ]
    return sum(spans) / len(spans) if spans else math.nan


def table(section: StudySection, rows: list[Evaluated]) -> str:
    """The results as a Markdown table: each row a configuration (a method, for a comparison); a row
    not evaluated (yet) shows its search values only."""
    metrics = list(section.metric)
    tested = [r for r in rows if r.runs]
    names = next((r.metric_names() for r in tested if r.finite), [])
    extra = [k for k in names if k.startswith("test_") and not k.endswith("_loss")]
    head = ["method" if section.compare else "study", "trial", "trials"]
    head += [f"best {m} (search, val)" for m in metrics]
    head += [f"{m} (retrained, val)" for m in metrics]
    head += [f"test_{m.removeprefix('val_')}" for m in metrics] + extra + ["s / trial"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r.method or r.study, f"#{r.trial.number}", r.trials]
        cells += [f"{v:.4g}" for v in r.trial.values]
        tests = [*metrics, *(f"test_{m.removeprefix('val_')}" for m in metrics), *extra]
        cells += [r.cell(m) for m in tests] + [f"{r.s_per_trial:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    n = max((len(r.seeds) for r in tested), default=0)
    lines.append("")
    lines.append(
        f"Search values: each trial's validation score as the search saw it (one seed). Retrained and test: "
        f"mean ± 95 % CI (Student t) over {n} fresh seeds (an interval reaching past the metric's range, "
        "accuracies in [0, 1] and losses ≥ 0, is shown clipped, as mean [low, high]), the kept epoch chosen by "
        f"the study's rule (score: {section.score}) on validation; test_* on the held-out test split no trial "
        "read. A seed whose training diverged (NaN/Inf loss) is counted and shown, and left out of the mean. "
        "trials: the search's complete trials (+ failed ones, which it replaced); s / trial: a complete search "
        "trial's mean wall time."
        + ("" if len(tested) == len(rows) else " —: not evaluated (run python -m sweep.evaluate).")
    )
    return "\n".join(lines)


def recorded(studies: Sequence[tuple[str | None, StudySection]], top: int = 1) -> list[Evaluated]:
    """The search's best ``top`` trials of each study with the evaluation recorded for them, if any: what
    ``sweep.report`` shows without retraining anything.

    Args:
        studies: Each study's method (the compared choice's label; ``None`` for a study alone) and ``study`` section.
        top: How many trials of each.
    """
    rows = []
    for method, sub in studies:
        study = load_existing_study(sub.name, sub.storage)
        n_complete = len(study.get_trials(deepcopy=False, states=[COMPLETE]))
        if not n_complete:
            continue
        evaluations = study.user_attrs.get(EVALUATION_ATTR) or {}
        for trial in chosen(study, sub, top, None):
            found = evaluations.get(str(trial.number))
            item = Evaluated(sub.name, method, trial, counts(study), seconds_per_trial(study), [])
            if found:
                item.restore(found)
            rows.append(item)
    return rows
