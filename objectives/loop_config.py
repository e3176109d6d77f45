"""What every loop's config has (:class:`LoopCommon`): the problem, data and epoch sizes, how the losses
are weighted, numerics, the device and the seeds. The loops' own configs are in :mod:`objectives.config`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import (
    Field,
    PositiveInt,
    field_validator,
    model_validator,
)

from objectives import weight_schedules, weighting
from objectives.frozen import Frozen
from objectives.settings import CompileConfig, DataConfig, EarlyStopping, ProblemRef
from objectives.weight_schedules import WeightScheduleConfig
from objectives.weighting import WeightingConfig

MAX_EPOCHS = 100_000  # objective.epochs; real training runs use far fewer (see LoopCommon._epochs)


class LoopCommon(Frozen):
    """Fields every loop has: the problem, the data/epoch sizes, how losses are weighted, numerics, the
    device and the seeds."""

    LOSSES: ClassVar[tuple[str, ...]] = ()  # the loop's losses, in the order of ``weights``
    if TYPE_CHECKING:  # every loop's config declares these two fields, each with its own type and default
        loop: str
        weights: tuple[float, ...]

    problem: ProblemRef = Field(
        description="a built-in name, `{name: ..., options: {...}}`, or `package.module:function` (runs that code; "
        "see [your own problem](docs/tutorial.md#your-own-problem)) returning the loop's problem type: a "
        "`CoupledProblem` for `alternating` (built-in: `digits_codes`)"
    )
    epochs: PositiveInt = Field(
        10,
        description="epochs (at most 100,000: the loops hold every optimizer step's loss weights in one table); "
        "the target is the last epoch's value (the best epoch's with `study.score: best`). An epoch is a pass "
        "over the epoch plan (`dual_loss`: see `mixing`) or over the training set (`alternating`: see `epoch`)",
    )
    batch_size: PositiveInt = Field(
        64,
        description="batch size of task a (and of task b unless `batch_size_b` is set); in `alternating`, the "
        "batch of each optimizer step",
    )
    weighting: WeightingConfig = Field(
        weighting.static.Config(),
        description="weighting strategy: `static` (the weights as given) or a dynamic method (see [weighting "
        "strategies](docs/explanation/parametrizations.md#weighting-strategies))",
    )
    weight_schedule: WeightScheduleConfig = Field(
        weight_schedules.constant.Config(),
        description="how one loss's weight moves over training (see [loss-weight schedules]"
        "(docs/explanation/parametrizations.md#loss-weight-schedules))",
    )
    eval_batch_size: PositiveInt = Field(4096, description="validation chunk size (no gradients)")
    data: DataConfig = Field(
        DataConfig(),
        description="how Dataset splits are read (DataLoader options; tensor splits ignore all but `steps_per_epoch`)",
    )
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32",
        description="`fp32`; `bf16` (`torch.autocast`, CUDA or CPU); `fp16` (autocast + `GradScaler`, CUDA only; "
        "with `static`, `dwa` or `rlw`: the scaler scales a plain weighted sum, so the other strategies are "
        "refused at load time — use `bf16` with them)",
    )
    compile: bool | CompileConfig = Field(
        False,
        description="`true` or `{mode, backend, fullgraph, dynamic}`: `torch.compile` the model(s). A compile "
        "error fails that trial with its reason (no fallback: a trial that silently ran uncompiled would be timed "
        "and compared as if it were compiled); the study goes on",
    )
    checkpoint: Literal["none", "best", "last"] | None = Field(
        None,
        description="which epoch's weights a trial keeps, as the artifact `weights.pt` of its run "
        '(`{"model": state_dict}`; `{"model_a": ..., "model_b": ...}` in the alternating loop; `torch.load(path, '
        "weights_only=True)`): `best` (of the target), `last` or `none`. Default: the epoch whose value the trial "
        "reports (`last`; `best` with `score: best` or early stopping), so the weights reproduce the trial's value "
        "(with `repeats` > 1 the first seed's, at the epoch the seeds' mean chose: that seed's value, not the mean). "
        "The best epoch's weights are copied to the CPU when an epoch improves, the last's once at the end, and the "
        "file is written once per trial (pruned trials keep none)",
    )
    early_stopping: EarlyStopping | None = Field(
        None,
        description="a trial whose target has not improved by more than `min_delta` for `patience` epochs stops "
        "and COMPLETES with its best value (not PRUNED); `early_stopped_at_epoch` attribute and "
        "`sweep.early_stopped_at_epoch` tag",
    )
    device: str = Field("auto", description="`auto` (cuda if available), `cpu`, `cuda`, `cuda:N`, `mps`")
    seed: int | None = Field(
        None, description="model-init and batch-order seed; by default derived from `study.seed` and the trial number"
    )
    data_seed: int | None = Field(
        None,
        description="the problem's data seed; by default derived from `study.seed`, the same for every trial (so "
        "trials are compared on the same data)",
    )
    repeats: int = Field(1, ge=1, le=64, description="train with this many seeds (`seed`, then derived ones), reporting each metric's mean (and `<metric>_sd` for validation ones): value, pruning and early stopping use the mean; `repeats`× the training, vectorized where the loop allows; the first seed's weights are kept (see [noise](docs/explanation/noise.md))")  # noqa: E501  # fmt: skip

    @property
    def loss_terms(self) -> tuple[str, ...]:
        """The loss terms this config trains, in the order of ``weights``: the first ``len(weights)`` of
        the loop's ``LOSSES``. The one place a loss is on or off (the alternating loop's third weight
        turns its ``consistency`` term on): every loop, the vectorized loops and the preflight check read
        it (``"consistency" in cfg.loss_terms``), never a count of weights."""
        return self.LOSSES[: len(self.weights)]

    @property
    def loop_losses(self) -> tuple[str, ...]:
        """Every loss this config's loop may train, in the order of ``weights`` (the loop's ``LOSSES``;
        the dual loop's tasks): the names of a trial's weights, which may be fewer (:attr:`loss_terms`)."""
        return self.LOSSES

    @model_validator(mode="after")
    def _compile_needs_one_backward(self) -> LoopCommon:
        if self.compile is not False and self.weighting.type in weighting.names_with(own_backward=True):
            raise ValueError(
                f"compile: weighting {self.weighting.type} back-propagates each loss (or its Jacobian) through "
                "the model, which a compiled backward cannot do (torch frees its buffers after one pass): use "
                "compile: false with it"
            )
        return self

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
        if self.weight_schedule.type == "constant":
            return self  # nothing moves: its target (default a) need not name one of this problem's tasks
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
