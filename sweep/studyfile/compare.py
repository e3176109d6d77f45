"""Equal-budget comparisons: ``study.compare: weighting.type`` runs one sub-study per choice.

A single study whose trials pick the method (``weighting.type``) gives each method whatever share of
the trials the sampler happens to give it, so the method the sampler favours is tuned most and looks
best. A comparison gives every choice the same budget instead: one Optuna study per choice, named
``<study>.<choice>``, each with ``n_trials`` trials, the same sampler seed and the same search over the
other parameters (the compared key fixed to that choice; options that apply only to other choices drop
out through their ``when``). All of them record in one MLflow experiment, each sub-study's parent run
nested under one comparison run (:func:`sweep.tracking.lineage.nest_under_comparison`), so the UI shows the
comparison as one tree. This module holds what the study file says: the sub-studies (:func:`members`).

:func:`sweep.results.results.recorded` and :func:`sweep.results.results.table` read each sub-study's storage
(and the test-set evaluation that :mod:`sweep.evaluate` recorded there)
into the table docs/howto/compare-and-evaluate.md shows.
"""

from __future__ import annotations

from dataclasses import dataclass

from sweep.core.records import experiment_name
from sweep.studyfile.config import StudyFile
from sweep.studyfile.search_checks import label_of
from sweep.studyfile.sections import TrackingSection


class MemberTracking(TrackingSection):
    """A sub-study's ``tracking:``: the comparison's, with the choice (``weighting.type=dwa``) that
    :class:`sweep.tracking.tracking.Tracker` puts in front of its trial runs' names (``weighting.type=dwa · trial-3``),
    so that the shared experiment's runs tell the choices apart. Plain studies' runs stay ``trial-3``."""

    choice: str


@dataclass(frozen=True)
class Member:
    """One compared choice: its value, as written and as a name part, and its sub-study's file."""

    value: object
    label: str
    sf: StudyFile


def members(sf: StudyFile) -> list[Member]:
    """The sub-studies of a comparison, in the order of the choices (``[]`` for a plain study).

    Each is ``sf`` with ``study.name`` = ``<name>.<choice>``, the compared parameter a one-choice
    categorical (so it is still recorded as a parameter of every trial) and the MLflow experiment
    shared (``tracking.experiment``, default the comparison's name; :class:`MemberTracking`).
    """
    key = sf.study.compare
    if key is None:
        return []
    spec = sf.search.params[key]
    experiment = experiment_name(sf.tracking.experiment, sf.study.name)
    out = []
    for value in spec.choices:  # type: ignore[union-attr]
        label = label_of(value)
        params = {**sf.search.params, key: spec.model_copy(update={"choices": (value,)})}
        tracking = {**sf.tracking.model_dump(), "experiment": experiment, "choice": f"{key}={value}"}
        sub = sf.model_copy(
            update={
                "study": sf.study.model_copy(update={"name": f"{sf.study.name}.{label}", "compare": None}),
                "search": sf.search.model_copy(update={"params": params}),
                "tracking": MemberTracking(**tracking),
            }
        )
        out.append(Member(value, label, sub))
    return out


def member(sf: StudyFile, label: str) -> Member:
    """The sub-study of one choice (``--compare-value``).

    Raises:
        ValueError: no such choice.
    """
    for m in members(sf):
        if label in (m.label, str(m.value)):
            return m
    known = ", ".join(m.label for m in members(sf))
    raise ValueError(f"--compare-value {label}: not a choice of {sf.study.compare} ({known})")
