"""Types a problem is made of (kept apart so built-in problem files can import them)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

import torch
from pydantic import BaseModel

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Task:
    """One task of a dual-loss problem.

    Attributes:
        train: ``(inputs, targets)`` training tensors, first dimension = samples.
        val: ``(inputs, targets)`` validation tensors.
        loss: Mean loss over a batch ``loss(prediction, target)``.
        head: When the model returns a tuple, the index of this task's output; ``None`` = the output.
        metrics: Extra validation metrics by name, each a batch mean ``metric(prediction, target)``.
            Logged as ``val_<task>_<name>`` (e.g. ``val_b_acc``).
    """

    train: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor]
    loss: LossFn
    head: int | None = None
    metrics: Mapping[str, LossFn] = field(default_factory=dict)

    def to(self, device: torch.device | str) -> Task:
        """The same task with its tensors on ``device`` (no copy when already there)."""
        return replace(
            self,
            train=tuple(t.to(device) for t in self.train),  # type: ignore[arg-type]
            val=tuple(t.to(device) for t in self.val),  # type: ignore[arg-type]
        )


@dataclass(frozen=True)
class Problem:
    """One model, two tasks (``a`` and ``b``)."""

    make_model: Callable[[], torch.nn.Module]
    a: Task
    b: Task

    def to(self, device: torch.device | str) -> Problem:
        return replace(self, a=self.a.to(device), b=self.b.to(device))

    def metric_names(self) -> dict[str, tuple[str, ...]]:
        """Extra metric names per task, e.g. ``{"a": ("acc",), "b": ("acc",)}``."""
        return {"a": tuple(self.a.metrics), "b": tuple(self.b.metrics)}


@dataclass(frozen=True)
class CoupledProblem:
    """Two models, B consumes A's output: ``z = A(x)``, ``y_hat = B(z)`` (the alternating loop).

    Attributes:
        make_model_a: Factory of model A (x → z).
        make_model_b: Factory of model B (z → y_hat).
        train: ``(inputs, targets, a_targets)``: x, the final target y, and A's own target t_a.
        val: The same for validation.
        loss_a: A's own loss ``loss_a(z, t_a)`` (batch mean).
        loss_b: The final loss ``loss_b(y_hat, y)`` (batch mean).
        metrics: Extra metrics on the final output, logged as ``val_b_<name>``.
    """

    make_model_a: Callable[[], torch.nn.Module]
    make_model_b: Callable[[], torch.nn.Module]
    train: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    loss_a: LossFn
    loss_b: LossFn
    metrics: Mapping[str, LossFn] = field(default_factory=dict)

    def to(self, device: torch.device | str) -> CoupledProblem:
        """The same problem with its tensors on ``device`` (no copy when already there)."""
        return replace(
            self,
            train=tuple(t.to(device) for t in self.train),  # type: ignore[arg-type]
            val=tuple(t.to(device) for t in self.val),  # type: ignore[arg-type]
        )

    def metric_names(self) -> dict[str, tuple[str, ...]]:
        """Extra metric names per loss: only B's output has them."""
        return {"a": (), "b": tuple(self.metrics)}


# Which problem type each loop trains.
PROBLEM_TYPES: dict[str, type] = {"dual_loss": Problem, "alternating": CoupledProblem}


@dataclass(frozen=True)
class Builtin:
    """A registered built-in: its options schema, its builder, its loop and the metrics it reports."""

    options: type[BaseModel]
    build: Callable[..., Problem | CoupledProblem]
    metrics: tuple[str, ...]
    summary: str
    loop: str = "dual_loss"
    model_options: tuple[str, ...] = ()  # options that shape only the model: the ones a search may vary
