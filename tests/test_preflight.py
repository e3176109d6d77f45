"""The preflight: a problem is built and one batch of each task pushed through it before a study starts.

Every broken problem (tests/support/fault_problems.py) is refused through the CLI, with and without --check:
exit 2, one stderr line naming the problem and what is wrong, no traceback, nothing created.
"""

from __future__ import annotations

import random
import re
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from objectives.config import DualLossConfig
from objectives.preflight import check_batch
from objectives.problems import Problem, Task, build_problem
from tests.conftest import run_main, tiny_study, write_yaml

F = "tests.support.fault_problems"


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
        "tests.support.fault_module_import:make",
        {},
        "dual_loss",
        2,
        "cannot import module 'tests.support.fault_module_import'",
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


# --- the batch is drawn as training draws it; class labels against the head's width ---------------


class _Items(torch.utils.data.Dataset):
    """A map-style Dataset over ``(x, y)`` tensors, one sample per item (the DataLoader path)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[i], self.y[i]


class _TwoHeads(torch.nn.Module):
    """A 3-logit head (output 0) and a 5-logit head (output 1)."""

    def __init__(self) -> None:
        super().__init__()
        self.three, self.five = torch.nn.Linear(4, 3), torch.nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.three(x), self.five(x)


def sorted_classes(seed: int, swapped: bool = True, dataset: bool = True, ignore: bool = False) -> Problem:
    """Class-sorted splits, as a folder-per-class dataset reads: task a has 5 classes (32 samples each,
    in class order, so a first unshuffled batch of 32 holds class 0 only), task b 3. ``swapped`` wires
    task a to the 3-logit head and b to the 5-logit one (``IndexError: Target 3 is out of bounds`` at
    the first shuffled batch of every trial); ``dataset``: the training splits are Datasets, else
    tensors; ``ignore``: task a's loss ignores label -1, which some of its labels are."""
    g = torch.Generator().manual_seed(seed)

    def split(classes: int, per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(classes).repeat_interleave(per_class)
        return torch.randn(len(y), 4, generator=g), y

    (xa, ya), (xb, yb) = split(5, 32), split(3, 32)
    loss_a = torch.nn.functional.cross_entropy
    if ignore:
        ya = torch.where(torch.arange(len(ya)) % 7 == 0, -1, ya)
        loss_a = partial(torch.nn.functional.cross_entropy, ignore_index=-1)
    train_a, train_b = (_Items(xa, ya), _Items(xb, yb)) if dataset else ((xa, ya), (xb, yb))
    a = Task(train=train_a, val=(xa[:16], ya[:16]), loss=loss_a, head=0 if swapped else 1)
    b = Task(train=train_b, val=(xb[:16], yb[:16]), loss=torch.nn.CrossEntropyLoss(), head=1 if swapped else 0)
    return Problem(make_model=_TwoHeads, a=a, b=b)


SORTED = f"{__name__}:sorted_classes"


@pytest.mark.parametrize("check", [False, True], ids=["run", "--check"])
@pytest.mark.parametrize("dataset", [True, False], ids=["Dataset", "tensors"])
def test_a_head_narrower_than_the_classes_is_refused_on_class_sorted_data(
    tmp_path: Path, check: bool, dataset: bool
) -> None:
    """A 5-class task on a 3-logit head, its data sorted by class (the first unshuffled batch is all class
    0, which passed): refused with one line naming the file, the key, the task, its labels and the
    output's width; exit 2; nothing created."""
    write_yaml(tmp_path / "bad.yaml", _study(SORTED, {"dataset": dataset}))
    result = run_main("sweep.run", "bad.yaml", *(["--check"] if check else []), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"error: bad.yaml: objective.problem: {SORTED}: task a's labels "), lines
    assert "reach 4" in lines[0] and "3 classes" in lines[0] and "Task.head" in lines[0], lines
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]


@pytest.mark.parametrize(("dataset", "ignore"), [(True, False), (False, False), (False, True), (True, True)])
def test_heads_wired_right_pass_on_class_sorted_data(dataset: bool, ignore: bool) -> None:
    """The same data with each task on the head as wide as its classes passes (a loss's ignore_index
    label is no class)."""
    cfg = DualLossConfig(problem="x:y", seed=0, data_seed=0, device="cpu", batch_size=32)
    check_batch(cfg, sorted_classes(0, swapped=False, dataset=dataset, ignore=ignore))


class _Recorder(torch.nn.Module):
    """Keeps a copy of every input it is called on."""

    def __init__(self, seen: list[torch.Tensor]) -> None:
        super().__init__()
        self.seen, self.layer = seen, torch.nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.detach().clone())
        return self.layer(x)


@pytest.mark.parametrize("dataset", [True, False], ids=["Dataset", "tensors"])
def test_the_batch_is_the_first_one_training_draws(dataset: bool) -> None:
    """The preflight's training batch of each task is the trial's first batch (shuffled with the trial's
    seed, as the loop shuffles: tensors by the trial's generator, Datasets by their loader's seed)."""
    from objectives import dual_loss

    problem = sorted_classes(0, swapped=False, dataset=dataset)
    seen: list[torch.Tensor] = []
    problem = Problem(
        make_model=lambda: _Recorder(seen), a=replace(problem.a, head=None), b=replace(problem.b, head=None)
    )
    cfg = DualLossConfig(problem="x:y", seed=5, data_seed=0, device="cpu", batch_size=32, epochs=1)
    check_batch(cfg, problem)
    checked = seen[:2]  # task a's training batch, then task b's
    seen.clear()
    dual_loss.train(cfg, problem=problem)
    assert torch.equal(checked[0], seen[0]) and torch.equal(checked[1], seen[1])
    first_a = problem.a.train[0][:32] if not dataset else torch.stack([problem.a.train[i][0] for i in range(32)])
    assert not torch.equal(checked[0], first_a)  # not the unshuffled first rows


