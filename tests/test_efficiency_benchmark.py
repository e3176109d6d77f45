"""``benchmarks.efficiency`` works end to end at a tiny size, and measures what it claims: compute until the pick
(scored on fresh seeds, not by the trial that found it) is within the target, with sweep's contender being what a
study file naming no sampler gets."""

from __future__ import annotations

import itertools
import json
import math
import statistics
from pathlib import Path
from typing import Any

import optuna
import pydantic
import pytest
import torch

from benchmarks.efficiency.__main__ import _gap_at, _ratio, case_target, main, merge, quartiles, study_curve, to_target
from benchmarks.efficiency.cases import CASES, FRESH_SEEDS, Case, relative_loss
from benchmarks.efficiency.contenders import CONTENDERS, NAMES, Contender, contenders_for, grid_points, run_study
from benchmarks.efficiency.reference import GRID_STEP, _stale, grid, half_width, noisy_reference, references, steps, two
from objectives import repeats
from objectives.helpers import derive_seed
from objectives.loops import LOOPS
from sweep.results.evaluation import evaluation_seeds
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
        (sweep, again) = contenders_for(case, ["sweep", "sweep_reevaluate"])  # the latter: its top 3 on 3 seeds
        assert list(sweep.first(0)) == list(first_points(sf.study, sf.search, sf.objective)) == list(again.first(0))
        assert again.reevaluate == (3, 3) and sweep.reevaluate is None
        assert type(again.pruner()) is type(sweep.pruner()) and type(again.sampler(0)) is type(sweep.sampler(0))  # type: ignore[misc]
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
        assert refs[case.name]["search"] == json.loads(json.dumps(case.search)) and not _stale(refs[case.name], case)
        assert refs[case.name]["command"] == "python -m benchmarks.efficiency --references"
    lr = BY_NAME["lr"]
    changed = {**refs["lr"], "search": {**refs["lr"]["search"], "params": {}}}
    assert _stale(changed, lr) and _stale(None, lr)  # another search space: computed again


BY_NAME = {c.name: c for c in CASES}


def test_the_reference_grid_covers_the_space_then_refines_around_its_best() -> None:
    assert steps(-4, 4, GRID_STEP)[:3] == [-4.0, -3.9, -3.8] and len(steps(-4, 4, GRID_STEP)) == 81
    assert steps(-3, -0.523, 0.25)[-2:] == [-0.75, -0.523]  # the bound itself, where the steps miss it
    assert [r for _, r in grid(BY_NAME["equal"])] == steps(-4, 4, GRID_STEP)
    coarse = grid(BY_NAME["lr"])
    lrs = sorted({s["optimizer.lr"] for s, _ in coarse})
    assert len(coarse) == 17 * len(lrs) and lrs[0] == 0.001 and lrs[-1] == 0.3
    assert all(math.isclose(b / a, 10**0.25, rel_tol=1e-4) for a, b in itertools.pairwise(lrs[:-1]))
    fine = grid(BY_NAME["lr"], ({"optimizer.lr": 0.01}, 4.0))
    assert sorted({r for _, r in fine}) == steps(3.5, 4.0, GRID_STEP)  # clipped to the range
    fine_lrs = sorted({s["optimizer.lr"] for s, _ in fine})
    assert len(fine_lrs) == 9 and math.isclose(fine_lrs[0], 10**-2.25, rel_tol=1e-5)


def test_the_grid_contender_crosses_the_weights_with_powers_of_ten_of_the_lr() -> None:
    assert grid_points(BY_NAME["equal"]) == [{"w_a": round(0.1 * i, 1)} for i in range(1, 10)]
    points = grid_points(BY_NAME["lr"])
    assert len(points) == 27 and {p["optimizer.lr"] for p in points} == {0.001, 0.01, 0.1}
    (grid_,) = contenders_for(BY_NAME["lr"], ["grid"])
    assert grid_.most == 27 and sorted(map(str, grid_.first(3))) == sorted(map(str, points))
    pick = run_study(BY_NAME["lr"], grid_, 3, 2)[-1].pick
    assert pick is not None
    first_two = [(p["optimizer.lr"], p["w_a"], round(1 - p["w_a"], 10)) for p in grid_.first(3)[:2]]
    assert (pick[0]["optimizer.lr"], *pick[1]) in first_two  # the grid's points, in its seeded order


