"""Types a problem is made of (kept apart so built-in problem files can import them)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

import torch
from pydantic import BaseModel
from torch.utils.data import Dataset

from objectives.names import check_task_names

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# A coupled problem's consistency term ``consistency(z, y_hat, y, t_a, model_b, *, x, model_a)``: A's output,
# B's output on it, the batch's final target and A's target, and model B (to apply it to something else,
# as the default term of :meth:`CoupledProblem.consistency_term` does), positionally; and, by keyword when its signature
# names them as parameters, the batch's inputs ``x`` and model A (to compare two views of x:
# ``model_b(model_a(augment(x)))`` against ``y_hat``). Returns a 0-d tensor (a batch mean). A callable of
# the five positional arguments alone is called with those five.
ConsistencyFn = Callable[..., torch.Tensor]

# What a consistency function may take by keyword, beyond its five positional arguments.
CONSISTENCY_KEYWORDS = ("x", "model_a")
_KEYWORD_KINDS = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def consistency_keywords(fn: Callable[..., Any]) -> tuple[str, ...]:
    """Which of :data:`CONSISTENCY_KEYWORDS` ``fn`` names as parameters it takes by keyword, read once from
    its signature (an ``nn.Module``'s ``forward``).

    Only named parameters count: ``**kwargs`` alone gets neither (a generic wrapper's ``*args, **kwargs``
    would pass them on to a five-argument function). A name among its first five positional parameters
    is one of the five (an old-style callable may call A's output ``x``), so it is not passed again. A
    callable whose signature cannot be read gets the five positional arguments only.

    Raises:
        ValueError: ``fn`` cannot be called as ``fn(z, y_hat, y, t_a, model_b[, x=..., model_a=...])``.
    """
    try:
        signature = inspect.signature(fn.forward if isinstance(fn, torch.nn.Module) else fn)
    except (TypeError, ValueError):
        return ()
    params = signature.parameters
    positional = [n for n, p in params.items() if p.kind in (inspect.Parameter.POSITIONAL_ONLY, *_KEYWORD_KINDS)]
    five = set(positional[:5])
    names = tuple(n for n in CONSISTENCY_KEYWORDS if n in params and params[n].kind in _KEYWORD_KINDS and n not in five)
    try:
        signature.bind(*range(5), **dict.fromkeys(names))
    except TypeError as e:
        raise ValueError(
            f"CoupledProblem.consistency{signature} cannot be called as consistency(z, y_hat, y, t_a, model_b"
            f"[, x=..., model_a=...]): {e}"
        ) from None
    return names


# A split is either tensors — ``(inputs, target)`` (``(inputs, target, a_target)`` for a coupled
# problem), first dimension = samples, moved to the device once and indexed there (the fast path) —
# or a ``torch.utils.data.Dataset`` whose items are such tuples for one sample, read through a
# DataLoader (map-style, or an ``IterableDataset`` for streams). ``inputs`` is a tensor, a tuple/list
# of tensors (the model is called as ``model(*inputs)``) or a dict of tensors (``model(**inputs)``).
Split = tuple[Any, ...] | Dataset


def move(tree: Any, device: torch.device | str, non_blocking: bool = False) -> Any:
    """A tensor, or nested tuples/lists/dicts of tensors, on ``device`` (no copy when already there)."""
    if isinstance(tree, torch.Tensor):
        return tree.to(device, non_blocking=non_blocking)
    if isinstance(tree, dict):
        return {k: move(v, device, non_blocking) for k, v in tree.items()}
    if isinstance(tree, list | tuple):
        return type(tree)(move(v, device, non_blocking) for v in tree)
    return tree


def _move_split(split: Split, device: torch.device | str) -> Split:
    return split if isinstance(split, Dataset) else move(tuple(split), device)


@dataclass(frozen=True)
class Task:
    """One task of a dual-loss problem.

    Attributes:
        train: The training split: ``(inputs, targets)`` tensors or a Dataset of ``(inputs, target)``
            samples (see :data:`Split`).
        val: The validation split, the same way: what trials are scored on.
        loss: Mean loss over a batch ``loss(prediction, target)``.
        head: When the model returns a tuple, the index of this task's output; ``None`` = the output.
        metrics: Extra validation metrics by name, each a batch mean ``metric(prediction, target)``.
            Logged as ``val_<task>_<name>`` (e.g. ``val_b_acc``).
        collate_fn: The DataLoader's ``collate_fn`` for Dataset splits (default: torch's).
        steps_per_epoch: Batches per epoch of the training split: required for an ``IterableDataset``
            (a stream has no length), applied to any split (:func:`objectives.data.epoch_steps`);
            ``objective.data.steps_per_epoch`` in the study file overrides it.
        test: The held-out test split, the same way, or ``None``. No trial ever reads it: only
            ``sweep.evaluate`` does, after the search has chosen its configurations.
    """

    train: Split
    val: Split
    loss: LossFn
    head: int | None = None
    metrics: Mapping[str, LossFn] = field(default_factory=dict)
    collate_fn: Callable[[list[Any]], Any] | None = None
    steps_per_epoch: int | None = None
    test: Split | None = None

    def to(self, device: torch.device | str) -> Task:
        """The same task with its tensor splits on ``device`` (Datasets stay: their batches move per step).
        The test split stays where it is: the loops never read it (see :func:`objectives.evaluation`)."""
        return replace(self, train=_move_split(self.train, device), val=_move_split(self.val, device))


@dataclass(frozen=True, init=False)
class Problem:
    """One model, two or more tasks: ``Problem(make_model, a=..., b=...)`` (tasks ``a`` and ``b``) or
    ``Problem(make_model, tasks={"seg": ..., "depth": ..., "normal": ...})`` (any names, in order).

    Attributes:
        make_model: Factory of the model (a tuple of outputs when the tasks read different heads).
        tasks: Every task by name, in the order of the loss weights (``objective.tasks``).
    """

    make_model: Callable[[], torch.nn.Module]
    tasks: Mapping[str, Task]

    def __init__(
        self,
        make_model: Callable[[], torch.nn.Module],
        a: Task | None = None,
        b: Task | None = None,
        *,
        tasks: Mapping[str, Task] | None = None,
    ) -> None:
        if tasks is not None and (a is not None or b is not None):
            # dataclasses.replace(problem, a=...) passes the tasks too: a= / b= then replace those tasks.
            given = {name: task for name, task in (("a", a), ("b", b)) if task is not None}
            if not set(given) <= set(tasks):
                raise ValueError(f"Problem: no task {sorted(set(given) - set(tasks))} among {list(tasks)}")
            tasks = {**tasks, **given}
        if tasks is None:
            if a is None or b is None:
                raise ValueError("Problem: give both a= and b=, or tasks={name: Task, ...}")
            tasks = {"a": a, "b": b}
        check_task_names(tuple(tasks))
        for name, task in tasks.items():
            if not isinstance(task, Task):
                raise ValueError(f"Problem: task {name!r} is a {type(task).__name__}, not a Task")
        object.__setattr__(self, "make_model", make_model)
        object.__setattr__(self, "tasks", MappingProxyType(dict(tasks)))

    @property
    def a(self) -> Task:
        """Task ``a`` (a two-task problem's first task)."""
        return self.tasks["a"]

    @property
    def b(self) -> Task:
        """Task ``b``."""
        return self.tasks["b"]

    @property
    def names(self) -> tuple[str, ...]:
        """The task names, in order."""
        return tuple(self.tasks)

    def in_order(self, names: Sequence[str]) -> dict[str, Task]:
        """The tasks in the order of ``names`` (a config's ``tasks``: the order of its weights).

        Raises:
            ValueError: ``names`` are not this problem's task names (the message says what to set).
        """
        if set(names) != set(self.tasks) or len(names) != len(self.tasks):
            raise ValueError(
                f"the problem's tasks are {list(self.tasks)} but objective.tasks is {list(names)}: set "
                f"objective.tasks: [{', '.join(self.tasks)}] (or give the weights by task name)"
            )
        return {name: self.tasks[name] for name in names}

    def _with(self, tasks: Mapping[str, Task]) -> Problem:
        return Problem(self.make_model, tasks=tasks)

    def to(self, device: torch.device | str) -> Problem:
        return self._with({name: task.to(device) for name, task in self.tasks.items()})

    @property
    def has_test(self) -> bool:
        """Every task has a held-out test split."""
        return all(task.test is not None for task in self.tasks.values())

    def on_test(self) -> Problem:
        """The same problem with each task's test split in place of its validation split (to score a
        trained model on the test data with the loop's own validation code)."""
        return self._with({name: replace(task, val=task.test) for name, task in self.tasks.items()})

    def metric_names(self) -> dict[str, tuple[str, ...]]:
        """Extra metric names per task, e.g. ``{"a": ("acc",), "b": ("acc",)}``."""
        return {name: tuple(task.metrics) for name, task in self.tasks.items()}

    @staticmethod
    def declared_metric_names(
        names: tuple[str, ...] | Mapping[str, tuple[str, ...]], tasks: Sequence[str] = ("a", "b")
    ) -> dict[str, tuple[str, ...]]:
        """:meth:`metric_names` of a problem declared to report ``names`` (a built-in's): every task has them,
        or each task its own (a mapping by task name)."""
        if isinstance(names, Mapping):
            return {task: tuple(names.get(task, ())) for task in tasks}
        return dict.fromkeys(tasks, names)


@dataclass(frozen=True)
class CoupledProblem:
    """Two models, B consumes A's output: ``z = A(x)``, ``y_hat = B(z)`` (the alternating loop).

    Attributes:
        make_model_a: Factory of model A (x → z).
        make_model_b: Factory of model B (z → y_hat).
        train: ``(inputs, targets, a_targets)``: x, the final target y, and A's own target t_a — tensors,
            or a Dataset of such samples (see :data:`Split`).
        val: The same for validation.
        loss_a: A's own loss ``loss_a(z, t_a)`` (batch mean).
        loss_b: The final loss ``loss_b(y_hat, y)`` (batch mean).
        metrics: Extra metrics on the final output, ``metric(y_hat, y)`` (batch mean), logged as
            ``val_b_<name>``.
        collate_fn: The DataLoader's ``collate_fn`` for Dataset splits (default: torch's).
        steps_per_epoch: Batches per epoch of the training split (required for an ``IterableDataset``;
            see :class:`Task`).
        consistency: The third loss (used when ``weights`` has three entries; ``w_consistency`` weighs
            it): ``consistency(z, y_hat, y, t_a, model_b, *, x, model_a)`` → 0-d tensor, a batch mean
            (see :data:`ConsistencyFn`): ``x`` (the batch's inputs) and ``model_a`` are passed by keyword
            only when its signature names them, so a five-argument callable keeps working. It runs inside
            the loop's forward pass (autocast, B frozen in A's steps, A frozen in B's steps and in
            ``b_on_detached``, where A learns from its own loss only), so gradients reach whichever model
            the mode trains. In a vectorized group (``parallel_trials``) the models are functions of the
            member's parameters: call them, do not read their attributes. ``None``: the default term
            (:meth:`consistency_term`), B's answer on A's output against its answer on A's target.
        metrics_a: Extra metrics on A's output, ``metric(z, t_a)`` (batch mean), logged as ``val_a_<name>``.
        test: The held-out test split, the same way as ``val``, or ``None``; read only by ``sweep.evaluate``.
    """

    make_model_a: Callable[[], torch.nn.Module]
    make_model_b: Callable[[], torch.nn.Module]
    train: Split
    val: Split
    loss_a: LossFn
    loss_b: LossFn
    metrics: Mapping[str, LossFn] = field(default_factory=dict)
    collate_fn: Callable[[list[Any]], Any] | None = None
    steps_per_epoch: int | None = None
    consistency: ConsistencyFn | None = None
    metrics_a: Mapping[str, LossFn] = field(default_factory=dict)
    test: Split | None = None
    # Which of x, model_a the consistency function takes by keyword: read from its signature once, here.
    _consistency_keywords: tuple[str, ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for key, names in (("metrics_a", self.metrics_a), ("metrics", self.metrics)):
            if "loss" in names:
                which = "a" if key == "metrics_a" else "b"
                raise ValueError(f"CoupledProblem.{key}: the name 'loss' would overwrite val_{which}_loss; rename it")
        if self.consistency is not None:
            object.__setattr__(self, "_consistency_keywords", consistency_keywords(self.consistency))

    def consistency_term(
        self,
        z: torch.Tensor,
        y_hat: torch.Tensor,
        y: torch.Tensor,
        t_a: torch.Tensor,
        model_b: Callable[..., Any],
        *,
        x: Any,
        model_a: Callable[..., Any],
    ) -> Any:
        """The consistency term as every loop computes it: :attr:`consistency` with its five arguments
        and, by keyword, those of ``x``/``model_a`` its signature takes; or the default
        ``mean((y_hat − model_b(t_a))²)`` when it is ``None``. Not checked here (the callers check it
        is a 0-d tensor)."""
        if self.consistency is None:
            return torch.mean((y_hat - model_b(t_a)) ** 2)
        given = {"x": x, "model_a": model_a}
        return self.consistency(z, y_hat, y, t_a, model_b, **{k: given[k] for k in self._consistency_keywords})

    def to(self, device: torch.device | str) -> CoupledProblem:
        """The same problem with its tensor splits on ``device`` (Datasets stay: their batches move per step)."""
        return replace(self, train=_move_split(self.train, device), val=_move_split(self.val, device))

    @property
    def has_test(self) -> bool:
        """The problem has a held-out test split."""
        return self.test is not None

    def on_test(self) -> CoupledProblem:
        """The same problem with its test split in place of its validation split."""
        return replace(self, val=self.test)

    def metric_names(self) -> dict[str, tuple[str, ...]]:
        """Extra metric names per model output: A's (``metrics_a``) and B's (``metrics``)."""
        return {"a": tuple(self.metrics_a), "b": tuple(self.metrics)}

    @staticmethod
    def declared_metric_names(
        names: tuple[str, ...] | Mapping[str, tuple[str, ...]], tasks: Sequence[str] = ("a", "b")
    ) -> dict[str, tuple[str, ...]]:
        """:meth:`metric_names` of a problem declared to report ``names`` (a built-in's): B's output has them
        (``tasks`` is for the signature :class:`Problem` shares: a coupled problem's outputs are A's and B's)."""
        return {"a": (), "b": tuple(names.get("b", ())) if isinstance(names, Mapping) else names}


# Every kind of problem a loop trains (a user function must return one of them).
PROBLEM_KINDS: tuple[type, ...] = (Problem, CoupledProblem)


@dataclass(frozen=True)
class Builtin:
    """A registered built-in: its options schema, its builder, the metrics it reports, the loop it was
    written for and the problem type it builds (any loop that trains that type can use it)."""

    options: type[BaseModel]
    build: Callable[..., Problem | CoupledProblem]
    metrics: tuple[str, ...] | Mapping[str, tuple[str, ...]]  # every task's, or each task's by name
    summary: str
    loop: str = "dual_loss"
    kind: type = Problem
    model_options: tuple[str, ...] = ()  # options that shape only the model: the ones a search may vary
    tasks: tuple[str, ...] = ("a", "b")  # a dual-loss problem's task names, in order (``objective.tasks``)
