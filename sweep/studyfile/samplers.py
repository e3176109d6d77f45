"""Optuna samplers and pruners: their study-file schemas (Optuna's own options, passed through by name when
:mod:`sweep.search.builders` makes Optuna's own classes; nothing re-implemented)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, field_validator

from objectives.frozen import Frozen


def optuna_version() -> str:
    """The installed Optuna's version (read only when a message needs it)."""
    import optuna

    return optuna.__version__


# --- samplers -------------------------------------------------------------------------------------


class TPE(Frozen):
    """Optuna's ``TPESampler``; options passed to it by name."""

    type: Literal["tpe"] = Field("tpe", description="selects Optuna's `TPESampler`")
    n_startup_trials: NonNegativeInt = Field(
        10, description="TPE samples at random until this many of the study's trials have finished"
    )
    n_ei_candidates: PositiveInt = Field(
        24, description="candidate points drawn for each suggestion; the one with the best expected improvement wins"
    )
    multivariate: bool = Field(
        True, description="multivariate TPE: model the searched parameters jointly, not each one on its own"
    )
    group: bool = Field(
        False,
        description="with `multivariate`: split the space into the groups of parameters trials sampled together "
        "(conditional parameters, `when`) and model each group jointly",
    )
    constant_liar: bool = Field(
        True,
        description="count running trials as poor results, so workers in parallel do not all sample next to the "
        "same promising point",
    )


class RandomS(Frozen):
    """Optuna's ``RandomSampler``: every parameter drawn independently and uniformly (on a log scale with ``log``)."""

    type: Literal["random"] = Field(description="selects Optuna's `RandomSampler`")


class GP(Frozen):
    """Optuna's ``GPSampler`` (Gaussian-process Bayesian optimisation); options passed to it by name."""

    type: Literal["gp"] = Field(description="selects Optuna's `GPSampler`")
    n_startup_trials: NonNegativeInt = Field(
        10, description="trials sampled at random before the Gaussian process is fitted"
    )
    deterministic_objective: bool = Field(
        False,
        description="fit no observation noise (the objective gives the same value for the same parameters); "
        "leave `false` when trial seeds vary",
    )


class CmaEs(Frozen):
    """Optuna's ``CmaEsSampler``; options passed to it by name."""

    type: Literal["cmaes"] = Field(description="selects Optuna's `CmaEsSampler`")
    n_startup_trials: NonNegativeInt = Field(
        1, description="trials sampled independently (at random) before CMA-ES starts"
    )
    sigma0: PositiveFloat | None = Field(
        None,
        description="initial standard deviation of CMA-ES; unset: a sixth of the narrowest parameter range "
        "(deprecated since Optuna 4.9)",
    )
    restart_strategy: Literal["ipop", "bipop"] | None = Field(
        None,
        description="refused: Optuna 4.4 and later ignore it (no restart happens; Optuna moved restarts to "
        "OptunaHub), so a file asking for restarts would silently get none",
    )
    popsize: PositiveInt | None = Field(
        None, description="candidates per CMA-ES generation; unset: 4 + ⌊3 ln(number of parameters)⌋"
    )
    use_separable_cma: bool = Field(
        False, description="separable CMA-ES: a diagonal covariance matrix, which adapts faster"
    )
    with_margin: bool = Field(
        False,
        description="CMA-ES with margin: keeps `int` and stepped parameters from collapsing onto one value (not "
        "with `use_separable_cma`)",
    )
    lr_adapt: bool = Field(
        False,
        description="CMA-ES with learning-rate adaptation, for multimodal or noisy objectives (not with "
        "`use_separable_cma` or `with_margin`)",
    )

    @field_validator("restart_strategy")
    @classmethod
    def _no_restarts(cls, value: str | None) -> None:
        if value is not None:
            raise ValueError(
                f"{value}: Optuna {optuna_version()} ignores restart_strategy (deprecated in 4.4, no restart "
                "happens); remove it, or run CMA-ES restarts from OptunaHub's sampler in your own script"
            )
        return None


class QMC(Frozen):
    """Optuna's ``QMCSampler`` (a quasi-Monte Carlo sequence); options passed to it by name."""

    type: Literal["qmc"] = Field(description="selects Optuna's `QMCSampler`")
    qmc_type: Literal["sobol", "halton"] = Field(
        "sobol", description="the low-discrepancy sequence (Sobol' is best with a power-of-two number of trials)"
    )
    scramble: bool = Field(True, description="scramble (randomise) the sequence, seeded from `study.seed`")


class Grid(Frozen):
    """Optuna's ``GridSampler``: the grid comes from ``search`` (categorical choices, int ranges, float ``step``
    or ``grid: [...]``, and ``search.weights.grid``); no conditions."""

    type: Literal["grid"] = Field(description="selects Optuna's `GridSampler`")


