"""Whether an edited study file may add trials to a study that has some (:mod:`sweep.execution.comparable`):
what its trials are compared on, and the check against the study's first run, on an in-memory study.

The same checks through the command (``python -m sweep.run`` re-run on an old study) are in
tests/test_study_checks.py and tests/test_secrets.py."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from sweep.core.errors import ConfigError
from sweep.core.records import Attr
from sweep.execution.comparable import SPEED_ONLY, check_unchanged, settings, speed_only
from sweep.studyfile.config import parse_study
from tests.conftest import tiny_study

SOURCE = Path("s.yaml")


def _settings(**overrides: dict) -> dict[str, str]:
    """:func:`settings` of the tiny study with ``overrides`` (section → values merged into it)."""
    doc = tiny_study("c")
    for section, values in overrides.items():
        doc[section] = {**doc[section], **values}
    sf = parse_study(doc, SOURCE)
    return settings(sf.study, sf.objective, sf.search)


def _study() -> optuna.Study:
    return optuna.create_study(study_name="c", storage=optuna.storages.InMemoryStorage())


def test_settings_hold_the_targets_the_fixed_objective_and_the_space_as_strings() -> None:
    """Flattened keys under study., objective. and search.; every value a string; the searched path is not
    an objective key (its value in the file is what the search overrides)."""
    now = _settings()
    assert now["study.metric"] == "['val_total_loss']" and now["study.direction"] == "['minimize']"
    assert now["study.seed"] == "0" and now["study.score"] == "last"
    assert now["objective.epochs"] == "3" and now["objective.problem.options.dim"] == "4"
    assert now["search.params.optimizer.lr.high"] == "0.1" and now["search.weights.low"] == "-2.0"
    assert all(isinstance(v, str) for v in now.values())
    assert {k.split(".")[0] for k in now} == {"study", "objective", "search"}
    assert "objective.optimizer.lr" not in now  # searched: its fixed value compares nothing


def test_settings_leave_out_how_many_trials_and_where_they_are_stored() -> None:
    """n_trials, timeout, sampler, pruner, storage and tracking change no trial's result: same settings."""
    base = _settings()
    other = _settings(
        study={
            "n_trials": 50,
            "timeout": 60,
            "sampler": {"type": "tpe"},
            "pruner": "none",
            "storage": "sqlite:///elsewhere.db",
        },
        tracking={"uri": "sqlite:///other.db"},
    )
    assert other == base


@pytest.mark.parametrize(
    ("overrides", "key", "value"),
    [
        ({"study": {"seed": 7}}, "study.seed", "7"),
        ({"objective": {"epochs": 2}}, "objective.epochs", "2"),
        ({"objective": {"optimizer": {"type": "sgd"}}}, "objective.optimizer.type", "sgd"),
        (
            {"search": {"params": {"optimizer.lr": {"type": "float", "low": 1e-3, "high": 0.5, "log": True}}}},
            "search.params.optimizer.lr.high",
            "0.5",
        ),
    ],
    ids=["seed", "epochs", "optimizer", "space"],
)
def test_what_the_trials_compute_is_in_the_settings(overrides: dict, key: str, value: str) -> None:
    base, changed = _settings(), _settings(**overrides)
    assert changed[key] == value and base[key] != value


def test_a_searched_path_s_fixed_value_is_no_setting() -> None:
    """The file's own value for a searched path is never used: changing it changes nothing; once the path
    is no longer searched, its value is a setting."""
    assert _settings(objective={"optimizer": {"lr": 0.5}}) == _settings()
    unsearched = _settings(objective={"optimizer": {"lr": 0.5}}, search={"params": {}})
    assert unsearched["objective.optimizer.lr"] == "0.5"


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("objective.device", True),
        ("objective.compile", True),
        ("objective.compile.mode", True),  # under a speed-only key
        ("objective.data.num_workers", True),
        ("objective.data.prefetch_factor", True),
        ("objective.devices", False),  # a longer name, not a key under objective.device
        ("objective.data.num_workers_b", False),
        ("objective.data.drop_last", False),  # changes the batches
        ("objective.data.steps_per_epoch", False),
        ("objective.epochs", False),
        ("study.device", False),
        ("device", False),
    ],
)
def test_speed_only(key: str, expected: bool) -> None:
    assert speed_only(key) is expected


def test_every_speed_only_key_is_a_setting() -> None:
    """Each name in SPEED_ONLY is one the settings hold (or a prefix of some): a misspelt one would let
    nothing through."""
    now = _settings()
    assert all(any(k == p or k.startswith(f"{p}.") for k in now) for p in SPEED_ONLY)


