"""``sweep.results.results``: which trials an evaluation covers (:func:`chosen`), the study's counts, the
results table for a study and a comparison, and what :func:`recorded` reads back from a study's storage."""

from __future__ import annotations

import datetime
import math
from pathlib import Path

import optuna
import pytest

from sweep.core.errors import SweepError
from sweep.results.results import EVALUATION_ATTR, Evaluated, chosen, counts, recorded, seconds_per_trial, table
from sweep.studyfile.config import parse_study
from sweep.studyfile.sections import StudySection
from tests.conftest import tiny_study

COMPLETE, FAIL, PRUNED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL,
                          optuna.trial.TrialState.PRUNED)  # fmt: skip


def _study_of(direction: str, values: list[float]) -> optuna.Study:
    """An in-memory study (``direction``) of complete trials 0, 1, ... with these values."""
    study = optuna.create_study(direction=direction)
    for value in values:
        study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=value))
    return study


def test_evaluate_chooses_the_highest_trials_of_a_maximized_study() -> None:
    """``sweep.evaluate --top K`` retrains the K best trials: for a maximised target (val_a_acc) the K
    highest values, best first, ties by trial number; for a minimised one, the K lowest."""
    acc = tiny_study("acc", study={"metric": "val_a_acc"}, objective={"problem": {"name": "digits_pair"}})
    sf = parse_study(acc, "acc.yaml")
    assert sf.study.directions == ("maximize",)
    values = [0.50, 0.90, 0.20, 0.70, 0.90]
    assert [t.number for t in chosen(_study_of("maximize", values), sf.study, 3, None)] == [1, 4, 3]
    loss = parse_study(tiny_study("loss"), "loss.yaml")
    assert loss.study.directions == ("minimize",)
    assert [t.number for t in chosen(_study_of("minimize", values), loss.study, 3, None)] == [2, 0, 3]


def test_chosen_ranks_complete_trials_only_and_cuts_at_top() -> None:
    """Pruned, failed and running trials are never evaluated; ``top`` past the complete ones gives them all;
    ties in a minimised study go by trial number too."""
    study = optuna.create_study()
    study.add_trial(optuna.trial.create_trial(state=PRUNED, intermediate_values={0: -5.0}))
    study.add_trial(optuna.trial.create_trial(value=0.3))
    study.add_trial(optuna.trial.create_trial(state=FAIL))
    study.add_trial(optuna.trial.create_trial(value=0.3))
    study.add_trial(optuna.trial.create_trial(value=0.1))
    study.ask()  # trial 5, running
    section = StudySection(name="s")
    assert [t.number for t in chosen(study, section, 10, None)] == [4, 1, 3]
    assert [t.number for t in chosen(study, section, 1, None)] == [4]


def test_chosen_takes_the_trial_named_by_number_if_it_is_complete() -> None:
    """``--trial N``: that trial even if not the best; a pruned or absent trial is refused, by number."""
    study = _study_of("minimize", [0.5, 0.1])
    study.add_trial(optuna.trial.create_trial(state=PRUNED, intermediate_values={0: 0.0}))
    section = StudySection(name="s")
    (trial,) = chosen(study, section, 1, 0)  # not the best: the one asked for
    assert trial.number == 0 and trial.value == 0.5
    for number in (2, 7):  # pruned, absent
        with pytest.raises(SweepError, match=f"trial {number} is not a complete trial of study"):
            chosen(study, section, 1, number)


def test_chosen_refuses_a_study_without_a_complete_trial() -> None:
    """Nothing to evaluate is said in one line, with the study's name."""
    study = optuna.create_study(study_name="empty")
    study.add_trial(optuna.trial.create_trial(state=FAIL))
    with pytest.raises(SweepError, match="study 'empty' has no complete trial to evaluate"):
        chosen(study, StudySection(name="empty"), 3, None)


def test_a_multi_objective_study_chooses_its_pareto_front_by_number() -> None:
    """Minimise a loss, maximise an accuracy: the front is the non-dominated trials, in number order (not
    by the first metric), cut at ``top``."""
    study = optuna.create_study(directions=["minimize", "maximize"])
    for values in ([0.5, 0.9], [0.2, 0.6], [0.6, 0.8], [0.1, 0.5], [0.3, 0.95]):
        study.add_trial(optuna.trial.create_trial(values=values))
    section = StudySection(name="m", metric=["val_a_loss", "val_b_acc"])
    assert section.multi_objective
    # trial 2 is dominated by trial 0 (higher loss, lower accuracy); trial 0 by trial 4
    assert [t.number for t in chosen(study, section, 10, None)] == [1, 3, 4]
    assert [t.number for t in chosen(study, section, 2, None)] == [1, 3]


