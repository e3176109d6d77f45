"""The study file: YAML → typed, frozen config objects, checked before anything is created.

Every error is a :class:`ConfigError` naming the file and the key (``study.n_trials``,
``search.params.optimizer.lr.low``…); the CLI prints it as one line and exits with status 2.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)

from objectives.config import LOSS_NAMES, LoopConfig
from objectives.problems import BUILTINS, ProblemError, check_problem

Direction = Literal["minimize", "maximize"]
Scalar = None | bool | int | float | str


class ConfigError(Exception):
    """A study file is invalid. ``str()`` is one line: ``FILE: KEY: what is wrong``."""

    def __init__(self, file: str | Path, key: str, message: str) -> None:
        self.file, self.key, self.message = str(file), key, message
        super().__init__(f"{self.file}: {key}: {message}" if key else f"{self.file}: {message}")


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# --- samplers (Optuna's; options are passed through by name) ------------------------------------


class TPE(Frozen):
    type: Literal["tpe"] = "tpe"
    n_startup_trials: NonNegativeInt = 10
    n_ei_candidates: PositiveInt = 24
    multivariate: bool = True
    group: bool = False
    constant_liar: bool = True


class RandomS(Frozen):
    type: Literal["random"]


class GP(Frozen):
    type: Literal["gp"]
    n_startup_trials: NonNegativeInt = 10
    deterministic_objective: bool = False


class CmaEs(Frozen):
    type: Literal["cmaes"]
    n_startup_trials: NonNegativeInt = 1
    sigma0: PositiveFloat | None = None
    restart_strategy: Literal["ipop", "bipop"] | None = None
    popsize: PositiveInt | None = None
    use_separable_cma: bool = False
    with_margin: bool = False
    lr_adapt: bool = False


class QMC(Frozen):
    type: Literal["qmc"]
    qmc_type: Literal["sobol", "halton"] = "sobol"
    scramble: bool = True


class Grid(Frozen):
    type: Literal["grid"]


class NSGA2(Frozen):
    type: Literal["nsga2"]
    population_size: Annotated[int, Field(ge=2)] = 50
    mutation_prob: Annotated[float, Field(ge=0, le=1)] | None = None
    crossover_prob: Annotated[float, Field(ge=0, le=1)] = 0.9
    swapping_prob: Annotated[float, Field(ge=0, le=1)] = 0.5


SamplerConfig = Annotated[TPE | RandomS | GP | CmaEs | QMC | Grid | NSGA2, Field(discriminator="type")]


# --- pruners --------------------------------------------------------------------------------------


class NoPruner(Frozen):
    type: Literal["none"]


class Median(Frozen):
    type: Literal["median"]
    n_startup_trials: NonNegativeInt = 5
    n_warmup_steps: NonNegativeInt = 0
    interval_steps: PositiveInt = 1
    n_min_trials: PositiveInt = 1


class Hyperband(Frozen):
    type: Literal["hyperband"]
    min_resource: PositiveInt = 1
    max_resource: PositiveInt | Literal["auto"] = "auto"
    reduction_factor: Annotated[int, Field(ge=2)] = 3


class SuccessiveHalving(Frozen):
    type: Literal["successive_halving"]
    min_resource: PositiveInt | Literal["auto"] = "auto"
    reduction_factor: Annotated[int, Field(ge=2)] = 4
    min_early_stopping_rate: NonNegativeInt = 0


class Patient(Frozen):
    type: Literal["patient"]
    patience: NonNegativeInt
    min_delta: NonNegativeFloat = 0.0
    wrapped: Annotated[Median | Hyperband | SuccessiveHalving, Field(discriminator="type")] | None = None


PrunerConfig = Annotated[NoPruner | Median | Hyperband | SuccessiveHalving | Patient, Field(discriminator="type")]


def _type_shorthand(v: Any) -> Any:
    """``sampler: random`` is short for ``sampler: {type: random}``."""
    return {"type": v} if isinstance(v, str) else v


# --- sections -------------------------------------------------------------------------------------


class StudySection(Frozen):
    """``study:`` — what Optuna optimises and where it stores it.

    ``metric`` (or ``metrics``) names one or more validation metrics the loop logs; ``direction``
    (or ``directions``) defaults from the name (``*_loss`` minimise, ``*_acc`` maximise).
    ``heartbeat_interval``/``grace_period`` (seconds) let Optuna fail the trial of a worker that died;
    it is then re-queued up to ``max_retry`` times.
    """

    name: Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.\-]+$")]
    metric: tuple[str, ...] = ("val_total_loss",)
    direction: tuple[Direction, ...] | None = None
    n_trials: PositiveInt = 20
    timeout: PositiveFloat | None = None
    seed: int = 0
    sampler: SamplerConfig = TPE()
    pruner: PrunerConfig | None = None
    storage: str | None = None
    heartbeat_interval: PositiveInt = 10
    grace_period: PositiveInt = 30
    max_retry: NonNegativeInt = 2

    @model_validator(mode="before")
    @classmethod
    def _plural_spellings(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            for single, plural in (("metric", "metrics"), ("direction", "directions")):
                if plural in data:
                    if single in data:
                        raise ValueError(f"give either {single!r} or {plural!r}, not both")
                    data[single] = data.pop(plural)
                if isinstance(data.get(single), str):
                    data[single] = [data[single]]
        return data

    @field_validator("sampler", "pruner", mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        return _type_shorthand(v)

    @property
    def directions(self) -> tuple[Direction, ...]:
        """Directions, one per metric (inferred where not given; see :func:`check_target`)."""
        if self.direction is not None:
            return self.direction
        return tuple(infer_direction(m) or "minimize" for m in self.metric)

    @property
    def multi_objective(self) -> bool:
        return len(self.metric) > 1


class TrackingSection(Frozen):
    """``tracking:`` — where MLflow records the study (one parent run, one child run per trial)."""

    uri: str = "sqlite:///mlflow.db"
    experiment: str | None = None
    artifact_location: str | None = None


class FloatParam(Frozen):
    type: Literal["float"]
    low: float
    high: float
    log: bool = False
    step: PositiveFloat | None = None
    grid: tuple[float, ...] | None = None
    when: dict[str, Scalar | list[Scalar]] | None = None

    @model_validator(mode="after")
    def _bounds(self) -> FloatParam:
        _check_bounds(self.low, self.high, self.log)
        if self.log and self.step is not None:
            raise ValueError("log and step cannot be combined (Optuna does not support it)")
        return self


class IntParam(Frozen):
    type: Literal["int"]
    low: int
    high: int
    log: bool = False
    step: PositiveInt = 1
    grid: tuple[int, ...] | None = None
    when: dict[str, Scalar | list[Scalar]] | None = None

    @model_validator(mode="after")
    def _bounds(self) -> IntParam:
        _check_bounds(self.low, self.high, self.log)
        if self.log and self.step != 1:
            raise ValueError("log and step cannot be combined (Optuna does not support it)")
        return self


class CategoricalParam(Frozen):
    type: Literal["categorical"]
    choices: Annotated[tuple[Scalar, ...], Field(min_length=1)]
    when: dict[str, Scalar | list[Scalar]] | None = None


def _check_bounds(low: float, high: float, log: bool) -> None:
    if low > high:
        raise ValueError(f"low ({low}) must not exceed high ({high})")
    if log and low <= 0:
        raise ValueError(f"log scale needs low > 0 (got {low})")


ParamSpec = Annotated[FloatParam | IntParam | CategoricalParam, Field(discriminator="type")]


class WeightsSearch(Frozen):
    """``search.weights`` — how the loss weights are sampled.

    ``log_ratio`` samples ``log10(w_a / w_b)`` uniformly in ``[low, high]`` (inclusive) and normalises
    the weights to sum to 1; ``simplex`` samples a flat Dirichlet (one U(0,1) per loss, Optuna FAQ
    recipe); ``fixed`` keeps ``objective.weights``.
    """

    parametrization: Literal["log_ratio", "simplex", "fixed"] = "log_ratio"
    low: float = -4.0
    high: float = 4.0
    grid: tuple[float, ...] | None = None
    when: dict[str, Scalar | list[Scalar]] | None = None

    @model_validator(mode="after")
    def _bounds(self) -> WeightsSearch:
        _check_bounds(self.low, self.high, log=False)
        return self


class SearchSection(Frozen):
    """``search:`` — the space. ``params`` keys are dotted paths into ``objective`` (``optimizer.lr``)."""

    weights: WeightsSearch = WeightsSearch(parametrization="fixed")
    params: dict[str, ParamSpec] = Field(default_factory=dict)

    @property
    def is_empty(self) -> bool:
        return not self.params and self.weights.parametrization == "fixed"


ObjectiveConfig = LoopConfig


class StudyFile(Frozen):
    """A whole study file. ``provenance`` is written by ``sweep.export`` (where a replay came from);
    the runner records it as tags of the parent run and otherwise ignores it."""

    study: StudySection
    tracking: TrackingSection = TrackingSection()
    objective: ObjectiveConfig
    search: SearchSection = SearchSection()
    provenance: dict[str, Scalar | list[Scalar]] | None = None


# --- loading --------------------------------------------------------------------------------------

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _substitute_env(node: Any, file: Path, key: str = "") -> Any:
    """Replace ``${NAME}`` in strings with the environment variable (for credentials in URLs)."""
    if isinstance(node, dict):
        return {k: _substitute_env(v, file, f"{key}.{k}" if key else str(k)) for k, v in node.items()}
    if isinstance(node, list):
        return [_substitute_env(v, file, f"{key}.{i}") for i, v in enumerate(node)]
    if isinstance(node, str):

        def value(m: re.Match[str]) -> str:
            if m.group(1) not in os.environ:
                raise ConfigError(file, key, f"environment variable {m.group(1)} is not set")
            return os.environ[m.group(1)]

        return _ENV.sub(value, node)
    return node


def _error_key(data: Any, loc: tuple[Any, ...]) -> str:
    """Dotted key of a pydantic error location, skipping union tags that are not in the input."""
    parts: list[str] = []
    node = data
    for part in loc:
        if isinstance(node, dict) and part not in node and part in (node.get("type"), node.get("loop", "dual_loss")):
            continue  # a discriminated union's tag (sampler 'tpe', loop 'dual_loss'), not a key of the file
        if (isinstance(node, dict) and part in node) or (
            isinstance(node, list | tuple) and isinstance(part, int) and part < len(node)
        ):
            node = node[part]
            parts.append(str(part))
        elif isinstance(part, str) and not isinstance(node, dict | list | tuple):
            continue
        elif isinstance(node, dict) and isinstance(part, str) and not part.startswith(("function-", "tagged-")):
            # A missing (required) key or an unknown tag: name it once, then stop descending.
            parts.append(part)
            node = None
    return ".".join(parts)


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader that refuses duplicate keys (PyYAML would silently keep the last one)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _message(err: Mapping[str, Any]) -> str:
    if err["type"] == "union_tag_invalid":
        return f"unknown value {err['ctx']['tag']!r}; expected one of {err['ctx']['expected_tags']}"
    if err["type"] == "extra_forbidden":
        return "unknown key"
    if err["type"] == "missing":
        return "required key is missing"
    msg = str(err["msg"])
    return msg.removeprefix("Value error, ")


def parse_study(
    data: Any, file: str | Path, overrides: Mapping[str, Any] | None = None, substitute_env: bool = True
) -> StudyFile:
    """Validate an already-parsed YAML document (see :func:`load_study`).

    ``substitute_env=False`` leaves ``${NAME}`` references as written (to validate a file that will be
    written out with them, as export does).
    """
    file = Path(file)
    if not isinstance(data, dict):
        raise ConfigError(file, "", "the study file must be a mapping with study, objective (and search, tracking)")
    if substitute_env:
        data = _substitute_env(data, file)
    for key, value in (overrides or {}).items():
        if value is not None:
            section, _, name = key.partition(".")
            data.setdefault(section, {})
            if isinstance(data[section], dict):
                data[section] = {**data[section], name: value}
    try:
        sf = StudyFile.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        key = _error_key(data, tuple(err["loc"]))
        if err["type"] == "union_tag_invalid":  # name the tag's own key: study.sampler.type, objective.loop
            node = _get_path(data, key)[1] if key else data
            tag_key = "loop" if isinstance(node, dict) and "loop" in node else "type"
            key = f"{key}.{tag_key}" if key else tag_key
        raise ConfigError(file, key, _message(err)) from None
    check_study(sf, file)
    return sf


def load_study(path: str | Path, overrides: Mapping[str, Any] | None = None) -> StudyFile:
    """Read, parse and check a study file.

    Args:
        path: The YAML file.
        overrides: ``{"study.n_trials": 5, ...}``; ``None`` values are ignored.

    Raises:
        ConfigError: anything wrong, named by file and key.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(path, "", f"cannot read: {e.strerror}") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "yaml"
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(path, where, f"YAML syntax error: {problem}") from None
    return parse_study(data, path, overrides)


