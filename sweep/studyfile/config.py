"""The study file: YAML → typed, frozen config objects, checked before anything is created. Every error is a
:class:`~sweep.core.errors.ConfigError` naming the file and the key (``search.params.optimizer.lr.low``); the CLI
prints it as one line and exits 2. The sections' schemas live beside what uses them (:mod:`.sections`,
:mod:`.samplers`, :mod:`.space`, :mod:`objectives.config` through the loop's record in ``objectives.loops.LOOPS``)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    Field,
    SerializeAsAny,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
)
from pydantic_core import PydanticCustomError

from objectives.config import LoopCommon
from objectives.frozen import Frozen
from objectives.loops import LOOPS
from objectives.problems import BUILTINS, ProblemError, check_problem
from sweep.core.errors import ConfigError, pydantic_message
from sweep.core.urls import forget_secrets, remember_credentials, stored_credential
from sweep.studyfile.search_checks import check_compare, check_enqueued, check_param_names, check_search
from sweep.studyfile.sections import EvaluateSection, StudySection, TrackingSection
from sweep.studyfile.space import Scalar, SearchSection, get_path
from sweep.studyfile.studyyaml import check_numbers, expand_env, read_study_yaml
from sweep.studyfile.targets import check_target

DEFAULT_LOOP = "dual_loss"


class StudyFile(Frozen):
    """A whole study file (its sections' schemas; the checks across sections are :func:`check_study`'s)."""

    study: StudySection = Field(description="what Optuna optimises, how it samples and prunes, and where it stores it")
    tracking: TrackingSection = Field(
        TrackingSection(), description="where MLflow records the study (one parent run, one child run per trial)"
    )
    objective: SerializeAsAny[LoopCommon] = Field(
        description="what a trial trains: the config of the loop it names (`loop`, default `dual_loss`); every "
        "value is fixed unless `search` samples it"
    )
    search: SearchSection = Field(
        SearchSection(), description="the search space: which `objective` values each trial samples, and how"
    )
    evaluate: EvaluateSection | None = Field(
        None,
        description="optional: once the search (every sub-study of a comparison) is done, `sweep.run` retrains the "
        "`top` trials (of each choice) with `seeds` fresh seeds and scores them on the problem's test split, as "
        "`python -m sweep.evaluate` does (`--no-evaluate` skips it)",
    )
    provenance: dict[str, Scalar | list[Scalar]] | None = Field(
        None,
        description="written by `sweep.export`: where a replay came from (study, storage, trial number, value(s), "
        "the rule that chose it, its MLflow run id, package versions); recorded as tags of the parent run",
    )

    @field_validator("objective", mode="wrap")
    @classmethod
    def _loop_config(cls, v: Any, handler: ValidatorFunctionWrapHandler) -> LoopCommon:
        """Validate ``objective`` as the config type of the loop it names (the loop registry decides)."""
        if not isinstance(v, dict):
            return handler(v)
        name = v.get("loop", DEFAULT_LOOP)
        if name not in LOOPS:
            expected = ", ".join(repr(n) for n in LOOPS)
            raise PydanticCustomError("union_tag_invalid", "unknown loop", {"tag": name, "expected_tags": expected})
        return LOOPS[name].config.model_validate(v)


# --- loading --------------------------------------------------------------------------------------


def _check_coerced(value: Any, raw: Any, file: Path, key: str, unexpanded: Any = None) -> None:
    """Compare a validated value with what the file wrote: pydantic's lax mode reads ``yes``/``true`` as
    the number 1 (``n_trials: yes``), the strings ``"nan"``/``"inf"`` as floats and the string ``"2"`` as
    2; refuse them. ``unexpanded`` is the file before ``${NAME}`` expansion: a string that came from the
    environment (``n_trials: ${N_TRIALS}``) may still give a number."""
    if isinstance(value, BaseModel):
        if isinstance(raw, dict):
            for name in type(value).model_fields:
                if name in raw:
                    _check_coerced(getattr(value, name), raw[name], file, f"{key}.{name}" if key else name,
                                   _at(unexpanded, name))  # fmt: skip
    elif isinstance(value, tuple | list) and isinstance(raw, list) and len(value) == len(raw):
        for i, (v, r) in enumerate(zip(value, raw, strict=True)):
            _check_coerced(v, r, file, f"{key}.{i}", _at(unexpanded, i))
    elif isinstance(value, dict) and isinstance(raw, dict):
        for k, v in value.items():
            if k in raw:
                _check_coerced(v, raw[k], file, f"{key}.{k}", _at(unexpanded, k))
    elif isinstance(raw, bool) and isinstance(value, int | float) and not isinstance(value, bool):
        written = "true" if raw else "false"
        raise ConfigError(
            file, key, f"expected a number, got the boolean {written} (YAML reads yes/no/on/off as booleans)"
        )
    elif isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(file, key, f"{value} is not a usable number: give a finite value")
    elif isinstance(raw, str) and isinstance(value, int | float) and raw == unexpanded:  # quoted, not ${NAME}
        what = "a boolean" if isinstance(value, bool) else "a number"
        raise ConfigError(file, key, f"expected {what}, got the string {raw!r}: write it without quotes")


def _at(node: Any, part: str | int) -> Any:
    """``node[part]`` of a parsed YAML tree, ``None`` where there is none."""
    if isinstance(node, dict) or (isinstance(node, list) and isinstance(part, int) and part < len(node)):
        return node.get(part) if isinstance(node, dict) else node[part]
    return None


def _error_key(data: Any, loc: tuple[Any, ...]) -> str:
    """Dotted key of a pydantic error location, skipping union tags that are not in the input."""
    parts: list[str] = []
    node = data
    for part in loc:
        if isinstance(node, dict) and part not in node and part in (node.get("type"), node.get("loop", DEFAULT_LOOP)):
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
    unexpanded = data
    if substitute_env:
        forget_secrets()  # this file's secrets, from here on known by value (masked, sealed in storage)
        data = expand_env(data, file)
        remember_credentials(data)
    check_numbers(data, file)
    for key, value in (overrides or {}).items():
        if value is not None:
            section, _, name = key.partition(".")
            data.setdefault(section, {})
            if isinstance(data[section], dict):
                data[section] = {**data[section], name: value}
    data = _builtin_tasks(data)
    try:
        sf = StudyFile.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        key = _error_key(data, tuple(err["loc"]))
        if err["type"] == "union_tag_invalid":  # name the tag's own key: study.sampler.type, objective.loop
            node = get_path(data, key)[1] if key else data
            tag_key = "loop" if isinstance(node, dict) and "loop" in node else "type"
            key = f"{key}.{tag_key}" if key else tag_key
        raise ConfigError(file, key, pydantic_message(err)) from None
    _check_coerced(sf, data, file, "", unexpanded)
    check_study(sf, file)
    return sf


def _builtin_tasks(data: dict[str, Any]) -> dict[str, Any]:
    """A dual-loss built-in with tasks other than ``a``, ``b`` names them in ``objective.tasks`` when the
    file does not (nor gives its weights by task name): the config then says which weight is whose."""
    objective = data.get("objective")
    if not isinstance(objective, dict) or objective.get("loop", "dual_loss") != "dual_loss":
        return data
    problem = objective.get("problem")
    name = problem.get("name") if isinstance(problem, dict) else problem
    builtin = BUILTINS.get(name) if isinstance(name, str) else None
    if builtin is None or builtin.tasks == ("a", "b") or "tasks" in objective:
        return data
    if isinstance(objective.get("weights"), dict):
        return data
    return {**data, "objective": {**objective, "tasks": list(builtin.tasks)}}


def load_study(path: str | Path, overrides: Mapping[str, Any] | None = None) -> StudyFile:
    """Read, parse and check a study file.

    Args:
        path: The YAML file.
        overrides: ``{"study.n_trials": 5, ...}``; ``None`` values are ignored.

    Raises:
        ConfigError: anything wrong, named by file and key.
    """
    path = Path(path)
    data = read_study_yaml(path)
    return parse_study(data, path, overrides)


# --- checks across sections -----------------------------------------------------------------------


def check_study(sf: StudyFile, file: str | Path) -> None:
    """Checks that need more than one key: the problem, the target, pruning, the search space."""
    # The problem and its options (imports a user module:function, which runs the user's code).
    objective = sf.objective
    loop = LOOPS[objective.loop]
    try:
        declared = check_problem(objective.problem.name, objective.problem.options, loop.name, loop.problem)
    except ProblemError as e:
        key = "objective.problem.options." + e.key if e.key else "objective.problem"
        raise ConfigError(file, key, str(e)) from None

    # A built-in's tasks and metrics are known now; a user problem's once it is built (checked again before a run).
    builtin = BUILTINS.get(objective.problem.name)
    if builtin is not None and loop.name == "dual_loss" and set(objective.loss_terms) != set(builtin.tasks):
        why = f"{objective.problem.name}'s tasks are [{', '.join(builtin.tasks)}], not {list(objective.loss_terms)}"
        raise ConfigError(file, "objective.tasks", why)
    n_losses = len(objective.weights)
    names = loop.problem.declared_metric_names(declared or (), objective.loss_terms)
    allowed = None if declared is None else loop.targets(names, n_losses)
    check_target(sf.study.metric, sf.study.direction, allowed, file)

    # Optuna fails a trial whose heartbeat is older than the grace period: a live worker's too, if it is short.
    beat, grace = sf.study.heartbeat_interval, sf.study.grace_period
    if grace < 2 * beat:
        why = f"must be at least 2 × heartbeat_interval ({2 * beat} s, Optuna's default), or live workers fail"
        raise ConfigError(file, "study.grace_period", f"{grace} s: {why} each other's trials as stale")

    # Multi-objective studies cannot be pruned (Trial.report raises in Optuna), and have no one best epoch.
    if sf.study.multi_objective and sf.study.pruner is not None and sf.study.pruner.type != "none":
        raise ConfigError(file, "study.pruner", "Optuna cannot prune multi-objective studies; remove the pruner")
    if sf.study.multi_objective and sf.study.score == "best":
        raise ConfigError(file, "study.score", "a multi-objective study has no single best epoch; use score: last")
    if sf.study.multi_objective and objective.early_stopping is not None:
        raise ConfigError(file, "objective.early_stopping", "a multi-objective study has no single target to stop on")

    _check_device(objective.device, file)
    if (why := stored_credential(sf.tracking.artifact_location or "")) is not None:
        raise ConfigError(file, "tracking.artifact_location", why)
    check_search(sf.search, objective, sf.study.sampler is not None and sf.study.sampler.type == "grid", file)
    check_param_names(objective, sf.search, file)
    check_compare(sf.study.compare, sf.study.name, sf.search, sf.study.enqueue or (), file)
    check_enqueued(sf.study.enqueue or (), sf.search, objective.loss_terms, file)


def _check_device(device: str, file: str | Path) -> None:
    """A device named explicitly must exist on this machine (``auto`` picks one that does)."""
    import torch

    if device.startswith("cuda"):
        number = re.fullmatch(r"cuda(?::(\d{1,4}))?", device)
        if number is None:
            raise ConfigError(
                file, "objective.device", f"unknown device {device!r}: use auto, cpu, cuda, cuda:N or mps"
            )
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(number[1] or 0)
        if index >= count:
            have = f"{count} CUDA device(s)" if count else "no CUDA device"
            raise ConfigError(file, "objective.device", f"{device}: this machine has {have}; use auto or cpu")
    if device == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(file, "objective.device", "mps: not available on this machine; use auto or cpu")
