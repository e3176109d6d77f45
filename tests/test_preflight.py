"""The preflight: a problem is built and one batch of each task pushed through it before a study starts.

Every broken problem (tests/fault_problems.py) is refused through the CLI, with and without --check:
exit 2, one stderr line naming the problem and what is wrong, no traceback, nothing created.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from objectives.config import DualLossConfig
from objectives.preflight import check_batch
from objectives.problems import build_problem
from tests.conftest import run_main, tiny_study, write_yaml

F = "tests.fault_problems"


def _study(name: str, options: dict[str, Any] | None = None, loop: str = "dual_loss", n_weights: int = 2) -> dict:
    doc = tiny_study("preflight", objective={"problem": {"name": name, "options": options or {}}})
    if loop == "alternating":
        doc["objective"] = {
            "loop": "alternating",
            "problem": {"name": name, "options": options or {}},
            "epochs": 1,
            "batch_size": 32,
            "device": "cpu",
            "weights": [0.4, 0.4, 0.2] if n_weights == 3 else [0.5, 0.5],
        }
        doc["search"] = {"weights": {"parametrization": "log_ratio", "low": -1, "high": 1}}
    return doc


# id: (problem, options, loop, number of weights, what the line starts with after "objective.problem: ",
# a fragment that says what is wrong). The study's batch size is 32; the fault problems' validation splits 16.
BROKEN: dict[str, tuple[str, dict[str, Any], str, int, str, str]] = {
    "empty dataset": (
        f"{F}:empty", {"which": "a_train"}, "dual_loss", 2, f"{F}:empty: ", "task a's training data is empty"
    ),
    "reduction none": (
        f"{F}:loss_none", {}, "dual_loss", 2, f"{F}:loss_none: task a's loss returns shape (32, 1)",
        "not a 0-d tensor: a batch mean is needed (reduction='none'?)",
    ),
    "(N,1) vs (N,) mse_loss": (
        f"{F}:column_against_vector", {"loss": "mse"}, "dual_loss", 2, f"{F}:column_against_vector: ",
        "task a's loss compares prediction (32, 1) with target (32,): the shapes broadcast to (32, 32)",
    ),
    "(N,1) vs (N,) hand-written": (
        f"{F}:column_against_vector", {"loss": "manual"}, "dual_loss", 2, f"{F}:column_against_vector: ",
        "task a's loss compares prediction (32, 1) with target (32,): the shapes broadcast to (32, 32)",
    ),
    "vector metric": (
        f"{F}:vector_metric", {}, "dual_loss", 2, f"{F}:vector_metric: ",
        "task b's metric 'abs_err' returns shape (16,), not a 0-d tensor",
    ),
    "nan at init": (
        f"{F}:nan_at_init", {}, "dual_loss", 2, f"{F}:nan_at_init: ",
        "task a's loss is nan on the first batch, before any training",
    ),
    "returns None": (
        f"{F}:returns_none", {}, "dual_loss", 2, f"{F}:returns_none: ", "returned None, not objectives.problems.Problem"
    ),
    "returns a dict": (
        f"{F}:returns_dict", {}, "dual_loss", 2, f"{F}:returns_dict: ", "returned dict, not objectives.problems.Problem"
    ),
    "coupled for dual_loss": (
        f"{F}:coupled", {}, "dual_loss", 2, f"{F}:coupled: returned CoupledProblem",
        "not objectives.problems.Problem (what the dual_loss loop trains)",
    ),
    "function raises": (
        f"{F}:raises", {}, "dual_loss", 2, f"{F}:raises: ", "raised ValueError: the data folder /nowhere is missing"
    ),
    "module raises on import": (
        "tests.fault_module_import:make", {}, "dual_loss", 2, "cannot import module 'tests.fault_module_import'",
        "its code raised RuntimeError: cannot reach the data server",
    ),
    "alternating: B's loss": (
        f"{F}:coupled", {"broken": "loss_b"}, "alternating", 2, f"{F}:coupled: ",
        "B's loss returns shape (32,), not a 0-d tensor",
    ),
    "alternating: consistency": (
        f"{F}:coupled", {"broken": "consistency"}, "alternating", 3, f"{F}:coupled: ",
        "the consistency term returns (32,), not a 0-d tensor",
    ),
}  # fmt: skip


@pytest.mark.parametrize("check", [False, True], ids=["run", "--check"])
@pytest.mark.parametrize(("name", "options", "loop", "n_weights", "start", "fragment"), BROKEN.values(), ids=BROKEN)
def test_broken_problem_is_refused_before_anything_is_created(
    tmp_path: Path, check: bool, name: str, options: dict, loop: str, n_weights: int, start: str, fragment: str
) -> None:
    write_yaml(tmp_path / "bad.yaml", _study(name, options, loop, n_weights))
    result = run_main("sweep.run", "bad.yaml", *(["--check"] if check else []), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: bad.yaml: objective.problem: {start}"), lines
    assert fragment in lines[0], lines
    assert "Traceback" not in result.stderr and "second line" not in result.stderr and result.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]  # no storage, no MLflow store


GOOD: dict[str, tuple[str, dict[str, Any], str, int]] = {
    "built-in": ("linear_pair", {"dim": 4, "n_a": 64, "n_b": 128, "n_val": 64}, "dual_loss", 2),
    "cross_entropy (N,C) vs (N,)": (f"{F}:classification", {"classes": 3}, "dual_loss", 2),
    "cross_entropy, C = batch size": (f"{F}:classification", {"classes": 32}, "dual_loss", 2),
    "a loss that squeezes itself": (f"{F}:squeezes_itself", {}, "dual_loss", 2),
    "Dataset splits": (f"{F}:augmented", {}, "dual_loss", 2),
    "alternating": (f"{F}:coupled", {}, "alternating", 2),
    "alternating, consistency": (f"{F}:coupled", {}, "alternating", 3),
}


@pytest.mark.parametrize(("name", "options", "loop", "n_weights"), GOOD.values(), ids=GOOD)
def test_good_problem_passes_check(tmp_path: Path, name: str, options: dict, loop: str, n_weights: int) -> None:
    """--check builds the problem and runs one batch through it; a correct pair of shapes is not flagged."""
    write_yaml(tmp_path / "ok.yaml", _study(name, options, loop, n_weights))
    result = run_main("sweep.run", "ok.yaml", "--check", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"ok.yaml: ok (problem {name} built, one batch through the model(s) and losses)\n"
    assert result.stderr == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.yaml"]


def test_out_of_memory_is_no_verdict(tmp_path: Path) -> None:
    """A batch that runs out of GPU memory is not refused (other searched settings may fit): a warning."""
    write_yaml(tmp_path / "oom.yaml", _study(f"{F}:oom", {"fail": True}))
    result = run_main("sweep.run", "oom.yaml", "--check", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith(f"warning: {F}:oom: one batch on cpu ran out of memory (CUDA out of memory.")
    assert "the batch check ran out of memory" in result.stdout


def test_check_batch_leaves_the_global_rngs_alone() -> None:
    """The check seeds its own draws and restores torch's, numpy's and random's states after."""
    cfg = DualLossConfig(problem=f"{F}:augmented", seed=3, data_seed=0, device="cpu")
    problem = build_problem(f"{F}:augmented", {}, 0)
    torch.manual_seed(11), np.random.seed(11), random.seed(11)
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(11), np.random.seed(11), random.seed(11)
    check_batch(cfg, problem)
    after = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(after[0], expected[0]) and np.array_equal(after[1], expected[1]) and after[2] == expected[2]