# --- semantic checks ------------------------------------------------------------------------------


def infer_direction(metric: str) -> Direction | None:
    if metric.endswith("_loss"):
        return "minimize"
    if metric.endswith("_acc"):
        return "maximize"
    return None


def target_metrics(loop: str, problem_metrics: tuple[str, ...] | None, n_losses: int = 2) -> tuple[str, ...] | None:
    """Validation metrics a loop logs that may be a search target (``None``: known after build).

    Both loops log ``val_total_loss`` (the unweighted sum of the a and b validation losses) and each
    loss's validation value; the dual-loss loop logs task metrics for both tasks, the alternating loop
    for B's (final) output.
    """
    if problem_metrics is None:
        return None
    names = ["val_total_loss", *(f"val_{t}_loss" for t in LOSS_NAMES[loop][:n_losses])]
    tasks = ("a", "b") if loop == "dual_loss" else ("b",)
    names += [f"val_{t}_{m}" for t in tasks for m in problem_metrics]
    return tuple(names)


def refuse_reason(metric: str) -> str | None:
    """Why a metric may not be a search target, or ``None`` if it may."""
    if "weighted" in metric:
        return (
            f"{metric} is computed with the searched loss weights, so the search would reward the weights "
            "themselves (e.g. shrinking the weight of the larger loss) instead of a better model; name an "
            "unweighted validation metric such as val_total_loss, val_a_loss or val_b_acc"
        )
    if metric.startswith("weight_") or metric == "lr" or metric.startswith("lr_"):
        return f"{metric} is a hyperparameter the trial sets, not a result; name a validation metric (val_...)"
    if metric.startswith("train_"):
        return f"{metric} measures fit to the training data; name a validation metric (val_...)"
    if not metric.startswith("val_"):
        return f"{metric} is not a validation metric; name one of the val_... metrics the loop logs"
    return None