def test_a_user_samples_the_lr_log_uniform_beside_two_raw_weights() -> None:
    (user,) = contenders_for(BY_NAME["lr"], ["user"])
    steps_ = run_study(BY_NAME["lr"], user, 0, 3)
    for step in steps_:
        assert step.pick is not None and list(step.pick[0]) == ["optimizer.lr"]
        assert 0.001 <= step.pick[0]["optimizer.lr"] <= 0.3 and len(step.pick[1]) == 2
        assert not math.isclose(sum(step.pick[1]), 1.0)  # raw weights, not normalised


def test_a_derived_target_is_each_loss_over_the_zero_predictor_s_summed() -> None:
    case = BY_NAME["scales"]
    assert case.study_file.study.metric == ("val_total_loss",)  # only sets the direction
    problem = case.problem
    ya, yb = problem.a.val[1], problem.b.val[1]
    metrics = case.train(case.config({}, (0.5, 0.5), derive_seed(0, "trial", 0)))  # a study's first trial
    expected = metrics["val_a_loss"] / float((ya**2).mean()) + metrics["val_b_loss"] / float((yb**2).mean())
    assert math.isclose(case.value(metrics), expected, rel_tol=1e-6)
    assert math.isclose(relative_loss(problem, metrics), expected, rel_tol=1e-6)
    (sweep,) = contenders_for(case, ["sweep"])
    (step,) = run_study(case, sweep, 0, 1)  # the study is told the derived target, not a logged metric
    assert step.value is not None and math.isclose(step.value, expected, rel_tol=1e-6)


def test_a_noisy_case_s_reference_is_the_best_fresh_mean_of_a_study_s_top_trials() -> None:
    assert math.isclose(half_width([1.0, 2.0, 3.0, 4.0, 5.0]), 2.7764451051977987 * 2.5**0.5 / 5**0.5, rel_tol=1e-9)
    lr = BY_NAME["lr"]
    case = Case("noisy", "", lr.objective, lr.search, lr.metric, noisy=True)
    ref = noisy_reference(case, trials=4, top=2)
    scored = ref["grid"]  # the top trials' log ratios, configurations and fresh-seed means
    assert len(scored) == 2 and ref["value"] == min(row[2] for row in scored) == statistics.fmean(ref["fresh"])
    again = case.fresh(ref["params"], two(ref["log10_ratio"]))  # retrained: the fresh seeds' values
    assert all(math.isclose(a, b, rel_tol=1e-5) for a, b in zip(again, ref["fresh"], strict=True))
    assert ref["half_width"] == half_width(ref["fresh"]) and len(ref["fresh"]) == FRESH_SEEDS
    assert case_target(ref, 0.01) == ref["half_width"] / ref["value"] and case_target({"value": 1.0}, 0.01) == 0.01


def test_merged_results_keep_the_cases_not_run_in_the_cases_order() -> None:
    old = {"seeds": 2, "trials": 4, "cases": [{"name": "lr", "x": 1}, {"name": "equal", "x": 1}]}
    new = {"seeds": 2, "trials": 4, "command": "new", "cases": [{"name": "scales", "x": 2}, {"name": "lr", "x": 2}]}
    merged = merge(old, new)
    assert [(r["name"], r["x"]) for r in merged["cases"]] == [("equal", 1), ("lr", 2), ("scales", 2)]
    assert merged["command"] == "new" and merge(None, new) == new
    with pytest.raises(SystemExit, match="3 seeds × 4 trials there, 2 × 4 now"):
        merge({**old, "seeds": 3}, new)