def _mean_sq(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return ((pred - target) ** 2).mean()


def _squeezing(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return ((pred.squeeze(-1) - target) ** 2).mean()


SHAPES = {  # model outputs, target shape, loss → the error's fragment ("" = not flagged)
    "(N,1) vs (N,), mse_loss": (1, (32,), torch.nn.functional.mse_loss, "broadcast to (32, 32)"),
    "(N,1) vs (N,3), mse_loss warns": (1, (32, 3), torch.nn.functional.mse_loss, "broadcast to (32, 3)"),
    "(N,1) vs (N,), hand-written": (1, (32,), _mean_sq, "prediction.squeeze(-1) or target.unsqueeze(-1)"),
    "(N,1) vs (N,), squeezed by the loss": (1, (32,), _squeezing, ""),
    "(N,3) vs (N,3)": (3, (32, 3), torch.nn.functional.mse_loss, ""),
    "(N,32) vs (N,) cross_entropy": (32, (32,), torch.nn.functional.cross_entropy, ""),
}


@pytest.mark.parametrize(("outputs", "target", "loss", "fragment"), SHAPES.values(), ids=SHAPES)
def test_the_shape_rule(outputs: int, target: tuple[int, ...], loss: Any, fragment: str) -> None:
    """A pair is flagged when torch warns of the broadcast, or when the shapes broadcast to a larger shape
    than either and the loss changes with the prediction reshaped to the target's shape."""
    from objectives.preflight import PreflightError
    from objectives.problems import Problem, Task

    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=g)
    classes = loss is torch.nn.functional.cross_entropy
    y = torch.randint(0, outputs, (64,), generator=g) if classes else torch.randn(64, *target[1:], generator=g)
    task = Task(train=(x, y), val=(x[:16], y[:16]), loss=loss)
    problem = Problem(make_model=lambda: torch.nn.Linear(4, outputs), a=task, b=task)
    cfg = DualLossConfig(problem="x:y", seed=0, data_seed=0, device="cpu", batch_size=32)
    if not fragment:
        check_batch(cfg, problem)
        return
    with pytest.raises(PreflightError, match=re.escape(fragment)):
        check_batch(cfg, problem)
