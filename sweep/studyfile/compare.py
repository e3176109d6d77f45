"""Equal-budget comparisons: ``study.compare: weighting.type`` runs one sub-study per choice.

A single study whose trials pick the method (``weighting.type``) gives each method whatever share of
the trials the sampler happens to give it, so the method the sampler favours is tuned most and looks
best. A comparison gives every choice the same budget instead: one Optuna study per choice, named
``<study>.<choice>``, each with ``n_trials`` trials, the same sampler seed and the same search over the
other parameters (the compared key fixed to that choice; options that apply only to other choices drop
out through their ``when``). All of them record in one MLflow experiment, each sub-study's parent run
nested under one comparison run, so the UI shows the comparison as one tree.

:func:`sweep.results.recorded` and :func:`sweep.results.table` read each sub-study's storage (and the
test-set evaluation that :mod:`sweep.evaluate` recorded there) into the table README shows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sweep.config import StudyFile, TrackingSection
from sweep.search_checks import label_of


class MemberTracking(TrackingSection):
    """A sub-study's ``tracking:``: the comparison's, with the choice (``weighting.type=dwa``) that
    :class:`sweep.tracking.Tracker` puts in front of its trial runs' names (``weighting.type=dwa · trial-3``),
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
    experiment = sf.tracking.experiment or sf.study.name
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


def nest_under_comparison(sf: StudyFile, parent_ids: Sequence[str]) -> str:
    """Make (or find) the comparison's MLflow run and nest the sub-studies' parent runs under it. Runs of
    the same comparison that end together may each make one: all keep the earliest, the others are deleted."""
    from mlflow.tracking import MlflowClient

    from sweep.tracking import quiet_mlflow
    from sweep.urls import absolute_sqlite

    quiet_mlflow()
    client = MlflowClient(tracking_uri=absolute_sqlite(sf.tracking.uri))
    name = sf.tracking.experiment or sf.study.name
    experiment = client.get_experiment_by_name(name)
    assert experiment is not None, "the sub-studies created it"
    tags = {"sweep.role": "comparison", "sweep.study_name": sf.study.name}

    def earliest() -> str | None:
        found = client.search_runs(
            [experiment.experiment_id],
            filter_string=f"tags.`sweep.role` = 'comparison' and tags.`sweep.study_name` = '{sf.study.name}'",
            max_results=100,
        )
        return min(((r.info.start_time, r.info.run_id) for r in found), default=(0, None))[1]

    run_id = earliest()
    if run_id is None:
        run = client.create_run(experiment.experiment_id, run_name=sf.study.name, tags=tags)
        run_id = run.info.run_id
        client.log_param(run_id, "compare", sf.study.compare)
        client.set_terminated(run_id)
        first = earliest()
        if first is not None and first != run_id:  # another process made one first: keep that one
            client.delete_run(run_id)
            run_id = first
    for parent in parent_ids:
        client.set_tag(parent, "mlflow.parentRunId", run_id)
    return run_id