class NSGA2(Frozen):
    """Optuna's ``NSGAIISampler`` (a genetic algorithm for multi-objective studies); options passed to it by name."""

    type: Literal["nsga2"] = Field(description="selects Optuna's `NSGAIISampler`")
    population_size: Annotated[int, Field(ge=2, description="trials per generation")] = 50
    mutation_prob: Annotated[float, Field(ge=0, le=1)] | None = Field(
        None, description="probability of mutating each parameter of a new trial; unset: 1 / its number of parameters"
    )
    crossover_prob: Annotated[
        float, Field(ge=0, le=1, description="probability that a new trial is a crossover of its parents")
    ] = 0.9
    swapping_prob: Annotated[
        float,
        Field(ge=0, le=1, description="in a crossover, the probability of swapping each parameter of the parents"),
    ] = 0.5


SamplerConfig = Annotated[TPE | RandomS | GP | CmaEs | QMC | Grid | NSGA2, Field(discriminator="type")]


# --- pruners --------------------------------------------------------------------------------------


class NoPruner(Frozen):
    """No pruning (Optuna's ``NopPruner``): every trial trains all its epochs."""

    type: Literal["none"] = Field(description="selects no pruning")


class Median(Frozen):
    """Optuna's ``MedianPruner``: prunes a trial whose best target so far is worse than the median of the other
    trials' at the same epoch; options passed to it by name."""

    type: Literal["median"] = Field(description="selects Optuna's `MedianPruner`")
    n_startup_trials: NonNegativeInt = Field(
        5, description="no trial is pruned until this many of the study's trials have finished"
    )
    n_warmup_steps: NonNegativeInt = Field(
        0, description="a trial is not pruned before its epoch `n_warmup_steps` (epochs count from 0)"
    )
    interval_steps: PositiveInt = Field(
        1, description="epochs between two pruning checks, counted from `n_warmup_steps`"
    )
    n_min_trials: PositiveInt = Field(
        1, description="a trial is pruned at an epoch only when at least this many trials reported that epoch"
    )


class Hyperband(Frozen):
    """Optuna's ``HyperbandPruner`` (successive halving in several brackets; an epoch is one unit of resource);
    options passed to it by name."""

    type: Literal["hyperband"] = Field(description="selects Optuna's `HyperbandPruner`")
    min_resource: PositiveInt = Field(
        1, description="r: the epochs a trial gets before the first pruning check of the most aggressive bracket"
    )
    max_resource: PositiveInt | Literal["auto"] = Field(
        "auto",
        description="the most epochs a trial runs (`objective.epochs`); `auto`: the last epoch of the first trial "
        "to complete, and no trial is pruned before one has",
    )
    reduction_factor: Annotated[
        int, Field(ge=2, description="η: about 1/η of a rung's trials go on to the next; sets the number of brackets")
    ] = 3


class SuccessiveHalving(Frozen):
    """Optuna's ``SuccessiveHalvingPruner`` (asynchronous successive halving; an epoch is one unit of resource);
    options passed to it by name."""

    type: Literal["successive_halving"] = Field(description="selects Optuna's `SuccessiveHalvingPruner`")
    min_resource: PositiveInt | Literal["auto"] = Field(
        "auto",
        description="r: no trial is pruned before `min_resource × reduction_factor^min_early_stopping_rate` epochs; "
        "`auto`: the last epoch of the first trial to complete / 100 (at least 1)",
    )
    reduction_factor: Annotated[
        int, Field(ge=2, description="η: about 1/η of the trials that reach a rung are promoted to the next")
    ] = 4
    min_early_stopping_rate: NonNegativeInt = Field(
        0, description="s: moves the first rung to `min_resource × reduction_factor^s` epochs"
    )


class Patient(Frozen):
    """Optuna's ``PatientPruner``, around another pruner (``wrapped``)."""

    type: Literal["patient"] = Field(description="selects Optuna's `PatientPruner`")
    patience: NonNegativeInt = Field(
        description="epochs in a row without improvement before a trial may be pruned (by `wrapped`, if given)"
    )
    min_delta: NonNegativeFloat = Field(0.0, description="the least change that counts as an improvement")
    wrapped: Annotated[Median | Hyperband | SuccessiveHalving, Field(discriminator="type")] | None = Field(
        None,
        description="another pruner (`median`, `hyperband`, `successive_halving`, or a mapping with its options), "
        "asked once the patience allows; unset: a trial is pruned as soon as its patience runs out",
    )

    @field_validator("wrapped", mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        return type_shorthand(v)


PrunerConfig = Annotated[NoPruner | Median | Hyperband | SuccessiveHalving | Patient, Field(discriminator="type")]


def type_shorthand(v: Any) -> Any:
    """``sampler: random`` is short for ``sampler: {type: random}``."""
    return {"type": v} if isinstance(v, str) else v
