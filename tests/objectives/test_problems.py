"""Problem registry, built-in problems and user ``module:function`` problems (objectives.problems)."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from torch.utils.data import Dataset, default_collate

from objectives.config import DualLossConfig
from objectives.dual_loss import _output, evaluate
from objectives.problems import (
    BUILTINS,
    CoupledProblem,
    Problem,
    ProblemError,
    build_problem,
    check_problem,
    linear_pair,
)
from objectives.problems.base import Split
from tests.objectives import user_problem

USER = "tests.objectives.user_problem"
DUAL = sorted(n for n, b in BUILTINS.items() if b.loop == "dual_loss")
COUPLED = sorted(n for n, b in BUILTINS.items() if b.loop == "alternating")


def n_samples(split: Split) -> int:
    """Samples in a split: a Dataset's length, or the first dimension of its tensors."""
    return len(split) if isinstance(split, Dataset) else len(split[0])


def _batch(split: Split, n: int, collate: Callable[[list[Any]], Any] | None = None) -> tuple[Any, ...]:
    """The first ``n`` samples of a split as tensors: rows of its tensors, or ``n`` Dataset items collated
    (with the task's ``collate_fn``, else torch's)."""
    if isinstance(split, Dataset):
        return tuple((collate or default_collate)([split[i] for i in range(n)]))
    return tuple(v[:n] for v in split)


def _split_tensors(split: Split, collate: Callable[[list[Any]], Any] | None = None) -> tuple[Any, ...]:
    """Every sample of a split as tensors: a tensor split as it is; a Dataset's items drawn under torch
    seed 0 (augmentation is random), leaving the global RNG as it was."""
    if not isinstance(split, Dataset):
        return tuple(split)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return _batch(split, n_samples(split), collate)


def _splits(problem: Problem | CoupledProblem) -> list[tuple[Any, ...]]:
    """Every split of a problem (train and val; of a, then b) as tensors."""
    if isinstance(problem, CoupledProblem):
        return [_split_tensors(s, problem.collate_fn) for s in (problem.train, problem.val)]
    return [_split_tensors(s, t.collate_fn) for t in problem.tasks.values() for s in (t.train, t.val)]


def _tensors(problem: Problem | CoupledProblem) -> list[torch.Tensor]:
    return [tensor for split in _splits(problem) for tensor in split]


def _inputs(problem: Problem | CoupledProblem) -> list[torch.Tensor]:
    return [split[0] for split in _splits(problem)]


# --- every built-in -------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def _cache_in_tmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Built-ins that cache files (digits_images) write them under a temp folder, not ~/.cache/sweep."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SWEEP_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="module")
def built() -> dict[str, Problem | CoupledProblem]:
    """Each built-in, built once with default options and data seed 0, for its own loop."""
    return {name: build_problem(name, {}, 0, b.loop) for name, b in BUILTINS.items()}


@pytest.mark.parametrize("name", DUAL)
def test_builtin_tensors_have_matching_first_dims(name, built):
    """Inputs and targets of every tensor split have the same, non-zero number of rows; a Dataset split
    is non-empty and its items are one sample's (inputs, target)."""
    problem = built[name]
    for task in problem.tasks.values():
        for split in (task.train, task.val):
            if isinstance(split, Dataset):
                assert len(split) > 0
                x, y = split[0]
            else:
                x, y = split
                assert len(x) == len(y) > 0
            assert x.is_floating_point()


@pytest.mark.parametrize("name", DUAL)
def test_builtin_forward_gives_finite_scalar_loss(name, built):
    """The model's output (or its task head) on a batch gives a finite 0-d loss and metrics."""
    problem = built[name]
    torch.manual_seed(0)
    model = problem.make_model()
    for task in problem.tasks.values():
        x, y = _batch(task.train, 8, task.collate_fn)
        out = _output(model, task, x)
        assert len(out) == 8
        loss = task.loss(out, y)
        assert loss.dim() == 0
        assert math.isfinite(loss.item())
        loss.backward()  # differentiable w.r.t. the model
        for fn in task.metrics.values():
            value = fn(out.detach(), y)
            assert value.dim() == 0 and math.isfinite(value.item())


