"""The search space: its study-file schema (``search:``), the checks it must pass, and sampling
through Optuna's public ``trial.suggest_*`` into a resolved config.

Bounds are inclusive, exactly as in Optuna. Parameter names are the dotted objective paths
(``optimizer.lr``) plus ``weights.log10_ratio`` or ``weights.u0``/``weights.u1`` for the loss weights.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

import optuna
from pydantic import Field, PositiveFloat, PositiveInt, model_validator

from objectives.config import LoopCommon
from objectives.frozen import Frozen
from objectives.helpers import derive_seed, resolve_device, weights_from_log10_ratios, weights_from_uniforms
from objectives.resolved import resolved_type

Scalar = None | bool | int | float | str
When = dict[str, Scalar | list[Scalar]]


def _check_bounds(low: float, high: float, log: bool) -> None:
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"bounds must be finite numbers (got low {low}, high {high})")
    if low > high:
        raise ValueError(f"low ({low}) must not exceed high ({high})")
    if log and low <= 0:
        raise ValueError(f"log scale needs low > 0 (got {low})")


WHEN_TEXT = (
    "`{param: value}` or `{param: [values]}`: a **conditional** parameter, sampled only in trials where an earlier "
    "searched parameter took one of those values; otherwise the fixed value in `objective` applies"
)


class FloatParam(Frozen):
    """``trial.suggest_float``: a number in ``[low, high]``."""

    type: Literal["float"] = Field(description="selects `trial.suggest_float`")
    low: float = Field(description="lower bound (inclusive, as in Optuna)")
    high: float = Field(description="upper bound (inclusive, as in Optuna)")
    log: bool = Field(False, description="log scale (needs `low > 0`)")
    step: PositiveFloat | None = Field(None, description="discretization step (not with `log`)")
    grid: tuple[float, ...] | None = Field(None, description="values for the grid sampler")
    when: When | None = Field(None, description=WHEN_TEXT)

    @model_validator(mode="after")
    def _bounds(self) -> FloatParam:
        _check_bounds(self.low, self.high, self.log)
        if not all(math.isfinite(v) for v in (*(self.grid or ()), self.step or 0.0)):
            raise ValueError("grid points and step must be finite numbers")
        if self.log and self.step is not None:
            raise ValueError("log and step cannot be combined (Optuna does not support it)")
        return self


class IntParam(Frozen):
    """``trial.suggest_int``: an integer in ``[low, high]``."""

    type: Literal["int"] = Field(description="selects `trial.suggest_int`")
    low: int = Field(description="lower bound (inclusive, as in Optuna)")
    high: int = Field(description="upper bound (inclusive, as in Optuna)")
    log: bool = Field(False, description="log scale (needs `low ≥ 1`; not with `step`)")
    step: PositiveInt = Field(1, description="the step between the values drawn (`low`, `low + step`, ...)")
    grid: tuple[int, ...] | None = Field(None, description="values for the grid sampler")
    when: When | None = Field(None, description=WHEN_TEXT)

    @model_validator(mode="after")
    def _bounds(self) -> IntParam:
        _check_bounds(self.low, self.high, self.log)
        if self.log and self.step != 1:
            raise ValueError("log and step cannot be combined (Optuna does not support it)")
        return self


class CategoricalParam(Frozen):
    """``trial.suggest_categorical``: one of ``choices``."""

    type: Literal["categorical"] = Field(description="selects `trial.suggest_categorical`")
    choices: Annotated[tuple[Scalar, ...], Field(min_length=1)] = Field(
        description="non-empty list of scalars, each given once: a repeated choice is drawn more often, and a "
        "compared one would run its sub-study twice; `1`, `1.0` and `true` count as one, since Optuna records a "
        "choice as the first one equal to it"
    )
    when: When | None = Field(None, description=WHEN_TEXT)

    @model_validator(mode="after")
    def _finite(self) -> CategoricalParam:
        if any(isinstance(c, float) and not math.isfinite(c) for c in self.choices):
            raise ValueError("choices must be finite numbers (NaN never equals itself: Optuna cannot record it)")
        for i, choice in enumerate(self.choices):  # Optuna records a choice as its first equal one (1 == 1.0 == true)
            if (first := self.choices.index(choice)) < i:
                earlier = self.choices[first]
                same = f"{choice!r} is" if repr(earlier) == repr(choice) else f"{earlier!r} and {choice!r} (equal) are"
                raise ValueError(f"{same} given twice: give each choice once (a repeated one is drawn more often, "
                                 "and Optuna records it as the first)")  # fmt: skip
        return self


ParamSpec = Annotated[FloatParam | IntParam | CategoricalParam, Field(discriminator="type")]
Spec = FloatParam | IntParam | CategoricalParam


class WeightsSearch(Frozen):
    """``search.weights`` — how the loss weights are sampled."""

    parametrization: Literal["log_ratio", "simplex", "fixed"] = Field(
        "log_ratio",
        description="`log_ratio` samples `weights.log10_ratio` (log10 w_a / w_b) uniform on `[low, high]`, the "
        "weights normalised to sum to 1; `simplex` samples `weights.u0`, `weights.u1` (`weights.u2`) uniform on "
        "[0, 1] (a flat Dirichlet, Optuna's FAQ recipe); `fixed` samples nothing (`objective.weights` as written). "
        "The section's default is `fixed`",
    )
    low: float = Field(-4.0, description="lower bound of each log10 ratio (`log_ratio`; inclusive)")
    high: float = Field(4.0, description="upper bound of each log10 ratio (`log_ratio`; inclusive)")
    grid: tuple[float, ...] | None = Field(None, description="the log ratios the grid sampler tries")
    when: When | None = Field(
        None,
        description="sample the weights only where earlier searched parameters took these values (as a "
        "parameter's `when`)",
    )

    @model_validator(mode="after")
    def _bounds(self) -> WeightsSearch:
        _check_bounds(self.low, self.high, log=False)
        if not all(math.isfinite(v) for v in self.grid or ()):
            raise ValueError("grid points must be finite numbers")
        return self


class SearchSection(Frozen):
    """``search:`` — the search space."""

    weights: WeightsSearch = Field(
        WeightsSearch(parametrization="fixed"),
        description="how the loss weights are sampled (see [loss weights](docs/explanation/parametrizations.md"
        "#loss-weights))",
    )
    params: dict[str, ParamSpec] = Field(
        default_factory=dict,
        description="dotted paths into `objective` (`optimizer.lr`) → a parameter spec, mapped one to one to "
        "Optuna's `trial.suggest_*` (bounds inclusive, as in Optuna)",
    )

    @property
    def is_empty(self) -> bool:
        return not self.params and self.weights.parametrization == "fixed"


# --- paths into the objective ---------------------------------------------------------------------

# Config nodes that are discriminated unions: choosing another ``type`` drops the old type's options.
UNION_KEYS = ("schedule", "weighting", "weight_schedule")
UNION_SHARED = ("target",)


def get_path(data: Mapping[str, Any], path: str) -> tuple[bool, Any]:
    """``(found, value)`` of the dotted ``path`` in nested ``data``."""
    node: Any = data
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def set_path(data: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of nested ``data`` with the dotted ``path`` set to ``value``.

    Setting ``<union>.type`` (e.g. ``optimizer.schedule.type``) to a different type replaces that node
    with ``{type: value}``: the previous type's options do not apply to the new one.
    """
    head, _, rest = path.partition(".")
    out = dict(data)
    child = out.get(head)
    if rest == "type" and head in UNION_KEYS and isinstance(child, dict) and child.get("type") != value:
        # Keys every type of the union has (a weight schedule's target loss) are not the old type's options.
        out[head] = {"type": value, **{k: child[k] for k in UNION_SHARED if k in child}}
        return out
    out[head] = set_path(dict(child or {}), rest, value) if rest else value
    return out


