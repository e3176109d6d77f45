"""Optuna samplers and pruners from their study-file configs (Optuna's own classes, nothing re-implemented)."""

from __future__ import annotations

import optuna

from sweep.config import (
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
    StudyFile,
    SuccessiveHalving,
)
from sweep.space import grid_space


def _options(cfg: object) -> dict[str, object]:
    return {k: v for k, v in cfg.model_dump().items() if k != "type"}  # type: ignore[attr-defined]


def build_sampler(sf: StudyFile, seed: int) -> optuna.samplers.BaseSampler:
    """The sampler a study file names, seeded with ``seed``."""
    cfg: SamplerConfig = sf.study.sampler
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
            return optuna.samplers.GridSampler(grid_space(sf), seed=seed)
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


def build_pruner(sf: StudyFile) -> optuna.pruners.BasePruner:
    """The pruner a study file names: median by default, none for multi-objective studies."""
    if sf.study.pruner is None:
        if sf.study.multi_objective:
            return optuna.pruners.NopPruner()
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2)
    return _pruner(sf.study.pruner)
