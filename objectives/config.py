"""Resolved (fixed) training configs, shared by every loop, and the ``objective:`` section of a study file,
where some values may still be searched and ``seed``/``data_seed``/``device`` left to the runner, which fills
them in: a loop always receives a config in which every value is fixed."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    Field,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)

from objectives import weighting
from objectives.loop_config import MAX_EPOCHS, LoopCommon
from objectives.names import check_task_names
from objectives.settings import CompileConfig, DataConfig, EarlyStopping, ModelConfig, OptimizerConfig, ProblemRef

# The sections (objectives.settings) and the common part (objectives.loop_config), re-exported: importers
# read every config type from here.
__all__ = ["MAX_EPOCHS", "AlternatingConfig", "CompileConfig", "DataConfig", "DualLossConfig", "EarlyStopping"]
__all__ += ["LoopCommon", "ModelConfig", "OptimizerConfig", "ProblemRef"]


class DualLossConfig(LoopCommon):
    """One model, two or more datasets (or heads), their losses combined with weights."""

    LOSSES: ClassVar[tuple[str, ...]] = ("a", "b")  # the default tasks (``tasks`` names a problem's own)

    loop: Literal["dual_loss"] = Field("dual_loss", description="which training loop (`dual_loss`, or `alternating`)")
    tasks: tuple[str, ...] = Field(
        ("a", "b"),
        min_length=2,
        description="the problem's task names, in the order of `weights` (a built-in's are filled in; a user "
        "problem with tasks other than `a`, `b` names them here, or gives `weights` as a mapping by task name); "
        "metrics follow them (`val_<task>_loss`)",
    )
    batch_size_b: PositiveInt | None = Field(None, description="batch size of task b; default: `batch_size`")
    batch_sizes: dict[str, PositiveInt] | None = Field(
        None, description="batch size per task by name (e.g. `{seg: 8, depth: 16}`); a task not named: `batch_size`"
    )
    mixing: Literal["zip", "cycle", "accumulate"] = Field(
        "cycle",
        description="how batches of the tasks' datasets are paired: `zip` stops at the shortest set, `cycle` "
        "re-shuffles and repeats the shorter sets until the longest is seen once, `accumulate` pairs like `cycle` "
        "but runs one backward pass per task (gradients summed, one optimizer step), so only one task's graph is "
        "alive at a time (see [mixing strategies](docs/explanation/loops.md#mixing-strategies))",
    )
    optimizer: OptimizerConfig = Field(OptimizerConfig(), description="the model's optimizer and its LR schedule")
    grad_accum_steps: PositiveInt = Field(
        1,
        description="one optimizer step every k batches, each batch's loss scaled by 1/k so the update equals one "
        "k× larger batch (an epoch's last, shorter group is scaled by its own size); the LR schedule counts "
        "optimizer steps. Needs a strategy whose loss is linear in the losses (`static`, `uncertainty`, `dwa`, `rlw`, "
        "`imtl_l`)",
    )
    grad_clip: PositiveFloat | None = Field(
        None, description="clip the model's gradient norm to this value before each optimizer step"
    )
    weights: Annotated[
        tuple[NonNegativeFloat, ...],
        Field(
            min_length=2,
            description="loss weights when they are not searched, one per task in `tasks` order (`[w_a, w_b]`), or "
            "a mapping by task name (`{seg: 1.0, depth: 0.5, normal: 0.5}`); default: equal weights",
        ),
    ] = (0.5, 0.5)

    @model_validator(mode="before")
    @classmethod
    def _weights_by_task(cls, data: Any) -> Any:
        """``weights`` as a mapping by task name → the list in ``tasks`` order (``tasks`` from its keys when
        not given); no ``weights`` with other than two tasks → equal weights."""
        if not isinstance(data, dict):
            return data
        weights, tasks = data.get("weights"), data.get("tasks")
        if isinstance(weights, dict):
            names = list(tasks) if tasks is not None else list(weights)
            if set(weights) != set(names):
                missing, extra = sorted(set(names) - set(weights)), sorted(set(weights) - set(names))
                raise ValueError(f"weights by task name must name every task {names}: missing {missing}, extra {extra}")
            data = {**data, "tasks": names, "weights": [weights[name] for name in names]}
        elif weights is None and tasks is not None and len(tasks) != 2:
            data = {**data, "weights": [1.0 / len(tasks)] * len(tasks)}
        return data

    @model_serializer(mode="wrap")
    def _two_tasks_as_before(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """A two-task config (tasks a, b; no per-task batch sizes) dumps as it did before N tasks: its
        records (MLflow params, config.yaml, exports) stay the same, and it loads back the same."""
        data = handler(self)
        if self.tasks == self.LOSSES:
            data.pop("tasks", None)
        if self.batch_sizes is None:
            data.pop("batch_sizes", None)
        return data

    @property
    def loss_terms(self) -> tuple[str, ...]:
        """The tasks, in the order of ``weights`` (see :attr:`LoopCommon.loss_terms`)."""
        return self.tasks

    @property
    def loop_losses(self) -> tuple[str, ...]:
        """The tasks (see :attr:`LoopCommon.loop_losses`)."""
        return self.tasks

    def batch_size_of(self, task: str) -> int:
        """The training batch size of ``task`` (``batch_sizes``, then ``batch_size_b`` for b, then ``batch_size``)."""
        if self.batch_sizes is not None and task in self.batch_sizes:
            return self.batch_sizes[task]
        if task == "b" and self.batch_size_b is not None:
            return self.batch_size_b
        return self.batch_size

    @model_validator(mode="after")
    def _one_weight_per_task(self) -> DualLossConfig:
        check_task_names(self.tasks)
        if len(self.weights) != len(self.tasks):
            raise ValueError(f"{len(self.weights)} weights for {len(self.tasks)} tasks {list(self.tasks)}")
        unknown = sorted(set(self.batch_sizes or {}) - set(self.tasks))
        if unknown:
            raise ValueError(f"batch_sizes names {unknown}, not among the tasks {list(self.tasks)}")
        if self.batch_size_b is not None and ("b" not in self.tasks or "b" in (self.batch_sizes or {})):
            raise ValueError("batch_size_b is task b's batch size: use batch_sizes (by task name) instead")
        return self

    @model_validator(mode="after")
    def _accumulation_needs_a_plain_weighted_sum(self) -> DualLossConfig:
        allowed = weighting.names_with(own_backward=False, losses_after_step=False, weights_from_losses=False)
        if self.grad_accum_steps > 1 and self.weighting.type not in allowed:
            raise ValueError(
                f"grad_accum_steps adds the gradients of several batches, which equals the large-batch "
                f"gradient only for a weighted sum of the losses; weighting {self.weighting.type} is not one: "
                f"use weighting {', '.join(allowed)}"
            )
        return self

    @model_validator(mode="after")
    def _accumulate_needs_fixed_weights(self) -> DualLossConfig:
        allowed = weighting.names_with(weights_before_step=True)
        if self.mixing == "accumulate" and self.weighting.type not in allowed:
            raise ValueError(
                f"mixing accumulate runs one backward per task, so it needs weights known before the step: "
                f"weighting {', '.join(allowed[:-1])} or {allowed[-1]}, not {self.weighting.type}"
            )
        return self


class AlternatingConfig(LoopCommon):
    """Two models, B consumes A's output (``y = B(A(x))``), each with its own optimizer settings."""

    LOSSES: ClassVar[tuple[str, ...]] = ("a", "b", "consistency")

    loop: Literal["alternating"] = Field(
        "alternating", description="which training loop (`dual_loss`, or `alternating`)"
    )
    mode: Literal["alternate", "b_on_detached", "joint"] = Field(
        "alternate",
        description="`alternate`: per cycle `steps_a` optimizer steps on A (B frozen) then `steps_b` on B (A's "
        "output computed without gradient), each on a fresh batch; `b_on_detached`: every step updates A on its own "
        "loss only and B on A's detached output; `joint`: one optimizer over both models, a parameter group each "
        "(see [modes](docs/explanation/loops.md#modes--when-to-pick-each))",
    )
    epoch: Literal["pass", "model_steps"] = Field(
        "pass",
        description="what an epoch is. `pass`: one pass over the training data, one batch per step — in "
        "`alternate` mode each model then gets only its share of the steps (with `steps_a = steps_b`, half of what "
        "`joint` and `b_on_detached` give each model per epoch). `model_steps`: in `alternate` mode, as many batches "
        "as it takes for the model with fewer steps per cycle to get a pass's worth of optimizer steps, so modes "
        "are compared — and pruned — at equal optimizer steps per model (`opt_steps_a`/`opt_steps_b` are logged "
        "every epoch); the same as `pass` in the other modes",
    )
    steps_a: PositiveInt = Field(
        1, description="optimizer steps of A per cycle (`alternate` only; like a GAN's n_critic)"
    )
    steps_b: PositiveInt = Field(1, description="optimizer steps of B per cycle (`alternate` only)")
    model_a: ModelConfig = Field(ModelConfig(), description="model A's `optimizer` and `grad_clip` (max gradient norm)")
    model_b: ModelConfig = Field(ModelConfig(), description="model B's `optimizer` and `grad_clip` (max gradient norm)")
    weights: Annotated[
        tuple[NonNegativeFloat, ...],
        Field(
            min_length=2,
            max_length=3,
            description="`[w_a, w_b]` for A's own loss and B's, or `[w_a, w_b, w_consistency]`: a third weight "
            "adds the consistency term (the problem's `consistency_term`, by default B's answer on A's output "
            "against its answer on A's target)",
        ),
    ] = (0.5, 0.5)

    @model_validator(mode="after")
    def _joint_needs_one_optimizer_type(self) -> AlternatingConfig:
        if self.mode == "joint" and self.model_a.optimizer.schedule != self.model_b.optimizer.schedule:
            raise ValueError(
                "mode joint drives both parameter groups with one LR schedule: model_b.optimizer.schedule "
                "must equal model_a.optimizer.schedule"
            )
        if self.mode == "joint" and self.model_a.optimizer.type != self.model_b.optimizer.type:
            raise ValueError(
                "mode joint uses one optimizer with a parameter group per model: model_a.optimizer.type "
                f"({self.model_a.optimizer.type}) and model_b.optimizer.type ({self.model_b.optimizer.type}) "
                "must match"
            )
        return self