# --- sampling -------------------------------------------------------------------------------------


def suggest(trial: optuna.Trial, name: str, spec: Spec) -> Any:
    """One ``trial.suggest_*`` call, mapped one-to-one from a spec."""
    if isinstance(spec, FloatParam):
        return trial.suggest_float(name, spec.low, spec.high, log=spec.log, step=spec.step)
    if isinstance(spec, IntParam):
        return trial.suggest_int(name, spec.low, spec.high, log=spec.log, step=spec.step)
    return trial.suggest_categorical(name, list(spec.choices))


def active(spec: Spec | WeightsSearch, sampled: Mapping[str, Any] | None) -> bool:
    """A conditional parameter is sampled only when every parameter it names took a wanted value."""
    for ref, wanted in (spec.when or {}).items():
        if sampled is None or ref not in sampled:
            return False
        if sampled[ref] not in (wanted if isinstance(wanted, list) else [wanted]):
            return False
    return True


def ratio_names(terms: Sequence[str]) -> list[str]:
    """``log_ratio``'s parameters for the loss terms a config trains (its ``loss_terms``):
    ``weights.log10_ratio`` = log10(w_a / w_b), then ``weights.log10_ratio_<loss>`` = log10(w_<loss> / w_b)
    for each loss after B's (the alternating loop's ``consistency``); B's loss is the reference."""
    return ["weights.log10_ratio", *(f"weights.log10_ratio_{t}" for t in terms[2:])]