@pytest.mark.parametrize("name", DUAL)
def test_builtin_declared_metrics_match_tasks(name, built):
    """Builtin.metrics equals the metric names each built task reports (and what evaluate logs)."""
    builtin, problem = BUILTINS[name], built[name]
    declared = Problem.declared_metric_names(builtin.metrics, builtin.tasks)
    assert problem.metric_names() == declared
    assert tuple(problem.tasks) == builtin.tasks
    torch.manual_seed(0)
    cfg = DualLossConfig(problem=name, tasks=builtin.tasks)
    logged = set(evaluate(problem.make_model(), dict(problem.tasks), cfg, torch.device("cpu")))
    expected = {f"val_{t}_loss" for t in builtin.tasks} | {"val_total_loss"}
    assert logged == expected | {f"val_{t}_{m}" for t, names in declared.items() for m in names}


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_builtin_data_is_a_function_of_seed(name, built):
    """Same seed -> identical tensors; another seed -> different inputs in every split."""
    loop = BUILTINS[name].loop
    again = build_problem(name, {}, 0, loop)
    assert all(torch.equal(x, y) for x, y in zip(_tensors(built[name]), _tensors(again), strict=True))
    other = build_problem(name, {}, 1, loop)
    for x, y in zip(_inputs(built[name]), _inputs(other), strict=True):
        assert not torch.equal(x, y)


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_check_problem_returns_builtin_metrics(name):
    """check_problem(name, {}) returns the built-in's declared metric names."""
    assert check_problem(name, {}, BUILTINS[name].loop) == BUILTINS[name].metrics


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_check_problem_rejects_unknown_option(name):
    """An unknown option raises ProblemError whose key is that option."""
    with pytest.raises(ProblemError) as info:
        check_problem(name, {"nonexistent_option": 1}, BUILTINS[name].loop)
    assert info.value.key == "nonexistent_option"


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_build_problem_rejects_unknown_option(name):
    """build_problem validates built-in options too (same ProblemError)."""
    with pytest.raises(ProblemError) as info:
        build_problem(name, {"nonexistent_option": 1}, 0, BUILTINS[name].loop)
    assert info.value.key == "nonexistent_option"


@pytest.mark.parametrize(("name", "key"), [("linear_pair", "n_a"), ("digits_pair", "n_b"), ("digits_images", "n_b")])
def test_check_problem_rejects_bad_value(name, key):
    """An invalid option value (0 where positive is required) names that key."""
    with pytest.raises(ProblemError) as info:
        check_problem(name, {key: 0})
    assert info.value.key == key


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_builtin_refused_by_the_other_loop(name):
    """A built-in named for the wrong loop is refused with the loop it belongs to."""
    other = "alternating" if BUILTINS[name].loop == "dual_loss" else "dual_loss"
    with pytest.raises(ProblemError, match=f"is for the {BUILTINS[name].loop} loop"):
        check_problem(name, {}, other)


@pytest.mark.parametrize("name", COUPLED)
def test_coupled_builtin_shapes_and_losses(name, built):
    """x, y and A's target line up; B consumes A's output; both losses are finite and differentiable."""
    problem = built[name]
    for x, y, t in _splits(problem):
        assert len(x) == len(y) == len(t) > 0
    torch.manual_seed(0)
    model_a, model_b = problem.make_model_a(), problem.make_model_b()
    x, y, t = _batch(problem.train, 8, problem.collate_fn)
    z = model_a(x)
    assert z.shape == t.shape
    out = model_b(z)
    loss = problem.loss_a(z, t) + problem.loss_b(out, y)
    assert loss.dim() == 0 and math.isfinite(loss.item())
    loss.backward()
    assert all(p.grad is not None for p in [*model_a.parameters(), *model_b.parameters()])
    assert problem.metric_names() == {"a": (), "b": BUILTINS[name].metrics}
    for fn in problem.metrics.values():
        assert math.isfinite(fn(out.detach(), y).item())


