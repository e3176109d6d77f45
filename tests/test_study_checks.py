"""Mistakes in a study file caught before trials run: an edited file re-run on an old study, a search
space with an invalid combination, non-finite bounds, a device this machine does not have."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import torch

from sweep.core.errors import ConfigError
from sweep.studyfile.config import parse_study
from tests.conftest import run_main, tiny_study, write_yaml


def _trials(tmp_path: Path, name: str) -> int:
    storage = f"sqlite:///{tmp_path / '.sweep' / 'optuna.db'}"
    return len(optuna.load_study(study_name=name, storage=storage).trials)


def test_an_edited_study_file_is_refused_naming_the_key(tmp_path: Path) -> None:
    """Re-running a study after changing what its trials are compared on (epochs 3 → 2) is refused with
    one line naming the key, and adds nothing; --allow-changes adds trials anyway; n_trials may change."""
    doc = tiny_study("edit", study={"n_trials": 2})
    path = write_yaml(tmp_path / "s.yaml", doc)
    assert run_main("sweep.run", "s.yaml", "--no-report", cwd=tmp_path).returncode == 0
    assert run_main("sweep.run", "s.yaml", "--no-report", "--n-trials", "3", cwd=tmp_path).returncode == 0
    assert _trials(tmp_path, "edit") == 3  # more trials of the same study is not a change

    doc["objective"]["epochs"] = 2
    write_yaml(path, doc)
    refused = run_main("sweep.run", "s.yaml", "--no-report", "--n-trials", "4", cwd=tmp_path)
    assert refused.returncode == 2
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: s.yaml: objective.epochs: is 2 here but 3 in study 'edit'")
    assert "--study-name" in lines[0] and "--allow-changes" in lines[0]
    assert _trials(tmp_path, "edit") == 3

    allowed = run_main("sweep.run", "s.yaml", "--no-report", "--n-trials", "4", "--allow-changes", cwd=tmp_path)
    assert allowed.returncode == 0, allowed.stderr
    assert _trials(tmp_path, "edit") == 4


def test_a_change_of_speed_only_is_accepted_with_one_note(tmp_path: Path) -> None:
    """Re-running a study after changing only how fast it trains (device, compile, the DataLoader's
    workers, pinning, prefetching) adds trials with one note naming what changed; a change of what the
    trials compute alongside it is still refused."""
    doc = tiny_study("speed", study={"n_trials": 1})
    path = write_yaml(tmp_path / "s.yaml", doc)
    assert run_main("sweep.run", "s.yaml", "--no-report", cwd=tmp_path).returncode == 0
    doc["objective"]["compile"] = {"backend": "eager"}
    doc["objective"]["data"] = {"num_workers": 2, "pin_memory": False, "persistent_workers": True, "prefetch_factor": 4}
    write_yaml(path, doc)
    accepted = run_main("sweep.run", "s.yaml", "--no-report", "--n-trials", "2", cwd=tmp_path)
    assert accepted.returncode == 0, accepted.stderr
    notes = [line for line in accepted.stderr.splitlines() if "changes how fast" in line]
    assert len(notes) == 1, accepted.stderr
    for key in ("objective.compile", "objective.data.num_workers", "objective.data.pin_memory"):
        assert key in notes[0]
    assert _trials(tmp_path, "speed") == 2

    doc["objective"]["epochs"] = 2
    write_yaml(path, doc)
    refused = run_main("sweep.run", "s.yaml", "--no-report", "--n-trials", "3", cwd=tmp_path)
    assert refused.returncode == 2 and "objective.epochs: is 2 here but 3" in refused.stderr


def test_a_changed_search_space_is_a_change(tmp_path: Path) -> None:
    doc = tiny_study("space", study={"n_trials": 1})
    path = write_yaml(tmp_path / "s.yaml", doc)
    assert run_main("sweep.run", "s.yaml", "--no-report", cwd=tmp_path).returncode == 0
    doc["search"]["params"]["optimizer.lr"]["high"] = 0.5
    write_yaml(path, doc)
    refused = run_main("sweep.run", "s.yaml", "--no-report", "--n-trials", "2", cwd=tmp_path)
    assert refused.returncode == 2 and "search.params.optimizer.lr.high: is 0.5 here but 0.1" in refused.stderr


def _alternating(search: dict) -> dict:
    return {
        "study": {"name": "alt"},
        "objective": {"loop": "alternating", "problem": "digits_codes", "weights": [1, 1]},
        "search": {"params": search},
    }


def test_joint_with_two_searched_schedules_is_refused_at_load_time() -> None:
    """Searching mode (joint included) and model B's schedule type independently would fail every joint
    trial that draws another schedule than A's: refused when the file loads, naming the combination."""
    search = {
        "mode": {"type": "categorical", "choices": ["alternate", "joint"]},
        "model_b.optimizer.schedule.type": {"type": "categorical", "choices": ["constant", "cosine"]},
    }
    with pytest.raises(ConfigError, match=r"search\.params: the combination mode='joint', model_b\.optimizer"):
        parse_study(_alternating(search), "x.yaml")
    search["model_b.optimizer.schedule.type"]["when"] = {"mode": "alternate"}  # never drawn with joint
    assert parse_study(_alternating(search), "x.yaml").search.params["mode"].choices == ("alternate", "joint")


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ({"type": "float", "low": float("nan"), "high": 1.0}, r"\.low: nan .*finite"),
        ({"type": "float", "low": 0.0, "high": float("inf")}, r"\.high: inf .*finite"),
        ({"type": "float", "low": 0.0, "high": 1.0, "grid": [0.5, float("nan")]}, r"\.grid\.1: nan .*finite"),
    ],
)
def test_non_finite_bounds_are_refused(spec: dict, fragment: str) -> None:
    doc = tiny_study("nan")
    doc["search"]["params"]["optimizer.lr"] = spec
    with pytest.raises(ConfigError, match=rf"^x\.yaml: search\.params\.optimizer\.lr{fragment}"):
        parse_study(doc, "x.yaml")


def test_nan_bounds_written_in_yaml_are_refused_through_the_cli(tmp_path: Path) -> None:
    text = write_yaml(tmp_path / "s.yaml", tiny_study("nan")).read_text().replace("low: 0.001", "low: .nan")
    (tmp_path / "s.yaml").write_text(text)
    out = run_main("sweep.run", "s.yaml", cwd=tmp_path)
    assert out.returncode == 2 and "search.params.optimizer.lr" in out.stderr and "finite" in out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA; this one has a GPU")
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_a_cuda_device_on_a_machine_without_one_is_refused(device: str) -> None:
    doc = tiny_study("dev")
    doc["objective"]["device"] = device
    with pytest.raises(ConfigError, match=rf"objective\.device: {device}: this machine has no CUDA device"):
        parse_study(doc, "x.yaml")
