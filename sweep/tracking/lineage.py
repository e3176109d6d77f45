"""Where a study's MLflow runs stand beside other studies' runs: a comparison's run above the parent runs of
its sub-studies (:func:`nest_under_comparison`), and a replay's trial runs named after the trial they replay
(:func:`replay_run_prefix`), so neither reads as an unrelated study in the shared experiment.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sweep.core.records import Role, Tag, experiment_name, runs_filter
from sweep.core.urls import absolute_sqlite
from sweep.studyfile.sections import StudySection, TrackingSection
from sweep.tracking.tracking import quiet_mlflow


def replay_run_prefix(provenance: Mapping[str, Any] | None) -> str:
    """What a study file's trial runs are named with, in front of ``trial-<number>`` (as a comparison's
    choice is, :attr:`sweep.tracking.tracking.Tracker.run_prefix`): ``replay of <study> trial-<N> · `` for a
    file ``sweep.export`` wrote (its ``provenance`` names the study and trial it replays), nothing for any other;
    so a replay's run is not a second ``trial-0`` beside the original's.

    Args:
        provenance: The study file's ``provenance`` section (``StudyFile.provenance``), or ``None``.
    """
    if not provenance or "trial" not in provenance:
        return ""
    return f"replay of {provenance.get('study')} trial-{provenance['trial']} · "


def nest_under_comparison(tracking: TrackingSection, study: StudySection, parent_ids: Sequence[str]) -> str:
    """Make (or find) the comparison's MLflow run and nest the sub-studies' parent runs under it. Runs of
    the same comparison that end together may each make one: all keep the earliest, the others are deleted."""
    from mlflow.tracking import MlflowClient

    quiet_mlflow()
    client = MlflowClient(tracking_uri=absolute_sqlite(tracking.uri))
    name = experiment_name(tracking.experiment, study.name)
    experiment = client.get_experiment_by_name(name)
    assert experiment is not None, "the sub-studies created it"
    tags = {Tag.ROLE: Role.COMPARISON, Tag.STUDY_NAME: study.name}

    def earliest() -> str | None:
        found = client.search_runs(
            [experiment.experiment_id],
            filter_string=runs_filter(Role.COMPARISON, study.name),
            max_results=100,
        )
        return min(((r.info.start_time, r.info.run_id) for r in found), default=(0, None))[1]

    run_id = earliest()
    if run_id is None:
        run = client.create_run(experiment.experiment_id, run_name=study.name, tags=tags)
        run_id = run.info.run_id
        client.log_param(run_id, "compare", study.compare)
        client.set_terminated(run_id)
        first = earliest()
        if first is not None and first != run_id:  # another process made one first: keep that one
            client.delete_run(run_id)
            run_id = first
    for parent in parent_ids:
        client.set_tag(parent, "mlflow.parentRunId", run_id)
    return run_id
