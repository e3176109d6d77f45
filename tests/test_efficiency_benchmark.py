"""``benchmarks.efficiency`` works end to end at a tiny size, and measures what it claims: compute until the pick
(scored on fresh seeds, not by the trial that found it) is within the target, with sweep's contender being what a
study file naming no sampler gets."""

from __future__ import annotations

import json
import math
from pathlib import Path

from benchmarks.efficiency.__main__ import _gap_at, _ratio, main, quartiles, to_target
from benchmarks.efficiency.cases import CASES, FRESH_SEEDS, references
from benchmarks.efficiency.contenders import contenders_for, run_study
from sweep.search.defaults import chosen_sampler, first_points

CURVE = {"epochs": [8, 16, 24, 32], "seconds": [0.1, 0.2, 0.3, 0.4], "gaps": [math.inf, 0.05, 0.008, 0.0]}


def test_compute_to_target_is_counted_until_the_pick_is_within_it() -> None:
    assert to_target(CURVE, 0.01) == (24, 0.3, 3)
    assert to_target(CURVE, 0.0) == (32, 0.4, 4)
    assert to_target(CURVE, -0.5) == (math.inf, math.inf, math.inf)  # never: shown as not reached


def test_the_gap_at_a_budget_is_the_last_pick_within_it() -> None:
    assert [_gap_at(CURVE, e) for e in (0, 8, 20, 24, 100)] == [math.inf, math.inf, 0.05, 0.008, 0.0]


def test_medians_count_studies_that_never_reached_the_target() -> None:
    assert quartiles([1.0, 2.0, 3.0, 4.0, 5.0]) == (3.0, 2.0, 4.0)
    assert quartiles([1.0, 2.0, math.inf]) == (2.0, 1.5, math.inf)
    assert quartiles([1.0, math.inf, math.inf])[0] == math.inf
    assert _ratio(8.0, 16.0) == "0.50" and _ratio(math.inf, 16.0) == "—" and _ratio(8.0, math.inf).startswith("(")


def test_sweep_s_contender_is_what_a_study_without_a_sampler_gets() -> None:
    for case in CASES:
        sf = case.study_file
        assert sf.study.sampler is None  # the benchmark's study files name none
        (sweep,) = contenders_for(case, ["sweep"])
        assert list(sweep.first(0)) == list(first_points(sf.study, sf.search, sf.objective))
        assert (
            type(sweep.sampler(0)).__name__
            == {"gp": "GPSampler", "tpe": "TPESampler"}[chosen_sampler(sf.study, sf.search, sf.objective).type]
        )


def test_a_study_s_pick_is_its_best_trial_and_quality_is_a_fresh_seed_mean() -> None:
    case = CASES[0]
    (sweep,) = contenders_for(case, ["sweep"])
    steps = run_study(case, sweep, 0, 3)
    assert len(steps) == 3 and all(s.epochs == case.study_file.objective.epochs for s in steps[:1])
    assert steps[0].pick == ({}, (0.5, 0.5))  # equal weights first
    values = [s.value for s in steps if s.value is not None]
    assert steps[-1].pick is not None
    sampled, weights = steps[-1].pick
    fresh = [case.train(case.config(sampled, weights, 1_000_003 + i))[case.metric] for i in range(FRESH_SEEDS)]
    assert math.isclose(case.quality(sampled, weights), sum(fresh) / len(fresh), rel_tol=1e-12)
    assert min(values) in values  # the pick is the best trial's configuration
    trained = {tuple(s.pick[1]) for s in steps if s.pick is not None}
    assert weights in trained


def test_references_are_stored_with_the_settings_that_made_them() -> None:
    refs = references()  # read from references.json: recomputing them takes minutes
    for case in CASES:
        assert refs[case.name]["objective"] == dict(case.objective) and refs[case.name]["metric"] == case.metric


def test_the_benchmark_runs_end_to_end(tmp_path: Path) -> None:
    code = main(
        ["--cases", "equal", "--seeds", "1", "--trials", "2", "--contenders", "user,sweep", "--out", str(tmp_path)]
    )
    assert code == 0
    results = json.loads((tmp_path / "results.json").read_text())
    (case,) = results["cases"]
    assert [c["name"] for c in case["contenders"]] == ["user", "sweep"]
    assert all(len(s["gaps"]) == 2 for c in case["contenders"] for s in c["studies"])
    table = (tmp_path / "table.md").read_text()
    assert "| user |" in table and "| sweep |" in table
    assert (tmp_path / "equal.png").read_bytes()[:4] == b"\x89PNG"


def test_the_table_is_written_again_from_saved_results(tmp_path: Path) -> None:
    """``--again results.json``: the same table and plots, nothing trained."""
    main(["--cases", "equal", "--seeds", "1", "--trials", "2", "--contenders", "sweep", "--out", str(tmp_path / "a")])
    first = (tmp_path / "a" / "table.md").read_text()
    main(["--again", str(tmp_path / "a" / "results.json"), "--out", str(tmp_path / "b")])
    assert (tmp_path / "b" / "table.md").read_text() == first


ROOT = Path(__file__).resolve().parents[1]
README_ROWS = {  # README's compact table: its row for each contender
    "user": "two raw weights in [0, 1], Optuna's TPE (a user's own script)",
    "grid": "grid w_a = 0.1 … 0.9",
    "optuna_log_ratio": "Optuna's TPE on sweep's log ratio",
    "sweep_before": "sweep's defaults before",
    "sweep": "**sweep's defaults**",
}


def test_the_docs_show_the_stored_run() -> None:
    """docs/explanation/search-defaults.md holds the tables the stored run gives, and README's compact table its
    medians: neither is typed by hand."""
    from benchmarks.efficiency.__main__ import summarise

    results = json.loads((ROOT / "benchmarks" / "results" / "efficiency.json").read_text())
    text = summarise(results, 0.01, {c.name: c.study_file.objective.epochs for c in CASES})
    doc = (ROOT / "docs" / "explanation" / "search-defaults.md").read_text()
    assert [line for line in text.splitlines() if line.startswith("|") and line not in doc] == []
    readme = (ROOT / "README.md").read_text().splitlines()
    for name, label in README_ROWS.items():
        (row,) = [line for line in readme if line.startswith(f"| {label} |")]
        cells = [c.strip().strip("*") for c in row.strip("|").split("|")[1:]]
        for case, cell in zip(results["cases"], cells, strict=True):
            (mine,) = [c for c in case["contenders"] if c["name"] == name]
            hits = [to_target(s, 0.01)[0] for s in mine["studies"]]
            median = quartiles(hits)[0]
            expected = "never" if math.isinf(median) else f"{median:.0f}"
            assert cell.split(" ")[0] == expected, (name, case["name"], cell)