def test_the_first_run_records_its_settings_and_the_same_file_passes(capsys: pytest.CaptureFixture[str]) -> None:
    study, now = _study(), _settings()
    check_unchanged(study, now, SOURCE, allow_changes=False)
    assert study.user_attrs[Attr.SETTINGS] == now
    check_unchanged(study, dict(now), SOURCE, allow_changes=False)  # a resume of the same file
    assert study.user_attrs[Attr.SETTINGS] == now
    assert capsys.readouterr().err == ""


def test_a_changed_setting_is_refused_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    """One line: the file, the key, both values and the study's name; --study-name and --allow-changes named."""
    study = _study()
    check_unchanged(study, _settings(), SOURCE, allow_changes=False)
    with pytest.raises(ConfigError) as info:
        check_unchanged(study, _settings(objective={"epochs": 2}), SOURCE, allow_changes=False)
    error = info.value
    assert error.file == "s.yaml" and error.key == "objective.epochs"
    assert error.message.startswith("is 2 here but 3 in study 'c''s earlier runs: its trials would not be comparable")
    assert "--study-name" in error.message and "--allow-changes" in error.message and "more)" not in error.message
    assert study.user_attrs[Attr.SETTINGS] == _settings()  # the first run's, kept
    assert capsys.readouterr().err == ""


def test_several_changes_name_the_first_and_count_the_others() -> None:
    study = _study()
    check_unchanged(study, _settings(), SOURCE, allow_changes=False)
    changed = _settings(study={"seed": 9}, objective={"epochs": 2, "batch_size": 16})
    with pytest.raises(ConfigError) as info:
        check_unchanged(study, changed, SOURCE, allow_changes=False)
    assert info.value.key == "objective.batch_size"  # the first in sorted order
    assert "is 16 here but 32" in info.value.message and "(and 2 more)" in info.value.message


def test_a_key_only_one_side_has_is_a_change() -> None:
    """A setting the first run did not have (a newer file), or one the file no longer has, is named with
    ``(absent)`` on its missing side."""
    study = _study()
    first = _settings()
    check_unchanged(study, first, SOURCE, allow_changes=False)
    with pytest.raises(ConfigError, match=r"objective\.new_option: is 1 here but \(absent\) in study 'c'"):
        check_unchanged(study, {**first, "objective.new_option": "1"}, SOURCE, allow_changes=False)
    fewer = {k: v for k, v in first.items() if k != "objective.epochs"}
    with pytest.raises(ConfigError, match=r"objective\.epochs: is \(absent\) here but 3 in study 'c'"):
        check_unchanged(study, fewer, SOURCE, allow_changes=False)


def test_allow_changes_adds_trials_anyway_and_keeps_the_first_run_s_settings(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--allow-changes: no error; the recorded settings stay the first run's, so a later run without it is
    still compared with those."""
    study, first = _study(), _settings()
    check_unchanged(study, first, SOURCE, allow_changes=False)
    check_unchanged(study, _settings(objective={"epochs": 2}), SOURCE, allow_changes=True)
    assert study.user_attrs[Attr.SETTINGS] == first
    assert capsys.readouterr().err == ""
    with pytest.raises(ConfigError, match=r"objective\.epochs"):
        check_unchanged(study, _settings(objective={"epochs": 2}), SOURCE, allow_changes=False)


def test_a_speed_only_change_passes_with_one_note(capsys: pytest.CaptureFixture[str]) -> None:
    """Device, compile, the DataLoader's workers: accepted, one note line naming each; note=False (the other
    processes of a run) says nothing."""
    study = _study()
    check_unchanged(study, _settings(), SOURCE, allow_changes=False)
    faster = _settings(objective={"compile": {"backend": "eager"}, "data": {"num_workers": 2}})
    check_unchanged(study, faster, SOURCE, allow_changes=False)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("note: objective.compile"), lines
    assert "objective.data.num_workers" in lines[0] and "changed since study 'c''s earlier runs" in lines[0]
    assert "stay comparable" in lines[0]
    check_unchanged(study, faster, SOURCE, allow_changes=False, note=False)
    assert capsys.readouterr().err == ""


def test_a_speed_only_change_does_not_let_a_real_one_through(capsys: pytest.CaptureFixture[str]) -> None:
    """With a change of what the trials compute beside it: refused, naming that one (not the speed-only
    key, though it sorts first); with --allow-changes the speed-only note is still said."""
    study = _study()
    check_unchanged(study, _settings(), SOURCE, allow_changes=False)
    both = {**_settings(objective={"epochs": 2}), "objective.device": "cuda:1"}  # any machine's file
    with pytest.raises(ConfigError) as info:
        check_unchanged(study, both, SOURCE, allow_changes=False)
    assert info.value.key == "objective.epochs" and "more)" not in info.value.message
    assert capsys.readouterr().err == ""
    check_unchanged(study, both, SOURCE, allow_changes=True)
    err = capsys.readouterr().err
    assert err.startswith("note: objective.device changed") and "epochs" not in err