def test_digits_codes_target_is_standardised_train_pca():
    """A's target is the PCA code of the training images with unit variance per component."""
    problem = build_problem("digits_codes", {"n_train": 400, "code_dim": 3}, 0, "alternating")
    x, _, t = problem.train
    assert t.shape == (400, 3)
    torch.testing.assert_close(t.std(dim=0), torch.ones(3), atol=1e-5, rtol=0)
    # The codes are a linear function of the centred images (a projection): least squares fits exactly.
    centred = x - x.mean(dim=0)
    fit = torch.linalg.pinv(centred.double()) @ t.double()
    torch.testing.assert_close((centred.double() @ fit), t.double(), atol=1e-4, rtol=0)


def test_check_problem_unknown_builtin():
    """An unknown built-in name raises ProblemError listing the built-ins, with no key."""
    with pytest.raises(ProblemError, match=r"unknown problem 'nope'.*digits_pair, digits_three, linear_pair") as info:
        check_problem("nope", {})
    assert info.value.key is None


def test_builtin_options_are_applied():
    """Options reach the builder: sizes and dim of linear_pair, sizes of digits_pair."""
    lp = build_problem("linear_pair", {"dim": 3, "n_a": 5, "n_b": 7, "n_val": 9}, 0)
    assert lp.a.train[0].shape == (5, 3) and lp.b.train[0].shape == (7, 3)
    assert lp.a.val[0].shape == (9, 3) and lp.b.val[0].shape == (9, 3)
    dp = build_problem("digits_pair", {"n_a": 11, "n_b": 6, "n_val": 13}, 0)
    assert dp.a.train[0].shape == (11, 128) and dp.b.train[0].shape == (6, 128)
    assert dp.a.val[0].shape == (13, 128)


# --- linear_pair closed form ----------------------------------------------------------------------


def test_linear_pair_optimum_at_one_is_least_squares_on_a():
    """optimum(problem, 1.0) is the least-squares fit on dataset a alone."""
    problem = build_problem("linear_pair", {"dim": 5, "n_a": 40, "n_b": 80}, 3)
    x, y = (t.double() for t in problem.a.train)
    lstsq = torch.linalg.lstsq(x, y).solution.squeeze(1)
    theta = linear_pair.optimum(problem, 1.0)
    assert theta.dtype == torch.float64 and theta.shape == (5,)
    torch.testing.assert_close(theta, lstsq, rtol=1e-9, atol=1e-9)


def test_linear_pair_optimum_at_zero_is_least_squares_on_b():
    """optimum(problem, 0.0) is the least-squares fit on dataset b alone."""
    problem = build_problem("linear_pair", {"dim": 5, "n_a": 40, "n_b": 80}, 3)
    x, y = (t.double() for t in problem.b.train)
    torch.testing.assert_close(
        linear_pair.optimum(problem, 0.0), torch.linalg.lstsq(x, y).solution.squeeze(1), rtol=1e-9, atol=1e-9
    )


def test_linear_pair_optimum_zeroes_weighted_gradient():
    """At θ(w) the gradient of w·L_a + (1-w)·L_b vanishes (stationarity, in float64)."""
    problem = build_problem("linear_pair", {"dim": 5, "n_a": 40, "n_b": 80}, 3)
    w = 0.3
    theta = linear_pair.optimum(problem, w).clone().requires_grad_(True)
    loss = sum(
        wi * torch.nn.functional.mse_loss(t.train[0].double() @ theta, t.train[1].double().squeeze(1))
        for wi, t in ((w, problem.a), (1 - w, problem.b))
    )
    (grad,) = torch.autograd.grad(loss, theta)
    assert grad.abs().max().item() < 1e-9


