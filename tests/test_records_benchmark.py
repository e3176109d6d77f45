"""``benchmarks.records``: two runs of one study compare equal, and what it claims to compare is compared
(a changed metric, intermediate value, tag or artifact is found; times and ids are not)."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from benchmarks.records import main, records
from tests.conftest import run_cli, tiny_study, write_yaml


def _run(folder: Path, **overrides: object) -> Path:
    folder.mkdir()
    write_yaml(folder / "s.yaml", tiny_study(**overrides))
    done = run_cli("sweep.run", "s.yaml", "--no-report", cwd=folder)
    assert done.returncode == 0, done.stderr
    return folder


@pytest.mark.slow
def test_two_runs_agree_and_each_kind_of_change_is_found(tmp_path: Path, capsys) -> None:
    a, b = _run(tmp_path / "a"), _run(tmp_path / "b")
    assert main([str(a), str(b)]) == 0
    assert "compared 3 trials, 4 runs" in capsys.readouterr().out
    tree = records(a)
    assert set(tree["mlflow"]) == {"experiment tiny/parent", *(f"experiment tiny/trial {i}" for i in range(3))}
    assert set(tree["mlflow"]["experiment tiny/trial 1"]["artifacts"]) == {"config.yaml", "weights.pt"}

    c = tmp_path / "c"
    shutil.copytree(b, c)
    with sqlite3.connect(c / "mlflow.db") as db:  # one metric value, one tag
        db.execute("UPDATE metrics SET value = value + 1e-6 WHERE key = 'val_total_loss' AND step = 1")
        db.execute("UPDATE tags SET value = 'x' WHERE key = 'sweep.loop'")
        db.execute("UPDATE runs SET artifact_uri = replace(artifact_uri, ?, ?)", (str(b), str(c)))  # the copy's files
    with sqlite3.connect(c / ".sweep" / "optuna.db") as db:  # one intermediate value
        db.execute("UPDATE trial_intermediate_values SET intermediate_value = 9 WHERE step = 2 AND trial_id = 1")
    weights = next(p for p in (c / "mlartifacts").rglob("weights.pt"))
    import torch

    state = torch.load(weights, weights_only=True)
    first = next(iter(state.values()))
    first[next(iter(first))].view(-1)[0] += 1.0  # one weight
    torch.save(state, weights)
    capsys.readouterr()
    assert main([str(b), str(c)]) == 1
    out = capsys.readouterr().out
    assert out.count("/metrics/val_total_loss:") == 3  # every trial's history at step 1
    assert out.count("/tags/sweep.loop:") == 3  # every trial
    assert "optuna/study tiny/trial 0/intermediate_values/2:" in out
    assert out.count("/artifacts/weights.pt:") == 1
    assert main([str(b), str(c), "--allow", "*/metrics/*", "--allow", "*/tags/*"]) == 1  # the rest still counts
    assert main([str(b), str(c), "--allow", "*"]) == 0


@pytest.mark.slow
def test_a_record_only_one_run_has_is_a_difference(tmp_path: Path, capsys) -> None:
    a = _run(tmp_path / "a")
    b = _run(tmp_path / "b", tracking={"uri": "sqlite:///mlflow.db", "trial_plots": True})
    assert main([str(a), str(b)]) == 1
    out = capsys.readouterr().out
    assert out.count("/artifacts/loss_curves.png: absent → 'file (.png)'") == 3
    assert "parent/artifacts/study.yaml:" in out  # the study file differs too (trial_plots), and says so
    assert main([str(a), str(b), "--allow", "*/loss_curves.png", "--allow", "*/study.yaml"]) == 0


def test_kept_weights_compare_by_their_bytes_in_any_dtype(tmp_path: Path) -> None:
    """bf16 weights (numpy has no bf16) and 0-d buffers are hashed too; one changed bit is a change."""
    import torch

    from benchmarks.records import _artifact

    state = {"model": {"w": torch.arange(6, dtype=torch.bfloat16).reshape(2, 3), "steps": torch.tensor(3)}}
    torch.save(state, tmp_path / "a.pt")
    state["model"]["w"].view(torch.int16)[0, 0] ^= 1  # the lowest bit of one weight
    torch.save(state, tmp_path / "b.pt")
    a, b = _artifact(tmp_path / "a.pt"), _artifact(tmp_path / "b.pt")
    assert a.startswith("tensors ") and a != b