def check_target(study: StudySection, allowed: tuple[str, ...] | None, file: str | Path) -> None:
    """Refuse targets computed with the searched weights, unknown metrics and wrong directions."""
    key = "study.metric"
    if len(set(study.metric)) != len(study.metric):
        raise ConfigError(file, key, "a metric is named twice")
    for metric in study.metric:
        reason = refuse_reason(metric)
        if reason:
            raise ConfigError(file, key, reason)
        if allowed is not None and metric not in allowed:
            raise ConfigError(file, key, f"unknown metric {metric!r}; this objective logs {', '.join(allowed)}")
    if study.direction is not None:
        if len(study.direction) != len(study.metric):
            raise ConfigError(
                file, "study.direction", f"{len(study.direction)} directions for {len(study.metric)} metrics"
            )
        for metric, direction in zip(study.metric, study.direction, strict=True):
            inferred = infer_direction(metric)
            if inferred and inferred != direction:
                raise ConfigError(file, "study.direction", f"{direction} for {metric} would search for the worst model")
    else:
        for metric in study.metric:
            if infer_direction(metric) is None:
                raise ConfigError(file, "study.direction", f"cannot infer the direction for {metric}; give it")


def _get_path(data: Mapping[str, Any], path: str) -> tuple[bool, Any]:
    node: Any = data
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


