"""Resolved (fixed) training configs, shared by every loop.

The same models describe the ``objective:`` section of a study file. In a study file some values
may still be searched (``search:``) and ``seed``/``data_seed``/``device`` may be left to the runner;
the runner fills them in, so a loop always receives a config in which every value is fixed.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    field_validator,
    model_validator,
)

from objectives import weight_schedules, weighting
from objectives.frozen import Frozen
from objectives.lr_schedules import LRScheduleConfig, constant
from objectives.weight_schedules import WeightScheduleConfig
from objectives.weighting import WeightingConfig

MAX_EPOCHS = 100_000  # objective.epochs; real training runs use far fewer (see LoopCommon._epochs)


class OptimizerConfig(Frozen):
    """One optimizer and its LR schedule. ``momentum`` applies to ``sgd`` only; ``betas`` to ``adam``/``adamw``.

    ``schedule`` is one of :mod:`objectives.lr_schedules` (``{type: cosine}``...); ``constant`` by default.
    """

    type: Literal["adam", "adamw", "sgd"] = "adam"
    lr: PositiveFloat = 1e-3
    weight_decay: NonNegativeFloat = 0.0
    momentum: NonNegativeFloat = 0.9
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: LRScheduleConfig = constant.Config()


class ProblemRef(Frozen):
    """Which problem to train: a built-in name or a ``module:function`` path (runs that code)."""

    name: str
    options: dict[str, Any] = Field(default_factory=dict)


class DataConfig(Frozen):
    """``objective.data`` — how Dataset splits are read (DataLoader options; tensor splits ignore all but
    ``steps_per_epoch``).

    Attributes:
        num_workers: DataLoader worker processes (0: load in the training process).
        pin_memory: Page-locked host batches for faster copies to the GPU; ``None`` = on when the device
            is CUDA.
        persistent_workers: Keep the workers alive between epochs (with ``num_workers`` > 0).
        prefetch_factor: Batches each worker loads ahead (with ``num_workers`` > 0; torch's default 2).
        drop_last: Drop a last, smaller training batch of each pass.
        steps_per_epoch: Batches per epoch of each training split, tensors and Datasets alike, in a
            trial alone and in a vectorized group (:func:`objectives.data.epoch_steps`): required for a
            stream (``IterableDataset``) unless its problem gives it; otherwise it replaces a full pass
            (e.g. a fixed number of steps over a very large dataset; more steps than a pass repeat it).
    """

    num_workers: NonNegativeInt = 0
    pin_memory: bool | None = None
    persistent_workers: bool = False
    prefetch_factor: PositiveInt | None = None
    drop_last: bool = False
    steps_per_epoch: PositiveInt | None = None


class CompileConfig(Frozen):
    """``objective.compile`` as a mapping: the options of ``torch.compile`` (``true`` = all defaults)."""

    mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] | None = None
    backend: str = "inductor"
    fullgraph: bool = False
    dynamic: bool | None = None


class EarlyStopping(Frozen):
    """``objective.early_stopping``: stop a trial whose target has not improved by more than ``min_delta``
    for ``patience`` epochs; it completes with its best value (read by the runner, which knows the target)."""

    patience: PositiveInt
    min_delta: NonNegativeFloat = 0.0


class LoopCommon(Frozen):
    """Fields every loop has: the problem, the data/epoch sizes, how losses are weighted, numerics, the
    device and the seeds.

    Attributes:
        weighting: The weighting strategy (:mod:`objectives.weighting`): ``static`` (the weights as
            given) or a dynamic method (``uncertainty``, ``dwa``, ``rlw``, ``gradnorm``, ``pcgrad``,
            ``famo``).
        weight_schedule: How one loss's weight moves over training (:mod:`objectives.weight_schedules`);
            ``constant`` by default.
        data: How Dataset splits are loaded (:class:`DataConfig`).
        precision: ``fp32``; ``bf16`` (``torch.autocast``, CUDA or CPU); ``fp16`` (autocast and a
            ``GradScaler``, CUDA only, with strategies whose gradient is a plain weighted sum).
        compile: ``torch.compile`` the model(s): ``false``, ``true`` or its options; a compile error
            fails the trial with its reason.
        checkpoint: Which epoch's weights a trial keeps (an MLflow artifact ``weights.pt``): ``best`` (of
            the study's target), ``last``, ``none``; ``None`` = the epoch whose value the trial reports
            (``last``, or ``best`` with ``study.score: best`` or early stopping), so the weights always
            reproduce the trial's value.
        early_stopping: Stop a trial whose target stalls (:class:`EarlyStopping`).
    """

    LOSSES: ClassVar[tuple[str, ...]] = ()  # the loop's losses, in the order of ``weights``

    problem: ProblemRef
    epochs: PositiveInt = 10
    batch_size: PositiveInt = 64
    weighting: WeightingConfig = weighting.static.Config()
    weight_schedule: WeightScheduleConfig = weight_schedules.constant.Config()
    eval_batch_size: PositiveInt = 4096
    data: DataConfig = DataConfig()
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    compile: bool | CompileConfig = False
    checkpoint: Literal["none", "best", "last"] | None = None
    early_stopping: EarlyStopping | None = None
    device: str = "auto"
    seed: int | None = None
    data_seed: int | None = None

    @property
    def loss_terms(self) -> tuple[str, ...]:
        """The loss terms this config trains, in the order of ``weights``: the first ``len(weights)`` of
        the loop's ``LOSSES``. The one place a loss is on or off (the alternating loop's third weight
        turns its ``consistency`` term on): every loop, the vectorized loops and the preflight check read
        it (``"consistency" in cfg.loss_terms``), never a count of weights."""
        return self.LOSSES[: len(self.weights)]  # type: ignore[attr-defined]

    @model_validator(mode="after")
    def _fp16_needs_a_plain_weighted_sum(self) -> LoopCommon:
        if self.precision != "fp16":
            return self
        if self.device == "cpu" or self.device == "mps":
            raise ValueError(f"precision fp16 (with a GradScaler) needs a CUDA device, not {self.device}: use bf16")
        allowed = weighting.names_with(weights_before_step=True, own_backward=False)
        if self.weighting.type not in allowed:
            raise ValueError(
                f"precision fp16 scales a plain weighted sum of the losses (GradScaler); weighting "
                f"{self.weighting.type} computes its own gradients: use bf16, or weighting {', '.join(allowed)}"
            )
        return self

    @model_validator(mode="after")
    def _schedule_target_is_a_loss(self) -> LoopCommon:
        names = self.loss_terms
        if self.weight_schedule.target not in names:
            raise ValueError(
                f"weight_schedule.target {self.weight_schedule.target!r} is not one of this loop's losses {list(names)}"
            )
        return self

    @field_validator("epochs")
    @classmethod
    def _epochs(cls, v: int) -> int:
        if v > MAX_EPOCHS:
            raise ValueError(
                f"at most {MAX_EPOCHS:,} epochs (got {v:,}): the loops hold every optimizer step's loss weights "
                "in one table, which must fit in memory"
            )
        return v

    @field_validator("problem", mode="before")
    @classmethod
    def _problem_shorthand(cls, v: Any) -> Any:
        return {"name": v} if isinstance(v, str) else v

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if v != "auto" and not (v == "cpu" or v == "mps" or v == "cuda" or v.startswith("cuda:")):
            raise ValueError(f"unknown device {v!r}: use auto, cpu, cuda, cuda:N or mps")
        return v

    @field_validator("weights", check_fields=False)
    @classmethod
    def _not_all_zero(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if sum(v) <= 0:
            raise ValueError("at least one loss weight must be positive")
        return v


class DualLossConfig(LoopCommon):
    """One model, two datasets (or two heads), two losses combined with weights.

    Attributes:
        loop: Discriminator, always ``dual_loss``.
        problem: The problem to train.
        epochs: Passes over the epoch plan (see ``mixing``).
        batch_size: Batch size of task a (and of task b unless ``batch_size_b`` is set).
        batch_size_b: Batch size of task b; ``None`` means ``batch_size``.
        mixing: How batches of the two datasets are paired: ``zip`` stops at the shorter set,
            ``cycle`` re-shuffles and repeats the shorter set until the longer is seen once,
            ``accumulate`` pairs like ``cycle`` but runs one backward pass per task (gradients summed,
            one optimizer step), so only one task's graph is alive at a time.
        optimizer: Optimizer of the model.
        grad_accum_steps: One optimizer step every this many batches, each batch's loss scaled so the
            update equals that of one batch this many times larger (the last group of an epoch may be
            shorter; its batches are scaled by its own size).
        grad_clip: Clip the model's gradient norm to this value before each optimizer step.
        weights: Loss weights (w_a, w_b) applied to the two training losses.
        eval_batch_size: Chunk size for validation (no gradients).
        device: ``auto`` (cuda if available), ``cpu``, ``cuda``, ``cuda:1``...
        seed: Seed of model init and batch order; ``None`` in a study file = derived per trial.
        data_seed: Seed of the problem's data; ``None`` in a study file = derived from the study seed,
            the same for every trial so trials are compared on the same data.
    """

    LOSSES: ClassVar[tuple[str, ...]] = ("a", "b")

    loop: Literal["dual_loss"] = "dual_loss"
    batch_size_b: PositiveInt | None = None
    mixing: Literal["zip", "cycle", "accumulate"] = "cycle"
    optimizer: OptimizerConfig = OptimizerConfig()
    grad_accum_steps: PositiveInt = 1
    grad_clip: PositiveFloat | None = None
    weights: tuple[NonNegativeFloat, NonNegativeFloat] = (0.5, 0.5)

    @model_validator(mode="after")
    def _accumulation_needs_a_plain_weighted_sum(self) -> DualLossConfig:
        allowed = weighting.names_with(own_backward=False, losses_after_step=False)
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


class ModelConfig(Frozen):
    """Per-model training settings of the alternating loop.

    Attributes:
        optimizer: The model's optimizer (its own LR, weight decay, momentum).
        grad_clip: Clip the model's gradient norm to this value before each of its steps.
    """

    optimizer: OptimizerConfig = OptimizerConfig()
    grad_clip: PositiveFloat | None = None


class AlternatingConfig(LoopCommon):
    """Two models, B consumes A's output (``y = B(A(x))``), each with its own optimizer settings.

    Attributes:
        loop: Discriminator, always ``alternating``.
        problem: A coupled problem (model A, model B, targets for both).
        mode: ``alternate``: per cycle ``steps_a`` optimizer steps on A (B frozen) then ``steps_b`` on
            B (A's output computed without gradient), each step on a fresh batch and a fresh forward
            pass. ``b_on_detached``: every step updates A on its own loss only and B on A's detached
            output. ``joint``: one optimizer over both models with per-model parameter groups.
        epoch: What one epoch is. ``pass``: one pass over the training data, one batch per step, so in
            ``alternate`` mode each model gets only its share of the steps (about half of ``joint``'s
            with ``steps_a = steps_b``). ``model_steps``: in ``alternate`` mode, as many batches as it
            takes for the model with fewer steps per cycle to get one pass's worth of optimizer steps,
            so modes compare (and prune) at equal optimizer steps per model; the same as ``pass`` in the
            other modes, where both models step every batch.
        steps_a: A's optimizer steps per cycle (``alternate`` only).
        steps_b: B's optimizer steps per cycle (``alternate`` only).
        epochs: Passes over the training set (one batch per optimizer step).
        batch_size: Batch size.
        model_a: A's optimizer and clipping.
        model_b: B's optimizer and clipping.
        weights: ``[w_a, w_b]`` for A's own loss and B's loss, or ``[w_a, w_b, w_consistency]``: a third
            weight adds the consistency term (:meth:`~objectives.problems.CoupledProblem.consistency_term`:
            the problem's own, or by default B's answer on A's output against its answer on A's target).
        eval_batch_size: Chunk size for validation.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``.
        seed: Model-init and batch-order seed (``None`` in a study file = derived per trial).
        data_seed: The problem's data seed (``None`` = derived from the study seed).
    """

    LOSSES: ClassVar[tuple[str, ...]] = ("a", "b", "consistency")

    loop: Literal["alternating"] = "alternating"
    mode: Literal["alternate", "b_on_detached", "joint"] = "alternate"
    epoch: Literal["pass", "model_steps"] = "pass"
    steps_a: PositiveInt = 1
    steps_b: PositiveInt = 1
    model_a: ModelConfig = ModelConfig()
    model_b: ModelConfig = ModelConfig()
    weights: Annotated[tuple[NonNegativeFloat, ...], Field(min_length=2, max_length=3)] = (0.5, 0.5)

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
