"""The search space: study-file specs → Optuna's public ``trial.suggest_*`` → a resolved config.

Bounds are inclusive, exactly as in Optuna. Parameter names are the dotted objective paths
(``optimizer.lr``) plus ``weights.log10_ratio`` or ``weights.u0``/``weights.u1`` for the loss weights.
"""

from __future__ import annotations

from typing import Any

import optuna

from objectives.config import LoopConfig
from objectives.helpers import derive_seed, resolve_device, weights_from_log10_ratios, weights_from_uniforms
from sweep.config import CategoricalParam, FloatParam, IntParam, SearchSection, StudyFile, WeightsSearch, set_path


def suggest(trial: optuna.Trial, name: str, spec: FloatParam | IntParam | CategoricalParam) -> Any:
    """One ``trial.suggest_*`` call, mapped one-to-one from a spec."""
    if isinstance(spec, FloatParam):
        return trial.suggest_float(name, spec.low, spec.high, log=spec.log, step=spec.step)
    if isinstance(spec, IntParam):
        return trial.suggest_int(name, spec.low, spec.high, log=spec.log, step=spec.step)
    return trial.suggest_categorical(name, list(spec.choices))


def _active(spec: FloatParam | IntParam | CategoricalParam | WeightsSearch, sampled: dict[str, Any] | None) -> bool:
    """A conditional parameter is sampled only when every parameter it names took a wanted value."""
    for ref, wanted in (spec.when or {}).items():
        if sampled is None or ref not in sampled:
            return False
        values = wanted if isinstance(wanted, list) else [wanted]
        if sampled[ref] not in values:
            return False
    return True


def suggest_weights(
    trial: optuna.Trial, search: SearchSection, fixed: tuple[float, ...], sampled: dict[str, Any] | None = None
) -> tuple[float, ...]:
    """Loss weights per the weight parametrization, as many as ``fixed`` has (``fixed`` for ``fixed``).

    ``log_ratio`` samples ``weights.log10_ratio`` = log10(w_a / w_b), and with a third (consistency)
    loss also ``weights.log10_ratio_consistency`` = log10(w_consistency / w_b); B's loss is the
    reference. ``simplex`` samples ``weights.u0`` ... one per loss.
    """
    w, n = search.weights, len(fixed)
    if not _active(w, sampled):
        return fixed
    if w.parametrization == "log_ratio":
        ratios = [trial.suggest_float("weights.log10_ratio", w.low, w.high)]
        if n == 3:
            ratios.append(trial.suggest_float("weights.log10_ratio_consistency", w.low, w.high))
        weights = weights_from_log10_ratios(ratios)  # order: ratios..., then the reference (b)
        return (weights[0], weights[-1], *weights[1:-1])
    if w.parametrization == "simplex":
        return weights_from_uniforms([trial.suggest_float(f"weights.u{i}", 0.0, 1.0) for i in range(n)])
    return fixed


def sample(trial: optuna.Trial, sf: StudyFile) -> tuple[dict[str, Any], tuple[float, ...]]:
    """Sample every active parameter, in file order, then the weights.

    Returns:
        The sampled objective values by path, and the loss weights.
    """
    sampled: dict[str, Any] = {}
    for path, spec in sf.search.params.items():
        if _active(spec, sampled):
            sampled[path] = suggest(trial, path, spec)
    weights = suggest_weights(trial, sf.search, tuple(sf.objective.weights), sampled)
    return sampled, weights


def resolve(sf: StudyFile, trial_number: int, sampled: dict[str, Any], weights: tuple[float, ...]) -> LoopConfig:
    """The fully fixed config one trial trains: sampled values, weights, seeds and device filled in.

    The model/batch seed is derived from the study seed and the trial number (so a trial replays);
    the data seed from the study seed alone (so every trial sees the same data). Seeds given in the
    file win.
    """
    data = sf.objective.model_dump(mode="json")
    for path, value in sampled.items():
        data = set_path(data, path, value)
    data["weights"] = list(weights)
    if data.get("seed") is None:
        data["seed"] = derive_seed(sf.study.seed, "trial", trial_number)
    if data.get("data_seed") is None:
        data["data_seed"] = derive_seed(sf.study.seed, "data")
    data["device"] = resolve_device(data["device"])
    return type(sf.objective).model_validate(data)


def grid_space(sf: StudyFile) -> dict[str, list[Any]]:
    """The GridSampler search space (config checks guarantee every parameter has a finite grid)."""
    space: dict[str, list[Any]] = {}
    for path, spec in sf.search.params.items():
        if isinstance(spec, CategoricalParam):
            space[path] = list(spec.choices)
        elif spec.grid is not None:
            space[path] = list(spec.grid)
        elif isinstance(spec, IntParam):
            space[path] = list(range(spec.low, spec.high + 1, spec.step))
        else:
            assert spec.step is not None
            n = round((spec.high - spec.low) / spec.step)
            space[path] = [spec.low + i * spec.step for i in range(n + 1)]
    if sf.search.weights.parametrization == "log_ratio":
        space["weights.log10_ratio"] = list(sf.search.weights.grid or ())
        if len(sf.objective.weights) == 3:
            space["weights.log10_ratio_consistency"] = list(sf.search.weights.grid or ())
    return space