def test_linear_pair_scale_multiplies_b_targets_by_its_root():
    """Option scale multiplies only dataset b's targets by sqrt(scale) (so L_b is ~scale times larger)."""
    opts = {"dim": 3, "n_a": 20, "n_b": 30, "n_val": 10}
    one = build_problem("linear_pair", {**opts, "scale": 1.0}, 0)
    hundred = build_problem("linear_pair", {**opts, "scale": 100.0}, 0)
    torch.testing.assert_close(hundred.b.train[1], 10.0 * one.b.train[1])
    torch.testing.assert_close(hundred.b.val[1], 10.0 * one.b.val[1])
    torch.testing.assert_close(hundred.b.train[0], one.b.train[0])
    assert torch.equal(hundred.a.train[1], one.a.train[1])


# --- user problems (module:function) --------------------------------------------------------------


def test_user_check_problem_returns_none():
    """check_problem on a user path with a known option returns None (metrics unknown until built)."""
    assert check_problem(f"{USER}:make", {"n": 16}) is None


def test_user_check_problem_rejects_unknown_option():
    """An option the user function does not take raises ProblemError naming the key."""
    with pytest.raises(ProblemError, match="bogus") as info:
        check_problem(f"{USER}:make", {"n": 16, "bogus": 1})
    assert info.value.key == "bogus"


def test_user_check_problem_accepts_any_option_with_kwargs():
    """A function taking **options accepts any option name."""
    assert check_problem(f"{USER}:make_any", {"whatever": 1}) is None


def test_user_build_problem_passes_seed_and_options():
    """build_problem calls the user function with seed= and the options as keywords."""
    user_problem.CALLS.clear()
    problem = build_problem(f"{USER}:make", {"n": 16}, 7)
    assert user_problem.CALLS == [{"seed": 7, "n": 16}]
    assert isinstance(problem, Problem)
    assert len(problem.a.train[0]) == 16
    direct = user_problem.make(seed=7, n=16)
    assert all(torch.equal(x, y) for x, y in zip(_tensors(problem), _tensors(direct), strict=True))


def test_user_missing_module():
    """A module that does not import raises ProblemError saying which module."""
    with pytest.raises(ProblemError, match=re.escape("cannot import module 'tests.objectives.no_such_module'")):
        check_problem("tests.objectives.no_such_module:make", {})
    with pytest.raises(ProblemError, match="cannot import module"):
        build_problem("tests.objectives.no_such_module:make", {}, 0)


@pytest.mark.parametrize("func", ["no_such_function", "NOT_CALLABLE"])
def test_user_missing_function(func):
    """A missing (or non-callable) attribute raises ProblemError naming module and function."""
    with pytest.raises(ProblemError, match=re.escape(f"module '{USER}' has no function '{func}'")):
        check_problem(f"{USER}:{func}", {})
    with pytest.raises(ProblemError, match="has no function"):
        build_problem(f"{USER}:{func}", {}, 0)


@pytest.mark.parametrize("path", [":make", f"{USER}:", ":"])
def test_user_malformed_path(path):
    """A path without a module or a function part raises ProblemError explaining the form."""
    with pytest.raises(ProblemError, match=re.escape("package.module:function")):
        check_problem(path, {})


def test_user_function_returning_non_problem():
    """A user function that returns something else raises ProblemError naming the returned type."""
    with pytest.raises(ProblemError, match=re.escape("returned dict, not objectives.problems.Problem")):
        build_problem(f"{USER}:not_a_problem", {}, 0)


def test_user_option_named_seed_is_refused():
    """An option named 'seed' (the loop passes the seed itself) is refused up front with key 'seed'."""
    with pytest.raises(ProblemError) as info:
        check_problem(f"{USER}:make", {"seed": 1})
    assert info.value.key == "seed"


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_builtin_builds_its_declared_kind(name, built):
    """Builtin.kind is the type its builder returns: what decides which loops may train it."""
    assert type(built[name]) is BUILTINS[name].kind