def _timed(seconds: float, state: optuna.trial.TrialState = COMPLETE) -> optuna.trial.FrozenTrial:
    trial = optuna.trial.create_trial(state=state, value=1.0 if state == COMPLETE else None)
    start = datetime.datetime(2026, 1, 1, 12, 0, 0)
    trial.datetime_start, trial.datetime_complete = start, start + datetime.timedelta(seconds=seconds)
    return trial


def test_counts_and_seconds_per_trial() -> None:
    """Complete trials (and failed ones, said apart); the mean wall time of the complete trials only."""
    study = optuna.create_study()
    assert counts(study) == "0" and math.isnan(seconds_per_trial(study))
    for trial in (_timed(2.0), _timed(4.5), _timed(100.0, FAIL), _timed(50.0, PRUNED)):
        study.add_trial(trial)
    assert counts(study) == "2 (+1 failed)"
    assert seconds_per_trial(study) == 3.25
    study.add_trial(_timed(1.0, FAIL))
    assert counts(study) == "2 (+2 failed)"
    assert counts(_study_of("minimize", [1.0, 2.0, 3.0])) == "3"


def _row(method: str | None, number: int, values: list[float], runs: list[dict[str, float]]) -> Evaluated:
    trial = optuna.trial.create_trial(values=values)
    trial.number = number
    row = Evaluated("cmp" if method else "plain", method, trial, "4 (+1 failed)", 2.5, [11, 12][: len(runs)])
    row.runs = runs
    return row


def test_an_evaluated_row_counts_diverged_seeds_and_never_averages_them() -> None:
    """Diverged seeds (``{}``) are counted beside the interval of the finite ones; not evaluated is ``—``."""
    row = _row(None, 0, [0.5], [{"test_a_loss": 0.25}, {}, {"test_a_loss": 0.25}])
    assert row.finite == [{"test_a_loss": 0.25}] * 2 and row.diverged == 1
    assert row.cell("test_a_loss") == "0.250 ± 0.000 (1/3 diverged)"
    assert row.metric_names() == ["test_a_loss"]
    assert _row(None, 0, [0.5], [{}, {}]).cell("test_a_loss") == "diverged (2/2 diverged)"
    assert _row(None, 0, [0.5], []).cell("test_a_loss") == "—"  # not evaluated
    assert _row(None, 0, [0.5], []).metric_names() == []


def test_restore_takes_the_recorded_values_seed_by_seed() -> None:
    """What ``sweep.evaluate`` stored (one list per metric, ``None`` where a seed diverged) back as runs."""
    row = _row(None, 3, [0.5], [])
    row.restore({"seeds": [7, 8, 9], "run_id": "abc",
                 "values": {"epoch": [2, None, 1], "test_a_loss": [0.1, None, 0.3]}})  # fmt: skip
    assert (row.seeds, row.run_id) == ([7, 8, 9], "abc")
    assert row.runs == [{"epoch": 2, "test_a_loss": 0.1}, {}, {"epoch": 1, "test_a_loss": 0.3}]
    assert row.interval("test_a_loss").mean == pytest.approx(0.2)


def test_the_table_of_a_study() -> None:
    """One row per trial: the study, the trial, its counts, the search value(s), the retrained and test
    intervals, the extra test metrics of the first evaluated row, the seconds per trial; a row not evaluated
    shows ``—`` and the note says how to evaluate it."""
    section = parse_study(tiny_study("plain"), "plain.yaml").study
    evaluated = {"val_total_loss": 0.5, "test_total_loss": 0.25, "test_a_acc": 1.0, "test_a_loss": 0.125}
    rows = [_row(None, 3, [0.123456], [evaluated, evaluated]), _row(None, 5, [0.2], [])]
    lines = table(section, rows).splitlines()
    assert lines[0] == (
        "| study | trial | trials | best val_total_loss (search, val) | val_total_loss (retrained, val) "
        "| test_total_loss | test_a_acc | s / trial |"
    )  # test_a_loss is not an extra column (a loss), test_a_acc is
    assert lines[1] == "|" + "---|" * 8
    assert lines[2] == "| plain | #3 | 4 (+1 failed) | 0.1235 | 0.500 ± 0.000 | 0.250 ± 0.000 | 1.000 ± 0.000 | 2.50 |"
    assert lines[3] == "| plain | #5 | 4 (+1 failed) | 0.2 | — | — | — | 2.50 |"
    assert lines[4] == "" and "over 2 fresh seeds" in lines[5] and "(score: last)" in lines[5]
    assert lines[5].endswith("—: not evaluated (run python -m sweep.evaluate).")
    done = table(section, rows[:1]).splitlines()
    assert "not evaluated" not in done[-1]


