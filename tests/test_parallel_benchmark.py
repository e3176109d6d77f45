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


def test_save_keeps_the_figures_with_how_they_were_made_and_the_doc_writer_renders_them(tmp_path: Path) -> None:
    """``--save`` writes the record ``python -m benchmarks.docs`` turns into docs/performance.md's table."""
    from benchmarks import docs

    out = tmp_path / "parallel_trials.json"
    args = ["--device", "cpu", "--trials", "2", "--sequential", "2", "--ks", "2", "--problems", "linear_pair"]
    main([*args, "--save", str(out)])
    record = json.loads(out.read_text())
    assert record["command"] == "python -m benchmarks.parallel_trials " + " ".join([*args, "--save", str(out)])
    assert record["settings"] == {
        "device": "cpu",
        "trials": 2,
        "sequential": 2,
        "ks": [2],
        "problems": ["linear_pair"],
        "study": False,
    }
    assert {"platform", "cpu", "cpus", "python", "torch", "device", "nice", "load_avg_1min"} <= set(record["machine"])
    assert record["results"]["rows"][0]["groups"][0]["k"] == 2
    text = docs.render("parallel_trials", tmp_path)
    (group,) = record["results"]["rows"][0]["groups"]
    assert f"| linear_pair | 2 | {3600 / group['s_per_trial']:,.0f} |" in text
    assert f"*Measured by `{record['command']}` on {record['date']} " in text


def test_the_epochs_study_is_issue_28s_study_and_a_valid_study_file(tmp_path: Path) -> None:
    """``--epochs-study``: the quickstart's search, 32 trials of the given epochs, every one trained to its end."""
    import yaml

    from benchmarks.parallel_trials import epochs_study
    from sweep.studyfile.config import load_study

    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(epochs_study(6)))
    study = load_study(path)
    assert study.study.n_trials == 32 and study.objective.epochs == 6
    assert study.objective.problem.name == "digits_pair"
    assert epochs_study(30)["objective"]["epochs"] == 30
    assert (epochs_study(6)["study"]["sampler"], epochs_study(6)["study"]["pruner"]) == ("random", "none")
