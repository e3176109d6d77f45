"""``benchmarks.parallel_trials`` runs and checks what it claims: grouped members give the sequential values."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.parallel_trials import main


def test_the_benchmark_runs_and_the_members_match_their_sequential_runs(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    args = ["--device", "cpu", "--trials", "4", "--sequential", "4", "--ks", "2,4", "--problems", "linear_pair"]
    main([*args, "--json", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert [g["k"] for g in rows[0]["groups"]] == [2, 4]
    for g in rows[0]["groups"]:
        assert g["s_per_trial"] > 0 and g["ratio"] > 0
        assert g["max_rel_diff"] < 1e-4  # float32 round-off on a stable problem