def test_a_case_run_for_some_contenders_keeps_the_others() -> None:
    """Only the contenders run replace theirs (in the tables' order); a case whose reference changed is replaced
    whole (studies scored against another reference cannot sit beside the new ones)."""
    ref = {"value": 1.0}
    old = {
        "seeds": 2,
        "trials": 4,
        "cases": [
            {"name": "lr", "reference": ref, "contenders": [{"name": "user", "x": 1}, {"name": "sweep", "x": 1}]}
        ],
    }
    new = {
        "seeds": 2,
        "trials": 4,
        "cases": [
            {
                "name": "lr",
                "reference": ref,
                "contenders": [{"name": "sweep", "x": 2}, {"name": "one_training", "x": 2}],
            }
        ],
    }
    (case,) = merge(old, new)["cases"]
    assert [(c["name"], c["x"]) for c in case["contenders"]] == [("user", 1), ("sweep", 2), ("one_training", 2)]
    described = {**new, "cases": [{**new["cases"][0], "reference": {"value": 1.0, "how": "a grid"}}]}
    assert len(merge(old, described)["cases"][0]["contenders"]) == 3  # the same reference, described since
    moved = {**new, "cases": [{**new["cases"][0], "reference": {"value": 2.0}}]}
    assert [c["name"] for c in merge(old, moved)["cases"][0]["contenders"]] == ["sweep", "one_training"]  # fmt: skip


def test_a_run_merges_its_cases_into_a_results_file(tmp_path: Path) -> None:
    stored = tmp_path / "efficiency.json"
    for case in ("scales", "equal"):
        tiny = ["--seeds", "1", "--trials", "1", "--contenders", "sweep", "--out", str(tmp_path / "out")]
        assert main(["--cases", case, *tiny, "--merge", str(stored)]) == 0
    results = json.loads(stored.read_text())
    assert [c["name"] for c in results["cases"]] == ["equal", "scales"]
    assert (
        results["cases"][1]["run"]["command"].endswith(f"--merge {stored}")
        and "--cases scales" in (results["cases"][1]["run"]["command"])
    )
    assert (
        "### scales" in (tmp_path / "out" / "table.md").read_text() and not (tmp_path / "out" / "results.json").exists()
    )