def test_the_table_of_a_comparison_names_the_method() -> None:
    """A comparison's rows are its choices (``method``), each search value and each metric's columns."""
    doc = tiny_study("cmp", study={"compare": "weighting.type", "metric": ["val_a_loss", "val_b_loss"]})
    doc["search"]["params"]["weighting.type"] = {"type": "categorical", "choices": ["static", "dwa"]}
    section = parse_study(doc, "cmp.yaml").study
    runs = [{"val_a_loss": 0.5, "val_b_loss": 0.25, "test_a_loss": 0.5, "test_b_loss": 0.25}]
    lines = table(section, [_row("static", 0, [0.5, 0.25], runs), _row("dwa", 1, [0.75, 0.125], runs)]).splitlines()
    assert lines[0].split(" | ")[:5] == ["| method", "trial", "trials", "best val_a_loss (search, val)",
                                         "best val_b_loss (search, val)"]  # fmt: skip
    assert lines[0].endswith("| test_a_loss | test_b_loss | s / trial |")
    assert lines[2].startswith("| static | #0 | 4 (+1 failed) | 0.5 | 0.25 | 0.500 | 0.250 | 0.500 | 0.250 |")
    assert lines[3].startswith("| dwa | #1 | 4 (+1 failed) | 0.75 | 0.125 |")
    assert "over 1 fresh seeds" in lines[-1] and "not evaluated" not in lines[-1]


def _stored(tmp_path: Path, name: str, values: list[float], direction: str = "minimize") -> optuna.Study:
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name=name, storage=storage, direction=direction)
    for value in values:
        study.add_trial(optuna.trial.create_trial(value=value))
    return study


def test_recorded_reads_the_best_trials_and_their_stored_evaluation(tmp_path: Path) -> None:
    """Each study's ``top`` best trials, with the evaluation ``sweep.evaluate`` stored for a trial when there
    is one (none for the others); a study without a complete trial has no row."""
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    a = _stored(tmp_path, "cmp.static", [0.5, 0.25, 0.75])
    a.set_user_attr(EVALUATION_ATTR, {"1": {"seeds": [4, 5], "run_id": "r1",
                                            "values": {"test_total_loss": [0.25, None]}}})  # fmt: skip
    _stored(tmp_path, "cmp.dwa", [0.125])
    _stored(tmp_path, "cmp.none", [])
    sections = [(m, StudySection(name=f"cmp.{m}", storage=storage)) for m in ("static", "dwa", "none")]
    rows = recorded(sections, top=2)
    assert [(r.study, r.method, r.trial.number) for r in rows] == [
        ("cmp.static", "static", 1),
        ("cmp.static", "static", 0),
        ("cmp.dwa", "dwa", 0),
    ]
    best = rows[0]
    assert (best.seeds, best.run_id, best.runs, best.trials) == ([4, 5], "r1", [{"test_total_loss": 0.25}, {}], "3")
    assert rows[1].runs == [] and rows[1].run_id is None and rows[1].seeds == []
    assert rows[2].runs == [] and rows[2].trials == "1"
    assert recorded([(None, StudySection(name="cmp.dwa", storage=storage))])[0].method is None


def test_recorded_follows_a_maximized_study(tmp_path: Path) -> None:
    """The best trials of a maximised study are its highest, read from the storage."""
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    _stored(tmp_path, "acc", [0.5, 0.9, 0.7], direction="maximize")
    section = StudySection(name="acc", storage=storage, metric="val_a_acc")
    assert [r.trial.number for r in recorded([(None, section)], top=2)] == [1, 2]


def test_recorded_refuses_a_study_that_is_not_there(tmp_path: Path) -> None:
    """A missing storage file, or a study not in it, is said (the command's one-line error)."""
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    with pytest.raises(SweepError, match="no study storage at"):
        recorded([(None, StudySection(name="x", storage=storage))])
    _stored(tmp_path, "other", [1.0])
    with pytest.raises(SweepError, match="study 'x' is not in"):
        recorded([(None, StudySection(name="x", storage=storage))])
