"""The study file's own sections (``study``, ``tracking``, ``evaluate``) as models: their defaults, spellings,
inferred directions and bounds, checked on the models directly (the whole-file table with its one-line errors is
``test_config.py``'s)."""

from __future__ import annotations

import pydantic
import pytest

from sweep.studyfile.sections import MAX_TIMEOUT, EvaluateSection, StudySection, TrackingSection


def test_a_study_has_defaults_for_all_but_its_name() -> None:
    """Only the name is required: the total validation loss, minimised, 20 trials, seed 0; no sampler or pruner
    named (sweep.search.defaults chooses them)."""
    s = StudySection(name="s")
    assert (s.metric, s.directions, s.n_trials, s.seed) == (("val_total_loss",), ("minimize",), 20, 0)
    assert s.sampler is None and s.pruner is None and s.score == "last" and s.parallel_trials == 1
    assert not s.multi_objective
    with pytest.raises(pydantic.ValidationError, match="name"):
        StudySection()  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("metric", "directions"),
    [
        ("val_a_acc", ("maximize",)),  # an accuracy is maximised
        ("val_b_loss", ("minimize",)),  # a loss is minimised
        ("val_total_loss", ("minimize",)),
        ("my_score", ("minimize",)),  # no rule: minimised (the target check warns elsewhere)
        (["val_a_acc", "val_b_loss"], ("maximize", "minimize")),
    ],
)
def test_directions_are_inferred_per_metric(metric: str | list[str], directions: tuple[str, ...]) -> None:
    s = StudySection(name="s", metric=metric)  # type: ignore[arg-type]
    assert s.directions == directions
    assert s.multi_objective == (len(directions) > 1)


def test_a_given_direction_wins_over_the_inferred_one() -> None:
    assert StudySection(name="s", metric="val_a_acc", direction="minimize").directions == ("minimize",)  # type: ignore[arg-type]


def test_plural_spellings_mean_the_same_and_not_both() -> None:
    """``metrics``/``directions`` are accepted for ``metric``/``direction``; giving both spellings is refused."""
    plural = StudySection.model_validate({"name": "s", "metrics": ["val_a_acc"], "directions": ["maximize"]})
    assert plural == StudySection(name="s", metric=("val_a_acc",), direction=("maximize",))
    with pytest.raises(pydantic.ValidationError, match="either 'metric' or 'metrics'"):
        StudySection.model_validate({"name": "s", "metric": "a", "metrics": ["b"]})


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "a b", "x" * 201])
def test_a_name_that_cannot_name_a_file_is_refused(name: str) -> None:
    with pytest.raises(pydantic.ValidationError):
        StudySection(name=name)


@pytest.mark.parametrize("name", ["s", "a.b", "run-2_x", "...a", "x" * 200])
def test_names_that_can_name_a_file_are_kept(name: str) -> None:
    assert StudySection(name=name).name == name


def test_a_sampler_or_pruner_may_be_given_by_its_type_name() -> None:
    s = StudySection.model_validate({"name": "s", "sampler": "random", "pruner": "median"})
    assert s.sampler.type == "random" and s.pruner is not None and s.pruner.type == "median"


@pytest.mark.parametrize(
    ("key", "bad", "good"),
    [
        ("timeout", MAX_TIMEOUT + 1, MAX_TIMEOUT),
        ("timeout", 0, 0.5),
        ("n_trials", 0, 1),
        ("heartbeat_interval", 3601, 3600),
        ("grace_period", 0, 1),
        ("storage_retry", 86_401, 86_400),
        ("tracking_retry", 0, 0.1),
        ("trial_timeout", 2_592_001, 2_592_000),
        ("stall_timeout", -1, 1),
        ("parallel_trials", 1025, 1024),
        ("max_retry", -1, 0),
    ],
)
def test_bounds_are_inclusive_and_enforced(key: str, bad: float, good: float) -> None:
    """Each bound: the edge value loads, one step past it does not."""
    assert getattr(StudySection.model_validate({"name": "s", key: good}), key) == good
    with pytest.raises(pydantic.ValidationError, match=key):
        StudySection.model_validate({"name": "s", key: bad})


def test_unknown_keys_are_refused_in_every_section() -> None:
    for model, base in ((StudySection, {"name": "s"}), (TrackingSection, {}), (EvaluateSection, {})):
        with pytest.raises(pydantic.ValidationError, match="n_trails"):
            model.model_validate({**base, "n_trails": 3})


def test_tracking_and_evaluate_defaults_and_bounds() -> None:
    t = TrackingSection()
    assert (t.uri, t.experiment, t.artifact_location, t.trial_plots) == ("sqlite:///mlflow.db", None, None, False)
    assert TrackingSection(experiment="e" * 500).experiment == "e" * 500
    with pytest.raises(pydantic.ValidationError):
        TrackingSection(experiment="e" * 501)  # MLflow's limit
    e = EvaluateSection()
    assert (e.seeds, e.top) == (5, 1)
    for key, bad in (("seeds", 0), ("seeds", 1001), ("top", 0), ("top", 101)):
        with pytest.raises(pydantic.ValidationError, match=key):
            EvaluateSection.model_validate({key: bad})


def test_sections_are_frozen() -> None:
    s = StudySection(name="s")
    with pytest.raises(pydantic.ValidationError):
        s.n_trials = 3  # type: ignore[misc]