# --- dict inputs: model(**inputs), and the key that does not fit ----------------------------------


def _dict_problem(keys: tuple[str, ...]) -> Problem:
    """examples/dict_inputs_problem with task a's training inputs under ``keys`` instead of its own."""
    from examples import dict_inputs_problem

    problem = dict_inputs_problem.make(0, n_a=64, n_b=64, n_val=32)
    inputs, target = problem.a.train
    renamed = dict(zip(keys, inputs.values(), strict=False))
    return replace(problem, a=replace(problem.a, train=(renamed, target)))


@pytest.mark.parametrize(
    ("keys", "fragments"),
    [
        (("input_id", "attention_mask"), ["key 'input_id' is not a parameter (did you mean 'input_ids'?)"]),
        (("input_ids", "atention_mask"), ["key 'atention_mask' is not a parameter (did you mean 'attention_mask'?)"]),
        (("input_ids",), ["no key for its parameter 'attention_mask'"]),
        (("tokens", "attention_mask"), ["key 'tokens' is not a parameter;", "no key for its parameter 'input_ids'"]),
    ],
    ids=["typo", "another typo", "missing", "unlike any"],
)
def test_dict_inputs_that_do_not_fit_forward_say_why(keys: tuple[str, ...], fragments: list[str]) -> None:
    """The preflight (and the loop, the same message) says that dict inputs are passed as
    ``model(**inputs)``, which keys ``forward`` does not take (with the closest parameter it does take)
    and which parameters get no key."""
    from objectives import dual_loss
    from objectives.preflight import PreflightError

    problem = _dict_problem(keys)
    cfg = DualLossConfig(problem="x:y", seed=0, data_seed=0, device="cpu", batch_size=32, epochs=1)
    with pytest.raises(PreflightError) as caught:
        check_batch(cfg, problem)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(
        "the model on task a's training batch raised TypeError: dict inputs are passed as model(**inputs)"
    )
    assert "BagOfEmbeddings.forward(input_ids, attention_mask)" in message
    for fragment in fragments:
        assert fragment in message, message
    with pytest.raises(TypeError, match=re.escape("dict inputs are passed as model(**inputs)")) as in_loop:
        dual_loss.train(cfg, problem=problem)
    assert all(fragment in str(in_loop.value) for fragment in fragments)


def test_a_type_error_inside_forward_is_left_as_it_is() -> None:
    """Keys that fit ``forward``: a TypeError raised inside it is the model's own, passed on unchanged."""
    from objectives.data import call

    class Broken(torch.nn.Module):
        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
            raise TypeError("unsupported operand inside the model")

    with pytest.raises(TypeError, match=r"^unsupported operand inside the model$"):
        call(Broken(), {"input_ids": torch.zeros(2)})


def test_coupled_labels_are_checked_against_b_output() -> None:
    """In the alternating loop B's cross-entropy labels are checked against B's output width too."""
    from objectives.config import AlternatingConfig
    from objectives.preflight import PreflightError
    from objectives.problems import CoupledProblem

    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=g)
    y = torch.arange(3).repeat_interleave(22)[:64]  # three classes, sorted
    problem = CoupledProblem(
        make_model_a=lambda: torch.nn.Linear(4, 2),
        make_model_b=lambda: torch.nn.Linear(2, 2),  # two logits for three classes
        train=(x, y, x[:, :2]),
        val=(x[:16], y[:16], x[:16, :2]),
        loss_a=torch.nn.functional.mse_loss,
        loss_b=torch.nn.functional.cross_entropy,
    )
    cfg = AlternatingConfig(problem="x:y", seed=0, data_seed=0, device="cpu", batch_size=32)
    with pytest.raises(
        PreflightError, match=re.escape("B's labels reach 2 (64 checked) but its output (32, 2) has 2 classes")
    ):
        check_batch(cfg, problem)


LABELS = {  # loss, labels, the error's fragment ("" = passes)
    "label -1, cross_entropy": (torch.nn.functional.cross_entropy, [0, 2, -1], "labels go down to -1 (3 checked)"),
    "ignore_index -100": (torch.nn.functional.cross_entropy, [0, 2, -100], ""),
    "NLLLoss(ignore_index=5)": (torch.nn.NLLLoss(ignore_index=5), [0, 2, 5], ""),
    "partial(nll_loss)": (partial(torch.nn.functional.nll_loss, reduction="sum"), [0, 3], "labels reach 3"),
    "not a classification loss": (torch.nn.functional.l1_loss, [0, 7], ""),
}


@pytest.mark.parametrize(("loss", "labels", "fragment"), LABELS.values(), ids=LABELS)
def test_which_labels_are_checked(loss: Any, labels: list[int], fragment: str) -> None:
    """Cross-entropy/NLL losses (functions, modules, partials) are checked, their ignore_index is no class;
    other losses are not."""
    from objectives.preflight import PreflightError
    from objectives.preflight_batches import check_classes

    pred = torch.zeros(4, 3)
    if not fragment:
        check_classes("task a", loss, pred, [torch.tensor(labels)])
        return
    with pytest.raises(PreflightError, match=re.escape(fragment)):
        check_classes("task a", loss, pred, [torch.tensor(labels)])
