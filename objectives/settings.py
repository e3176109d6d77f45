"""The sections a loop's config is made of (optimizer, problem reference, data, compile, early stopping):
plain frozen settings with no cross-field rules of the loops (those live in :mod:`objectives.config`)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt

from objectives.frozen import Frozen
from objectives.lr_schedules import LRScheduleConfig, constant


class OptimizerConfig(Frozen):
    """One optimizer and its LR schedule (one of :mod:`objectives.lr_schedules`)."""

    type: Literal["adam", "adamw", "sgd"] = Field(
        "adam", description="the optimizer: `torch.optim.Adam`, `AdamW` or `SGD`"
    )
    lr: PositiveFloat = Field(1e-3, description="learning rate (the peak for `onecycle`; each schedule starts from it)")
    weight_decay: NonNegativeFloat = Field(0.0, description="weight decay")
    momentum: NonNegativeFloat = Field(0.9, description="momentum (`sgd` only)")
    betas: tuple[float, float] = Field((0.9, 0.999), description="Adam's betas (`adam`/`adamw` only)")
    schedule: LRScheduleConfig = Field(
        constant.Config(),
        description="LR schedule (see [LR schedules](docs/explanation/parametrizations.md#lr-schedules))",
    )


class ProblemRef(Frozen):
    """Which problem to train: a built-in name or a ``module:function`` path (runs that code)."""

    name: str = Field(description="a built-in's name or `package.module:function`")
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="keyword arguments of the problem's builder (a built-in checks them against its `Options`)",
    )


class DataConfig(Frozen):
    """``objective.data``: how Dataset splits are read (:mod:`objectives.data`)."""

    num_workers: NonNegativeInt = Field(0, description="DataLoader worker processes (0: load in the training process)")
    pin_memory: bool | None = Field(
        None, description="page-locked host batches for faster copies to the GPU; unset: on when the device is CUDA"
    )
    persistent_workers: bool = Field(
        False, description="keep the workers alive between epochs (with `num_workers` > 0)"
    )
    prefetch_factor: PositiveInt | None = Field(
        None, description="batches each worker loads ahead (with `num_workers` > 0; unset: torch's default 2)"
    )
    drop_last: bool = Field(False, description="drop a last, smaller training batch of each pass")
    steps_per_epoch: PositiveInt | None = Field(
        None,
        description="batches per epoch of each training split, tensors and Datasets alike, in a trial alone and in "
        "a vectorized group (`objectives.data.epoch_steps`): required for a stream (`IterableDataset`) unless its "
        "problem gives it; otherwise it replaces a full pass (e.g. a fixed number of steps over a very large "
        "dataset; more steps than a pass repeat it)",
    )


class CompileConfig(Frozen):
    """``objective.compile`` as a mapping: the options of ``torch.compile`` (``true`` = all defaults)."""

    mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] | None = Field(
        None, description="`torch.compile`'s `mode`"
    )
    backend: str = Field("inductor", description="`torch.compile`'s `backend`")
    fullgraph: bool = Field(False, description="`torch.compile`'s `fullgraph`")
    dynamic: bool | None = Field(None, description="`torch.compile`'s `dynamic`")


class EarlyStopping(Frozen):
    """``objective.early_stopping``: stop a trial whose target stalls (read by the runner, which knows the target)."""

    patience: PositiveInt = Field(description="epochs without an improvement after which the trial stops")
    min_delta: NonNegativeFloat = Field(0.0, description="the least change of the target that counts as an improvement")


class ModelConfig(Frozen):
    """Per-model training settings of the alternating loop."""

    optimizer: OptimizerConfig = Field(
        OptimizerConfig(), description="the model's optimizer (its own LR, weight decay, momentum, schedule)"
    )
    grad_clip: PositiveFloat | None = Field(
        None, description="clip the model's gradient norm to this value before each of its steps"
    )
