"""``sweep.studyfile.compare``: a ``study.compare`` key expands to one sub-study per choice, ``<name>.<choice>``,
each with the comparison's budget and search over the rest, recorded in one shared experiment."""

from __future__ import annotations

from typing import Any

import pytest

from sweep.core.errors import ConfigError
from sweep.studyfile.compare import Member, MemberTracking, member, members
from sweep.studyfile.config import StudyFile, parse_study
from sweep.studyfile.space import CategoricalParam
from tests.conftest import tiny_study


def _comparison(choices: list[Any], key: str = "weighting.type", **study: Any) -> StudyFile:
    doc = tiny_study("cmp", study={"n_trials": 4, "seed": 7, "compare": key, **study})
    doc["search"]["params"][key] = {"type": "categorical", "choices": choices}
    doc["tracking"]["artifact_location"] = "/tmp/artifacts"
    return parse_study(doc, "cmp.yaml")


def test_a_plain_study_has_no_members() -> None:
    """A study file without ``study.compare`` is its own study; no choice can be asked of it."""
    sf = parse_study(tiny_study("plain"), "plain.yaml")
    assert members(sf) == []
    with pytest.raises(ValueError, match="not a choice of None"):
        member(sf, "dwa")


def test_each_choice_is_a_sub_study_with_the_same_budget() -> None:
    """One sub-study per choice, in the choices' order, named ``<name>.<choice>``: the compared key a one-choice
    categorical (still a parameter of each trial), the rest of the file (budget, seed, sampler, the other
    parameters, the objective) as the comparison's, and no comparison of its own."""
    sf = _comparison(["static", "dwa", "rlw"])
    subs = members(sf)
    assert [(m.value, m.label, m.sf.study.name) for m in subs] == [
        ("static", "static", "cmp.static"),
        ("dwa", "dwa", "cmp.dwa"),
        ("rlw", "rlw", "cmp.rlw"),
    ]
    for m in subs:
        assert isinstance(m, Member) and m.sf.study.compare is None
        compared = m.sf.search.params["weighting.type"]
        assert isinstance(compared, CategoricalParam) and compared.choices == (m.value,)
        assert m.sf.search.params["optimizer.lr"] == sf.search.params["optimizer.lr"]
        assert m.sf.search.weights == sf.search.weights
        assert (m.sf.study.n_trials, m.sf.study.seed, m.sf.study.sampler) == (4, 7, sf.study.sampler)
        assert m.sf.study.model_dump(exclude={"name", "compare"}) == sf.study.model_dump(exclude={"name", "compare"})
        assert m.sf.objective == sf.objective
    assert sf.study.name == "cmp" and sf.study.compare == "weighting.type"  # the comparison's file is unchanged
    assert len(sf.search.params["weighting.type"].choices) == 3  # type: ignore[union-attr]


def test_the_sub_studies_share_one_experiment_and_name_their_choice() -> None:
    """Every sub-study records in the comparison's experiment (its name, or ``tracking.experiment``) and its
    trial runs are named by the choice; the rest of ``tracking:`` is the comparison's."""
    for experiment, expected in ((None, "cmp"), ("shared", "shared")):
        doc = tiny_study("cmp", study={"compare": "weighting.type"}, tracking={"experiment": experiment})
        doc["search"]["params"]["weighting.type"] = {"type": "categorical", "choices": ["static", "dwa"]}
        sf = parse_study(doc, "cmp.yaml")
        for m in members(sf):
            assert isinstance(m.sf.tracking, MemberTracking)
            assert m.sf.tracking.experiment == expected and m.sf.tracking.choice == f"weighting.type={m.value}"
            assert m.sf.tracking.uri == sf.tracking.uri
    sf = _comparison(["static", "dwa"])
    assert all(m.sf.tracking.artifact_location == "/tmp/artifacts" for m in members(sf))
    assert sf.tracking.experiment is None and not isinstance(sf.tracking, MemberTracking)


def test_a_choice_that_is_not_a_name_is_labelled_as_one() -> None:
    """Numbers keep their value (as the trials' parameter) and are named as written; ``member`` finds a choice
    by its label or by its value as text."""
    sf = _comparison([16, 32], key="batch_size")
    subs = members(sf)
    assert [(m.value, m.label, m.sf.study.name) for m in subs] == [(16, "16", "cmp.16"), (32, "32", "cmp.32")]
    assert member(sf, "32").value == 32 and member(sf, "32").sf.search.params["batch_size"].choices == (32,)  # type: ignore[union-attr]
    floats = _comparison([0.5, 0.25], key="optimizer.momentum", pruner="none")
    assert [m.sf.study.name for m in members(floats)] == ["cmp.0.5", "cmp.0.25"]


def test_member_finds_one_choice_and_refuses_another() -> None:
    """``--compare-value``: a choice by its label; anything else (a near miss, a sub-study's name) is refused,
    listing the choices."""
    sf = _comparison(["static", "dwa"])
    found = member(sf, "dwa")
    assert found.sf.study.name == "cmp.dwa" and found == members(sf)[1]
    for wrong in ("famo", "DWA", "cmp.dwa", ""):
        with pytest.raises(ValueError) as refused:
            member(sf, wrong)
        assert str(refused.value) == f"--compare-value {wrong}: not a choice of weighting.type (static, dwa)"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"compare": "optimizer.lr"}, "'optimizer.lr' is not a searched categorical"),
        ({"compare": "epochs"}, "'epochs' is not a searched categorical"),
        ({"enqueue": [{"weighting.type": "dwa"}]}, "the compared parameter is fixed per sub-study"),
    ],
)
def test_a_study_file_that_cannot_be_expanded_is_refused(change: dict, message: str) -> None:
    """A key that is not a searched categorical, or a baseline that fixes it, never reaches :func:`members`."""
    doc = tiny_study("cmp", study={"compare": "weighting.type", **change})
    doc["search"]["params"]["weighting.type"] = {"type": "categorical", "choices": ["static", "dwa"]}
    with pytest.raises(ConfigError, match=message):
        parse_study(doc, "cmp.yaml")
