"""Optuna's samplers and pruners made from the study file's ``study.sampler`` and ``study.pruner``: Optuna's own
classes, their options passed by name (nothing re-implemented), and a sampler seeded once this process's first
trial exists (:class:`SeededAtFirstTrial`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import optuna

from objectives.frozen import Frozen
from sweep.studyfile.samplers import (
    GP,
    NSGA2,
    QMC,
    TPE,
    CmaEs,
    Grid,
    Hyperband,
    Median,
    NoPruner,
    Patient,
    PrunerConfig,
    RandomS,
    SamplerConfig,
    SuccessiveHalving,
)


def _options(cfg: Frozen) -> dict[str, Any]:
    return {k: v for k, v in cfg.model_dump().items() if k != "type"}


def build_sampler(
    cfg: SamplerConfig, seed: int, grid: Mapping[str, Sequence[Any]] | None = None
) -> optuna.samplers.BaseSampler:
    """The sampler ``study.sampler`` names, seeded with ``seed``; ``grid`` is the grid sampler's space."""
    match cfg:
        case TPE():
            return optuna.samplers.TPESampler(seed=seed, **_options(cfg))
        case RandomS():
            return optuna.samplers.RandomSampler(seed=seed)
        case GP():
            return optuna.samplers.GPSampler(seed=seed, **_options(cfg))
        case CmaEs():
            return optuna.samplers.CmaEsSampler(seed=seed, **_options(cfg))
        case QMC():
            return optuna.samplers.QMCSampler(seed=seed, warn_asynchronous_seeding=False, **_options(cfg))
        case Grid():
            return optuna.samplers.GridSampler(dict(grid or {}), seed=seed)
        case NSGA2():
            return optuna.samplers.NSGAIISampler(seed=seed, **_options(cfg))
    raise AssertionError(cfg)


def _pruner(cfg: PrunerConfig) -> optuna.pruners.BasePruner:
    match cfg:
        case NoPruner():
            return optuna.pruners.NopPruner()
        case Median():
            return optuna.pruners.MedianPruner(**_options(cfg))
        case Hyperband():
            return optuna.pruners.HyperbandPruner(**_options(cfg))
        case SuccessiveHalving():
            return optuna.pruners.SuccessiveHalvingPruner(**_options(cfg))
        case Patient():
            wrapped = _pruner(cfg.wrapped) if cfg.wrapped is not None else None
            return optuna.pruners.PatientPruner(wrapped, patience=cfg.patience, min_delta=cfg.min_delta)
    raise AssertionError(cfg)


def build_pruner(cfg: PrunerConfig | None, multi_objective: bool = False) -> optuna.pruners.BasePruner:
    """The pruner ``study.pruner`` names: median by default, none for multi-objective studies."""
    if cfg is None:
        if multi_objective:
            return optuna.pruners.NopPruner()
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2)
    return _pruner(cfg)


class SeededAtFirstTrial(optuna.samplers.BaseSampler):
    """A sampler built when this process's first trial exists, seeded from that trial's number.

    Trial numbers are handed out by the storage, once each, so every process on a study gets its own
    seed (processes started at the same instant on several machines included) and no two replay the
    same random points; a single process's seed still depends only on the study seed and how many
    trials the study had, so re-running the same command reproduces it.
    """

    def __init__(self, build: Callable[[int], optuna.samplers.BaseSampler], seed: int) -> None:
        self._build, self._seed = build, seed
        self._inner: optuna.samplers.BaseSampler | None = None

    @property
    def inner(self) -> optuna.samplers.BaseSampler:
        """The real sampler (built from the study seed alone until the first trial exists)."""
        if self._inner is None:
            self._inner = self._build(self._seed)
        return self._inner

    def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if self._inner is None:
            from objectives.helpers import derive_seed

            self._inner = self._build(derive_seed(self._seed, "sampler", trial.number))
        self._inner.before_trial(study, trial)

    def infer_relative_search_space(
        self, study: optuna.Study, trial: optuna.trial.FrozenTrial
    ) -> dict[str, optuna.distributions.BaseDistribution]:
        return self.inner.infer_relative_search_space(study, trial)

    def sample_relative(
        self,
        study: optuna.Study,
        trial: optuna.trial.FrozenTrial,
        search_space: dict[str, optuna.distributions.BaseDistribution],
    ) -> dict[str, Any]:
        return self.inner.sample_relative(study, trial, search_space)

    def sample_independent(
        self,
        study: optuna.Study,
        trial: optuna.trial.FrozenTrial,
        param_name: str,
        param_distribution: optuna.distributions.BaseDistribution,
    ) -> Any:
        return self.inner.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(
        self,
        study: optuna.Study,
        trial: optuna.trial.FrozenTrial,
        state: optuna.trial.TrialState,
        values: Sequence[float] | None,
    ) -> None:
        self.inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.inner.reseed_rng()