def test_unknown_cases_and_contenders_are_refused_by_name(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    tiny = {"--cases": "equal", "--contenders": "sweep", "--seeds": "1", "--trials": "1", "--out": str(tmp_path)}
    for option in ("--cases", "--contenders"):
        with pytest.raises(SystemExit):  # (were the names not checked: a tiny run, not a refusal)
            main([x for key, value in {**tiny, option: f"{tiny[option]},nope"}.items() for x in (key, value)])
        assert f"{option}: unknown nope" in capsys.readouterr().err
    order = "user grid optuna_log_ratio sweep_before sweep sweep_repeats sweep_reevaluate one_training"
    assert order.split() == NAMES


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
    "sweep_reevaluate": "sweep's defaults, its top 3 retrained on 3 seeds before naming the best",
    "one_training": "no search: one training with `weighting: hypergrad`",
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
            hits = [to_target(s, case_target(case["reference"], 0.01))[0] for s in mine["studies"]]
            median = quartiles(hits)[0]
            expected = "never" if math.isinf(median) else f"{median:.0f}"
            assert cell.split(" ")[0] == expected, (name, case["name"], cell)


def test_a_contender_with_repeats_trains_each_trial_with_its_seeds_and_pays_for_them() -> None:
    """``sweep_repeats``: each trial's value is the mean of its 3 seeds' standalone values, and its epochs count
    3× (the compute a table charges it)."""
    case = next(c for c in CASES if c.name == "equal")
    (step,) = run_study(case, CONTENDERS["sweep_repeats"](case), 0, 1)
    sampled, weights = step.pick
    cfg = case.config(sampled, weights, derive_seed(0, "trial", 0)).model_copy(update={"repeats": 3})
    alone = [case.value(LOOPS[cfg.loop].train(m, problem=case.problem)) for m in repeats.members(cfg)]
    assert step.epochs == 3 * cfg.epochs
    assert math.isclose(step.value, statistics.fmean(alone), rel_tol=1e-5)


class Reversing:
    """A fake case: a trial seed scores a configuration by its w_a, an evaluation seed by −w_a; ``trained``."""

    def __init__(self, study_seed: int) -> None:
        self.evaluation, self.trained = set(evaluation_seeds(study_seed, 3)), []

    def config(self, _sampled: dict, weights: tuple[float, ...], seed: int) -> Any:
        return pydantic.create_model("Run", w=(float, weights[0]), seed=(int, seed))()

    def train(self, cfg: Any, report: Any = None) -> dict[str, float]:
        self.trained.append((cfg.w, cfg.seed))
        metrics = {"v": -cfg.w if cfg.seed in self.evaluation else cfg.w}
        for epoch in range(2):
            (report or (lambda _e, _m: None))(epoch, metrics)
        return metrics

    def value(self, metrics: dict[str, float]) -> float:
        return metrics["v"]


def test_re_evaluation_picks_the_top_trials_best_fresh_mean_and_charges_each_trial_once() -> None:
    """Trial values 0.5, 0.1, 0.3, 0.2, 0.9, 0.05 (lower is better): the top 3 re-evaluated reversed, so the pick
    is the top 3's worst trial value; a trial is retrained on the 3 evaluation seeds when it enters the top 3
    (not trial 4's 0.9, never in it), and only then."""
    ws = [0.5, 0.1, 0.3, 0.2, 0.9, 0.05]

    def suggest(trial: Any, _case: Any) -> tuple[dict, tuple[float, float]]:
        w = trial.suggest_float("w_a", 0.0, 1.0)
        return {}, (w, 1.0 - w)

    points = [{"w_a": w} for w in ws]
    fake = Contender("fake", "", optuna.samplers.RandomSampler, suggest=suggest, first=lambda _s: points)
    reevaluating = Contender(**{**fake.__dict__, "reevaluate": (3, 3)})
    case = Reversing(7)
    steps_ = run_study(case, reevaluating, 7, len(ws))  # type: ignore[arg-type]
    assert [s.pick[1][0] for s in steps_] == [0.5, 0.5, 0.5, 0.3, 0.3, 0.2]  # type: ignore[index]
    assert [s.epochs for s in steps_] == [2 + 3 * 2 * entered for entered in (1, 1, 1, 1, 0, 1)]  # 2 epochs a run
    trial_seeds = {derive_seed(7, "trial", n) for n in range(len(ws))}
    assert [seed for _, seed in case.trained if seed not in trial_seeds] == evaluation_seeds(7, 3) * 5
    assert case.evaluation.isdisjoint(trial_seeds | set(range(1_000_003, 1_000_003 + FRESH_SEEDS)))
    plain = run_study(Reversing(7), fake, 7, len(ws))  # type: ignore[arg-type]
    assert [s.pick[1][0] for s in plain] == [0.5, 0.1, 0.1, 0.1, 0.1, 0.05]  # type: ignore[index]


def test_the_images_case_reads_pngs_through_dataloaders_end_to_end_at_a_tiny_size() -> None:
    """Every contender's study and a noisy reference, on the images case shrunk (16 + 16 training images of 8x8,
    one epoch): the problem's splits are Datasets decoded per item in the training process."""
    images = BY_NAME["images"]
    assert images.noisy and images.study_file.objective.data.num_workers == 0
    options = {**images.objective["problem"]["options"], "n_a": 16, "n_b": 16, "n_val": 16, "size": 8}
    objective = {**images.objective, "problem": {"name": "digits_images", "options": options}, "epochs": 1}
    tiny = Case("images", "", objective, images.search, images.metric, noisy=True)
    assert isinstance(tiny.problem.a.train, torch.utils.data.Dataset) and len(tiny.problem.a.train) == 16
    ref = noisy_reference(tiny, trials=3, top=2)
    for contender in contenders_for(tiny, NAMES):
        curve = study_curve(tiny, contender, 0, 2, ref["value"])
        assert len(curve["gaps"]) == min(2, contender.most or 2) and math.isfinite(curve["gaps"][-1])


def test_references_only_gives_the_cases_references_and_trains_no_study(capsys: Any, tmp_path: Path) -> None:
    tiny = ["--seeds", "1", "--trials", "1", "--contenders", "sweep", "--out", str(tmp_path)]
    assert main(["--cases", "equal", "--references-only", *tiny]) == 0  # stored: read, nothing trained
    out = capsys.readouterr().out
    assert out.startswith("equal: val_total_loss 45.378 at w_a = 0.500") and not any(tmp_path.iterdir())