# Config nodes that are discriminated unions: choosing another ``type`` drops the old type's options.
UNION_KEYS = ("schedule", "weighting", "weight_schedule")
UNION_SHARED = ("target",)


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


_NOT_SEARCHABLE = {"loop", "seed", "data_seed", "device", "weights", "problem", "problem.name"}


def _probe_values(spec: FloatParam | IntParam | CategoricalParam) -> list[Any]:
    if isinstance(spec, CategoricalParam):
        return list(spec.choices)
    return [spec.low, spec.high, *(spec.grid or ())]


def _check_when(
    when: Mapping[str, Any] | None,
    declared: Mapping[str, FloatParam | IntParam | CategoricalParam],
    file: str | Path,
    key: str,
    what: str,
) -> None:
    """A condition names searched parameters (declared before it) and, for categoricals, their choices."""
    for ref, wanted in (when or {}).items():
        if ref not in declared:
            raise ConfigError(file, f"{key}.when.{ref}", f"{ref!r} is not {what}")
        ref_spec = declared[ref]
        if isinstance(ref_spec, CategoricalParam):
            for v in wanted if isinstance(wanted, list) else [wanted]:
                if v not in ref_spec.choices:
                    raise ConfigError(file, f"{key}.when.{ref}", f"{v!r} is not one of {list(ref_spec.choices)}")