def test_builtin_serves_any_loop_that_trains_its_kind():
    """A loop other than the one a built-in was written for may use it when it trains the same type."""
    assert check_problem("linear_pair", {}, "my_loop", Problem) == ()
    with pytest.raises(ProblemError, match="built-ins for my_loop are digits_codes"):
        check_problem("linear_pair", {}, "my_loop", CoupledProblem)


def test_digits_read_without_sklearn_equal_load_digits() -> None:
    """The bundled CSV read directly is exactly what scikit-learn's loader returns."""
    from sklearn.datasets import load_digits

    from objectives.problems.common import digits, digits_array

    reference = load_digits()
    data = digits_array()
    assert (data[:, :-1] == reference.data).all() and (data[:, -1] == reference.target).all()
    x, y = digits()
    assert torch.equal(x, torch.tensor(reference.data, dtype=torch.float32) / 16.0)
    assert torch.equal(y, torch.tensor(reference.target, dtype=torch.long))
    assert (data[:, :-1].reshape(-1, 8, 8) == reference.images).all()


@pytest.mark.slow
def test_a_run_of_a_digits_problem_does_not_import_sklearn() -> None:
    code = "import sys; from objectives.problems.common import digits; digits(); print('sklearn' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _rows(split: Split) -> set[Any]:
    """A split's samples as hashable keys: a Dataset's file paths when it has them, else input rows."""
    if isinstance(split, Dataset) and hasattr(split, "samples"):
        return {path for path, _ in split.samples}
    x = split[0] if not isinstance(split, Dataset) else _split_tensors(split)[0]
    return {tuple(row.tolist()) for row in x.reshape(len(x), -1)}


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_builtin_test_split_is_held_out(name, built):
    """Every built-in carves a test split out of its data (with the data seed) that shares no sample with
    its training or validation splits, and the loops' data paths (``to``) leave it alone."""
    problem = built[name]
    assert problem.has_test
    parts = [(problem.train, problem.val, problem.test)] if isinstance(problem, CoupledProblem) else [
        (t.train, t.val, t.test) for t in problem.tasks.values()
    ]  # fmt: skip
    for train, val, test in parts:
        held_out = _rows(test)
        assert len(held_out) > 0
        assert not held_out & _rows(train) and not held_out & _rows(val)
    on_test = problem.on_test()
    if isinstance(problem, CoupledProblem):
        assert on_test.val is problem.test
    else:
        assert all(on_test.tasks[n].val is t.test for n, t in problem.tasks.items())


def test_linear_pair_related_leans_task_b_towards_task_a_and_changes_nothing_else():
    """``related`` mixes θ_a into θ_b only: 0 draws exactly the data it always did; above 0, every input and
    task a's targets stay the same, and task b's best map moves towards task a's."""
    from objectives.problems.linear_pair import Options, build, optimum

    base, zero = build(Options(), 3), build(Options(related=0.0), 3)
    near = build(Options(related=0.98), 3)
    for p in (zero, near):
        for split in ("train", "val", "test"):
            assert torch.equal(getattr(base.a, split)[0], getattr(p.a, split)[0])  # inputs of a
            assert torch.equal(getattr(base.b, split)[0], getattr(p.b, split)[0])  # inputs of b
            assert torch.equal(getattr(base.a, split)[1], getattr(p.a, split)[1])  # targets of a
    assert all(torch.equal(getattr(base.b, s)[1], getattr(zero.b, s)[1]) for s in ("train", "val", "test"))
    assert not torch.equal(base.b.train[1], near.b.train[1])
    theta_a, theta_b = optimum(base, 1.0), optimum(base, 0.0)  # each task alone (b's scaled by √30)
    cos = torch.nn.functional.cosine_similarity
    assert cos(optimum(near, 0.0), theta_a, dim=0) > 0.9 > cos(theta_b, theta_a, dim=0)
