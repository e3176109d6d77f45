"""Whether a study file may add trials to a study that already has some: its trials must stay comparable.

A resumed study keeps the settings of its first run (stored on the Optuna study). A file that changes
what the trials compute (targets, objective, search space) is refused, naming the first setting that
differs, unless ``--allow-changes``. Settings that change only how fast a trial trains — the device,
``compile``, the DataLoader's workers, pinning and prefetching (batches do not depend on them) — are
accepted with one note line.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import optuna

from objectives.config import LoopCommon
from sweep.core.errors import ConfigError, to_stderr
from sweep.core.records import Attr
from sweep.studyfile.sections import StudySection
from sweep.studyfile.space import SearchSection
from sweep.tracking.tracking import flatten

# How fast, not what: the same batches in the same order, the same arithmetic (up to floating-point
# rounding on another device or under a compiler).
SPEED_ONLY = (
    "objective.device",
    "objective.compile",
    "objective.data.num_workers",
    "objective.data.pin_memory",
    "objective.data.persistent_workers",
    "objective.data.prefetch_factor",
)


def settings(section: StudySection, objective: LoopCommon, search: SearchSection) -> dict[str, str]:
    """What makes a study's trials comparable, flattened: the targets, the objective as written (less its
    searched paths) and the search space. Not: n_trials, timeout, sampler, pruner, storage, tracking."""
    study = {"metric": list(section.metric), "direction": list(section.directions), "score": section.score}
    fixed = {k: v for k, v in flatten(objective.model_dump(mode="json")).items() if k not in search.params}
    space = search.model_dump(mode="json")
    tree = {"study": {**study, "seed": section.seed}, "objective": fixed, "search": space}
    return {k: str(v) for k, v in flatten(tree).items()}


def speed_only(key: str) -> bool:
    """Whether setting ``key`` (flattened, e.g. ``objective.compile.mode``) changes speed, not results."""
    return any(key == p or key.startswith(f"{p}.") for p in SPEED_ONLY)


def check_unchanged(
    study: optuna.Study, now: Mapping[str, str], source: Path, allow_changes: bool, note: bool = True
) -> None:
    """Refuse to add trials to a study whose file changed what its trials are compared on; ``note``: say
    which speed-only settings changed (one process of several says it).

    Args:
        study: The stored study (its first run's settings are a user attribute).
        now: The study file's :func:`settings`.
        source: The study file (named in the error).
        allow_changes: Add trials anyway (``--allow-changes``).
        note: Say which speed-only settings changed.

    Raises:
        ConfigError: naming the first setting that differs from the study's first run.
    """
    stored = study.user_attrs.get(Attr.SETTINGS)
    if stored is None:
        study.set_user_attr(Attr.SETTINGS, dict(now))
        return
    changed = sorted(k for k in set(stored) | set(now) if stored.get(k) != now.get(k))
    faster = [k for k in changed if speed_only(k)]
    changed = [k for k in changed if not speed_only(k)]
    if changed and not allow_changes:
        key = changed[0]
        more = f" (and {len(changed) - 1} more)" if len(changed) > 1 else ""
        raise ConfigError(
            source,
            key,
            f"is {now.get(key, '(absent)')} here but {stored.get(key, '(absent)')} in study {study.study_name!r}'s "
            f"earlier runs{more}: its trials would not be comparable; use a new --study-name, or "
            "--allow-changes to add trials anyway",
        )
    if faster and note:
        to_stderr(
            f"note: {', '.join(faster)} changed since study {study.study_name!r}'s earlier runs: that changes how fast "
            "trials train, not what they compute, so they stay comparable"
        )
