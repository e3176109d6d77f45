"""``benchmarks.halving`` runs one pruned study three ways: trial by trial, grouped without refill, grouped with it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from benchmarks.halving import WAYS, main, study
from sweep.studyfile.config import load_study


def test_its_study_file_is_a_valid_pruned_study(tmp_path: Path) -> None:
    args = type(
        "Args",
        (),
        {"trials": 32, "epochs": 27, "reduction": 3, "min_resource": 1, "problem": "digits_pair", "hidden": 64},
    )
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(study(args, 8)))  # type: ignore[arg-type]
    loaded = load_study(path)
    assert loaded.study.parallel_trials == 8 and loaded.study.n_trials == 32
    assert loaded.study.pruner.type == "successive_halving" and loaded.study.sampler.type == "tpe"
    assert loaded.objective.problem.options == {"hidden": 64}
    assert set(WAYS) == {"trial_by_trial", "groups_no_refill", "groups_refill"}


@pytest.mark.slow
def test_the_benchmark_runs_each_way(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    main(
        [
            "--trials",
            "4",
            "--k",
            "2",
            "--epochs",
            "2",
            "--reduction",
            "2",
            "--problem",
            "linear_pair",
            "--json",
            str(out),
        ]
    )
    rows = json.loads(out.read_text())["rows"]
    assert [r["way"] for r in rows] == list(WAYS)
    assert all(r["trials"] == 4 and r["epochs"] > 0 and r["wall_s"] > 0 and r["span_s"] > 0 for r in rows)
