"""``--cpu-threads`` on every command that trains: the same option and default, applied to the training,
so that an evaluation gives the same values whichever command runs it."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import torch

from sweep.results.results import EVALUATION_ATTR
from tests.conftest import run_main, tiny_study, write_yaml
from tests.support.thread_problems import ThreadProbe

TRAINING_COMMANDS = ("sweep.run", "sweep.evaluate", "sweep.export", "sweep.noise")


@pytest.fixture
def ambient_threads() -> Iterator[None]:
    """The test changes torch's thread count of this process (as a fresh process's default would be): put
    it back afterwards."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _probe_study(tmp_path: Path, name: str, **sections: dict) -> Path:
    doc = tiny_study(name, study={"n_trials": 2})
    doc["objective"]["problem"] = {"name": "tests.support.thread_problems:probe"}
    doc.update(sections)
    return write_yaml(tmp_path / "s.yaml", doc)


def _seen(module: str, *args: str, cwd: Path) -> set[int]:
    """The thread counts the probe's forward passes saw while ``module args`` ran (which must succeed)."""
    ThreadProbe.seen.clear()
    result = run_main(module, *args, cwd=cwd)
    assert result.returncode == 0, result.stderr
    assert ThreadProbe.seen, f"{module} trained nothing"
    return set(ThreadProbe.seen)


def test_every_training_command_takes_cpu_threads_with_the_same_default() -> None:
    defaults = {}
    for module in TRAINING_COMMANDS:
        parser = importlib.import_module(module.replace("sweep.", "sweep.commands.")).parser()
        defaults[module] = parser.parse_args(["s.yaml"]).cpu_threads
        assert parser.parse_args(["s.yaml", "--cpu-threads", "3"]).cpu_threads == 3, module
        assert "--cpu-threads" in parser.format_help(), module
    assert defaults == dict.fromkeys(TRAINING_COMMANDS, 1)


def test_each_training_command_trains_on_the_threads_asked_for(tmp_path: Path, ambient_threads: None) -> None:
    """Whatever the process started with (3 threads here), training runs on ``--cpu-threads`` (default 1)."""
    _probe_study(tmp_path, "threads")
    torch.set_num_threads(3)
    assert _seen("sweep.run", "s.yaml", "--no-progress", "--no-report", cwd=tmp_path) == {1}
    torch.set_num_threads(3)
    assert _seen("sweep.evaluate", "s.yaml", "--seeds", "1", "--no-progress", cwd=tmp_path) == {1}
    torch.set_num_threads(3)
    args = ("sweep.evaluate", "s.yaml", "--seeds", "1", "--again", "--no-progress", "--cpu-threads", "2")
    assert _seen(*args, cwd=tmp_path) == {2}
    torch.set_num_threads(3)  # export --seeds evaluates (other seed counts than before: it trains)
    assert _seen("sweep.export", "s.yaml", "-o", "a.yaml", "--seeds", "2", cwd=tmp_path) == {1}
    torch.set_num_threads(3)
    args = ("sweep.export", "s.yaml", "-o", "b.yaml", "--seeds", "3", "--cpu-threads", "2")
    assert _seen(*args, cwd=tmp_path) == {2}


def test_two_evaluations_with_the_same_seeds_give_the_same_values(tmp_path: Path, ambient_threads: None) -> None:
    """``sweep.run`` evaluates the study file's ``evaluate:`` on its --cpu-threads; ``sweep.evaluate --again``
    in a process that started with another thread count retrains the same seeds to the same values."""
    _probe_study(tmp_path, "repro", evaluate={"seeds": 2})
    torch.set_num_threads(2)  # what each command's process starts with on a 2-core machine
    ran = run_main("sweep.run", "s.yaml", "--no-progress", "--no-report", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    storage = f"sqlite:///{tmp_path / '.sweep' / 'optuna.db'}"
    first = optuna.load_study(study_name="repro", storage=storage).user_attrs[EVALUATION_ATTR]
    torch.set_num_threads(2)
    again = run_main("sweep.evaluate", "s.yaml", "--again", "--no-progress", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    second = optuna.load_study(study_name="repro", storage=storage).user_attrs[EVALUATION_ATTR]
    assert list(first) == list(second) and len(first) == 1
    (trial,) = first
    assert second[trial]["seeds"] == first[trial]["seeds"] and second[trial]["run_id"] != first[trial]["run_id"]
    assert second[trial]["values"] == first[trial]["values"]  # bit for bit