def check_study(sf: StudyFile, file: str | Path) -> None:
    """Checks that need more than one key: search paths, conditions, problem, target, sampler."""
    # The problem and its options (imports a user module:function, which runs the user's code).
    try:
        problem_metrics = check_problem(sf.objective.problem.name, sf.objective.problem.options, sf.objective.loop)
    except ProblemError as e:
        key = "objective.problem.options." + e.key if e.key else "objective.problem"
        raise ConfigError(file, key, str(e)) from None

    allowed = target_metrics(sf.objective.loop, problem_metrics, len(sf.objective.weights))
    check_target(sf.study, allowed, file)

    # Multi-objective studies cannot be pruned (Trial.report raises in Optuna).
    if sf.study.multi_objective and sf.study.pruner is not None and sf.study.pruner.type != "none":
        raise ConfigError(file, "study.pruner", "Optuna cannot prune multi-objective studies; remove the pruner")
    if sf.study.sampler.type == "nsga2" and not sf.study.multi_objective:
        pass  # NSGA-II works single-objective too, if rarely the best choice.

    # Every searched path exists in the objective and every probe value validates there.
    base = sf.objective.model_dump(mode="json")
    declared: dict[str, FloatParam | IntParam | CategoricalParam] = {}
    for path, spec in sf.search.params.items():
        key = f"search.params.{path}"
        if path in _NOT_SEARCHABLE or path.startswith(("weights.", "seed.")):
            hint = " (use search.weights)" if path.startswith("weights") else ""
            raise ConfigError(file, key, f"{path} cannot be searched{hint}")
        option = path.removeprefix("problem.options.")
        builtin = BUILTINS.get(sf.objective.problem.name)
        if path.startswith("problem.options.") and builtin is not None and option not in builtin.model_options:
            allowed = ", ".join(builtin.model_options) or "none"
            raise ConfigError(
                file,
                key,
                f"{option} changes the data the trials are validated on, so their values would not be comparable "
                f"(the search could reward an easier problem); searchable options of {sf.objective.problem.name}: "
                f"{allowed}",
            )
        exists, _ = _get_path(base, path)
        under_union = any(f"{u}." in f".{path}" for u in UNION_KEYS)  # options of a type chosen by search
        if not exists and not path.startswith("problem.options.") and not under_union:
            raise ConfigError(file, key, f"objective has no key {path!r}")
        _check_when(spec.when, declared, file, key, f"a searched parameter declared before {path!r}")
        # Probe in the context the parameter is sampled in: its conditions' values applied first.
        context = base
        for ref, wanted in (spec.when or {}).items():
            first = wanted[0] if isinstance(wanted, list) else wanted
            context = set_path(context, ref, first)
        for value in _probe_values(spec):
            probe = set_path(context, path, value)
            try:
                cfg = type(sf.objective).model_validate(probe)
                if path.startswith("problem.options."):
                    check_problem(cfg.problem.name, cfg.problem.options, cfg.loop)
            except ValidationError as e:
                raise ConfigError(file, key, f"value {value!r}: {_message(e.errors()[0])}") from None
            except ProblemError as e:
                raise ConfigError(file, key, f"value {value!r}: {e}") from None
        declared[path] = spec

    _check_when(sf.search.weights.when, declared, file, "search.weights", "a searched parameter")

    if sf.study.sampler.type == "grid":
        for path, spec in sf.search.params.items():
            if spec.when:
                raise ConfigError(file, f"search.params.{path}.when", "the grid sampler cannot take conditions")
            if isinstance(spec, FloatParam) and spec.grid is None and spec.step is None:
                raise ConfigError(file, f"search.params.{path}", "the grid sampler needs grid: [...] or step")
        w = sf.search.weights
        if w.parametrization == "simplex":
            raise ConfigError(file, "search.weights", "the grid sampler needs log_ratio with grid: [...]")
        if w.parametrization == "log_ratio" and not w.grid:
            raise ConfigError(file, "search.weights.grid", "the grid sampler needs a list of log10 ratios")