def suggest_weights(
    trial: optuna.Trial, search: SearchSection, objective: LoopCommon, sampled: Mapping[str, Any] | None = None
) -> tuple[float, ...]:
    """Loss weights per the weight parametrization, one per loss term the objective trains (its own
    ``weights`` for ``fixed``): ``log_ratio`` samples :func:`ratio_names`, ``simplex`` ``weights.u0`` ...
    one per loss.
    """
    w, fixed, terms = search.weights, tuple(objective.weights), objective.loss_terms
    if not active(w, sampled):
        return fixed
    if w.parametrization == "log_ratio":
        ratios = [trial.suggest_float(name, w.low, w.high) for name in ratio_names(terms)]
        weights = weights_from_log10_ratios(ratios)  # order: ratios..., then the reference (b)
        return (weights[0], weights[-1], *weights[1:-1])
    if w.parametrization == "simplex":
        return weights_from_uniforms([trial.suggest_float(f"weights.u{i}", 0.0, 1.0) for i in range(len(terms))])
    return fixed


def sample(
    trial: optuna.Trial, search: SearchSection, objective: LoopCommon
) -> tuple[dict[str, Any], tuple[float, ...]]:
    """Sample every active parameter, in file order, then the weights (one per loss term of ``objective``).

    Returns:
        The sampled objective values by path, and the loss weights.
    """
    sampled: dict[str, Any] = {}
    for path, spec in search.params.items():
        if active(spec, sampled):
            sampled[path] = suggest(trial, path, spec)
    return sampled, suggest_weights(trial, search, objective, sampled)


def resolve(
    objective: LoopCommon, study_seed: int, trial_number: int, sampled: Mapping[str, Any], weights: tuple[float, ...]
) -> LoopCommon:
    """The fully fixed config one trial trains (its loop's resolved type): sampled values, weights,
    seeds and device filled in.

    The model/batch seed is derived from the study seed and the trial number (so a trial replays);
    the data seed from the study seed alone (so every trial sees the same data). Seeds given in the
    file win.
    """
    data = objective.model_dump(mode="json")
    for path, value in sampled.items():
        data = set_path(data, path, value)
    data["weights"] = list(weights)
    if data.get("seed") is None:
        data["seed"] = derive_seed(study_seed, "trial", trial_number)
    if data.get("data_seed") is None:
        data["data_seed"] = derive_seed(study_seed, "data")
    data["device"] = resolve_device(data["device"])
    return resolved_type(type(objective)).model_validate(data)


def searched_names(search: SearchSection, terms: Sequence[str]) -> tuple[str, ...]:
    """Every parameter name a trial of this space can carry (the objective paths, then the weights'), for
    the loss terms the objective trains (its ``loss_terms``)."""
    w = search.weights.parametrization
    weights = {"log_ratio": ratio_names(terms), "simplex": [f"weights.u{i}" for i in range(len(terms))], "fixed": []}[w]
    return (*search.params, *weights)


def grid_space(search: SearchSection, terms: Sequence[str]) -> dict[str, list[Any]]:
    """The GridSampler search space (:func:`check_search` guarantees every parameter has a finite grid)."""
    space: dict[str, list[Any]] = {}
    for path, spec in search.params.items():
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
    if search.weights.parametrization == "log_ratio":
        for name in ratio_names(terms):
            space[name] = list(search.weights.grid or ())
    return space
