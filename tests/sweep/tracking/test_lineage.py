"""``sweep.tracking.lineage``: a replay's trial runs named after what they replay, and a comparison's run made
once above its sub-studies' parent runs (found again, the earliest kept when two are made)."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from sweep.core.records import Role, Tag, runs_filter
from sweep.studyfile.compare import MemberTracking
from sweep.studyfile.sections import StudySection, TrackingSection
from sweep.tracking.lineage import nest_under_comparison, replay_run_prefix
from sweep.tracking.tracking import Tracker


def test_a_replays_run_is_named_after_what_it_replays() -> None:
    """The name an exported file's trial runs get (its provenance), not ``trial-0`` beside the original."""
    assert replay_run_prefix({"study": "quickstart", "trial": 7}) == "replay of quickstart trial-7 · "
    assert replay_run_prefix(None) == replay_run_prefix({}) == ""  # not a replay: trial-<number>


def test_a_replay_of_trial_zero_is_a_replay_and_a_file_without_a_trial_is_not() -> None:
    """Trial number 0 still names a replay; provenance without a trial number names none."""
    assert replay_run_prefix({"study": "cmp.dwa", "trial": 0}) == "replay of cmp.dwa trial-0 · "
    assert replay_run_prefix({"study": "s", "mlflow_run_id": "abc"}) == ""  # provenance, but no trial


def _sub_studies(uri: str, name: str, choices: tuple[str, ...], experiment: str | None = None) -> list[str]:
    """The parent runs of a comparison's sub-studies, made as each sub-study's session makes its own."""
    parents = []
    for choice in choices:
        tracking = MemberTracking(uri=uri, experiment=experiment or name, choice=f"weighting.type={choice}")
        parents.append(Tracker(tracking, optuna.create_study(study_name=f"{name}.{choice}")).parent_id)
    return parents


def _comparison_runs(client: MlflowClient, experiment: str, name: str, view: int = ViewType.ACTIVE_ONLY) -> list:
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], runs_filter(Role.COMPARISON, name), run_view_type=view)


@pytest.fixture
def uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_the_comparison_run_is_made_once_above_its_sub_studies(uri: str) -> None:
    """One finished run named and tagged for the comparison, with the compared key as param; every sub-study's
    parent run nested under it; a second call (a resume, another process) finds it instead of making one."""
    parents = _sub_studies(uri, "cmp", ("static", "dwa"))
    study = StudySection(name="cmp", compare="weighting.type")
    run_id = nest_under_comparison(TrackingSection(uri=uri), study, parents)
    client = MlflowClient(uri)
    run = client.get_run(run_id)
    assert run.info.run_name == "cmp" and run.info.status == "FINISHED"
    assert run.data.tags[Tag.ROLE] == Role.COMPARISON and run.data.tags[Tag.STUDY_NAME] == "cmp"
    assert run.data.params == {"compare": "weighting.type"}
    assert [client.get_run(p).data.tags["mlflow.parentRunId"] for p in parents] == [run_id, run_id]

    assert nest_under_comparison(TrackingSection(uri=uri), study, parents[:1]) == run_id
    assert [r.info.run_id for r in _comparison_runs(client, "cmp", "cmp")] == [run_id]


def test_comparisons_sharing_an_experiment_each_get_their_own_run(uri: str) -> None:
    """``tracking.experiment: shared`` for two comparisons: each finds its own run, by its study name."""
    first = _sub_studies(uri, "one", ("static", "dwa"), experiment="shared")
    second = _sub_studies(uri, "two", ("static", "dwa"), experiment="shared")
    tracking = TrackingSection(uri=uri, experiment="shared")
    one = nest_under_comparison(tracking, StudySection(name="one", compare="weighting.type"), first)
    two = nest_under_comparison(tracking, StudySection(name="two", compare="weighting.type"), second)
    assert one != two
    client = MlflowClient(uri)
    assert {client.get_run(p).data.tags["mlflow.parentRunId"] for p in second} == {two}
    assert {client.get_run(p).data.tags["mlflow.parentRunId"] for p in first} == {one}


def test_when_two_processes_make_the_run_the_earliest_is_kept(uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process makes the comparison's run between this one's search and its own create: this one
    deletes its run and nests the parents under the other's, which started earlier."""
    parents = _sub_studies(uri, "cmp", ("static", "dwa"))
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("cmp").experiment_id
    tags = {Tag.ROLE: Role.COMPARISON, Tag.STUDY_NAME: "cmp"}
    made: list[str] = []
    create = MlflowClient.create_run

    def other_process_first(self: MlflowClient, *args: object, **kwargs: object) -> object:
        if not made:
            other = create(self, experiment, start_time=1, run_name="cmp", tags=tags)  # the earlier one
            made.append(other.info.run_id)
        ours = create(self, *args, **kwargs)  # type: ignore[arg-type]
        made.append(ours.info.run_id)
        return ours

    monkeypatch.setattr(MlflowClient, "create_run", other_process_first)
    kept = nest_under_comparison(TrackingSection(uri=uri), StudySection(name="cmp", compare="weighting.type"), parents)
    monkeypatch.undo()
    other, ours = made
    assert kept == other
    assert client.get_run(ours).info.lifecycle_stage == "deleted"
    assert [r.info.run_id for r in _comparison_runs(client, "cmp", "cmp")] == [other]
    assert {client.get_run(p).data.tags["mlflow.parentRunId"] for p in parents} == {other}


def test_of_two_runs_already_made_the_earliest_is_found(uri: str) -> None:
    """Two comparison runs left in the store (two processes that each kept their own): every later call
    takes the earliest, so all sub-studies end up under one."""
    parents = _sub_studies(uri, "cmp", ("static", "dwa"))
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("cmp").experiment_id
    tags = {Tag.ROLE: Role.COMPARISON, Tag.STUDY_NAME: "cmp"}
    late = client.create_run(experiment, start_time=2_000, run_name="cmp", tags=tags).info.run_id
    early = client.create_run(experiment, start_time=1_000, run_name="cmp", tags=tags).info.run_id
    assert late != early
    study = StudySection(name="cmp", compare="weighting.type")
    assert nest_under_comparison(TrackingSection(uri=uri), study, parents) == early
