"""A session of a study (:mod:`sweep.execution.runner`), in this process: the preflight (the built problem
checked before anything is written), the size of a trial's weights, and the session's opening (the study,
its recorded settings, its parent run) on SQLite stores under ``tmp_path``.

Whole runs (run_study, the commands, failures while trials train) are in tests/test_faults.py,
tests/test_preflight.py and tests/sweep/execution/test_workers.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest
from mlflow import MlflowClient

from sweep.core.errors import ConfigError, SweepError
from sweep.core.records import Attr, Tag
from sweep.execution.comparable import settings
from sweep.execution.runner import open_session, preflight, weights_bytes
from sweep.studyfile.config import StudyFile, parse_study
from sweep.studyfile.space import resolve
from sweep.trials import trial as trial_module
from sweep.trials.trial import ProblemCache
from tests.conftest import tiny_study

F = "tests.support.fault_problems"
SOURCE = Path("s.yaml")


def _file(problem: str = "linear_pair", options: dict | None = None, **overrides: Any) -> StudyFile:
    doc = tiny_study("r", **overrides)
    if problem != "linear_pair" or options is not None:
        doc["objective"]["problem"] = {"name": problem, "options": options or {}}
    return parse_study(doc, SOURCE)


def _coupled() -> StudyFile:
    """The alternating loop on a coupled problem: models A (4 → 2) and B (2 → 2)."""
    doc = tiny_study("r")
    doc["objective"] = {"loop": "alternating", "problem": f"{F}:coupled", "epochs": 1, "weights": [0.5, 0.5]}
    doc["search"] = {"weights": {"parametrization": "log_ratio", "low": -1, "high": 1}}
    return parse_study(doc, SOURCE)


# --- preflight(): the built problem, before anything is written -----------------------------------------


def test_preflight_passes_a_good_problem_and_keeps_it_for_the_trials(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """True (the batch check ran to the end), nothing said; the problem it built is the one the trials get
    (not built again)."""
    sf, problems = _file(), ProblemCache()
    assert preflight(sf.study, sf.objective, SOURCE, problems) is True
    assert capsys.readouterr() == ("", "")

    def no_second_build(*args: object) -> None:
        raise AssertionError("the problem was built again")

    monkeypatch.setattr(trial_module, "build_problem", no_second_build)
    cfg = resolve(sf.objective, sf.study.seed, 0, {}, tuple(sf.objective.weights))
    assert problems.get(cfg).make_model().weight.shape == (1, 4)


@pytest.mark.parametrize(
    ("problem", "options", "message"),
    [
        ("raises", {}, "raised ValueError: the data folder /nowhere is missing"),  # the first line only
        ("exits", {}, "called sys.exit(0): a problem builder must return a problem"),
        ("exits_in_forward", {}, "SystemExit: 0"),  # in the batch check: not an exit of this process
        ("empty", {"which": "b_val"}, "task b's validation data is empty"),  # the data check
        ("nan_at_init", {}, "task a's loss is nan on the first batch, before any training"),  # the batch check
        ("returns_none", {}, "returned None, not objectives.problems.Problem"),
    ],
    ids=["raises", "exits", "exits in forward", "empty", "nan", "returns None"],
)
def test_preflight_refuses_a_broken_problem_in_one_line_naming_it_once(
    problem: str, options: dict, message: str
) -> None:
    name = f"{F}:{problem}"
    with pytest.raises(ConfigError) as info:
        preflight(*_parts(_file(name, options)), ProblemCache())
    error = info.value
    assert (error.file, error.key) == ("s.yaml", "objective.problem")
    assert error.message.startswith(f"{name}: ") and message in error.message, error.message
    assert error.message.count(name) == 1 and "\n" not in error.message and "second line" not in error.message


def _parts(sf: StudyFile) -> tuple[Any, Any, Path]:
    return sf.study, sf.objective, SOURCE


def test_preflight_says_an_out_of_memory_batch_and_goes_on(capsys: pytest.CaptureFixture[str]) -> None:
    """One batch that runs out of memory is no verdict (trials with other settings may fit): False, one
    warning line."""
    name = f"{F}:oom"
    assert preflight(*_parts(_file(name)), ProblemCache()) is False
    assert capsys.readouterr().err == (
        f"warning: {name}: one batch on cpu ran out of memory (CUDA out of memory. Tried to allocate 20.00 GiB); "
        "not checked\n"
    )


def test_preflight_refuses_a_target_the_built_problem_does_not_log() -> None:
    """A user problem's metrics are known once built: a study metric it does not log is refused, naming
    what it logs."""
    sf = _file(f"{F}:classification", study={"metric": "val_a_f1", "direction": "maximize"})
    with pytest.raises(ConfigError) as info:
        preflight(*_parts(sf), ProblemCache())
    assert info.value.key == "study.metric"
    assert info.value.message.startswith("unknown metric 'val_a_f1'") and "val_a_acc" in info.value.message


# --- weights_bytes(): one trial's weights.pt -------------------------------------------------------------


@pytest.mark.parametrize(("dim", "expected"), [(4, 4 * 4), (7, 7 * 4)])
def test_weights_bytes_of_one_model(dim: int, expected: int) -> None:
    """linear_pair's model: a bias-free Linear(dim, 1) in float32."""
    sf = _file(options={"dim": dim, "n_a": 64, "n_b": 64, "n_val": 32})
    assert weights_bytes(sf.objective, 0, ProblemCache()) == expected


def test_weights_bytes_of_two_models() -> None:
    """The alternating loop's models A, Linear(4, 2), and B, Linear(2, 2): (8 + 2 + 4 + 2) float32 numbers."""
    sf = _coupled()
    assert weights_bytes(sf.objective, sf.study.seed, ProblemCache()) == 16 * 4


def test_weights_bytes_builds_on_the_cpu_whatever_the_device() -> None:
    """The study's device is not touched (a machine without it can still size the weights)."""
    sf = _file()
    on_gpu = sf.objective.model_copy(update={"device": "cuda:7"})
    assert weights_bytes(on_gpu, 0, ProblemCache()) == 16


# --- open_session(): the study and its parent run ----------------------------------------------------------


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The study's folder: the file's relative stores (``sqlite:///mlflow.db``, ``.sweep/``) land in it."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _session_file(here: Path, **study: Any) -> tuple[StudyFile, str]:
    doc = tiny_study("r", study={"storage": f"sqlite:///{here / 'o.db'}", **study})
    sf = parse_study(doc, SOURCE)
    return sf, "# the file as its author wrote it\nstudy: {name: r}\n"


def _client(here: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{here / 'mlflow.db'}")


def test_open_session_creates_the_study_and_its_parent_run(here: Path) -> None:
    """The study (its directions, its metric names, its settings recorded, its enqueued baseline waiting),
    and its MLflow parent run with the storage, the file, the fixed settings and the file's text."""
    sf, text = _session_file(here, enqueue=[{"optimizer.lr": 0.01, "weights.log10_ratio": 0.0}])
    session = open_session(sf, SOURCE, text)
    study = session.study
    assert study.study_name == "r" and study.directions == [optuna.study.StudyDirection.MINIMIZE]
    assert study.metric_names == ["val_total_loss"]
    assert study.user_attrs[Attr.SETTINGS] == settings(sf.study, sf.objective, sf.search)
    waiting = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert [t.system_attrs["fixed_params"] for t in waiting] == [{"optimizer.lr": 0.01, "weights.log10_ratio": 0.0}]
    assert session.storage == f"sqlite:///{here / 'o.db'}"

    run = _client(here).get_run(session.tracker.parent_id)
    assert run.info.status == "RUNNING" and study.user_attrs[Attr.PARENT] == run.info.run_id
    assert run.data.tags[Tag.STORAGE] == session.storage and run.data.tags[Tag.STUDY_FILE] == "s.yaml"
    params = run.data.params
    assert params["loop"] == "dual_loss" and params["problem"] == "linear_pair" and params["seed"] == "0"
    assert params["epochs"] == "3" and "optimizer.lr" not in params  # searched: a trial's, not the study's
    logged = Path(_client(here).download_artifacts(run.info.run_id, "study.yaml", str(here / "dl")))
    assert logged.read_text() == text


def test_open_session_again_resumes_the_same_study_and_run(here: Path) -> None:
    """A second session (a resume, or the next process): the same parent run, the baseline not enqueued
    twice."""
    sf, text = _session_file(here, enqueue=[{"optimizer.lr": 0.01, "weights.log10_ratio": 0.0}])
    first = open_session(sf, SOURCE, text)
    first.tracker.finish("KILLED")
    again = open_session(sf, SOURCE, text)
    assert again.tracker.parent_id == first.tracker.parent_id
    assert _client(here).get_run(again.tracker.parent_id).info.status == "RUNNING"  # reopened
    assert len(again.study.get_trials()) == 1


def test_a_worker_s_session_writes_no_study_settings(here: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A worker of --workers (> 0) opens the study and run its coordinator made: it enqueues nothing, logs
    no file or params, and leaves the speed-only note to the coordinator."""
    sf, text = _session_file(here, enqueue=[{"optimizer.lr": 0.01, "weights.log10_ratio": 0.0}])
    session = open_session(sf, SOURCE, text, worker=1)
    assert session.study.get_trials() == []
    run = _client(here).get_run(session.tracker.parent_id)
    assert "loop" not in run.data.params and not _client(here).list_artifacts(run.info.run_id)
    doc = tiny_study("r", study={"storage": f"sqlite:///{here / 'o.db'}"}, objective={"compile": {"backend": "eager"}})
    capsys.readouterr()
    open_session(parse_study(doc, SOURCE), SOURCE, text, worker=2)
    assert "changes how fast" not in capsys.readouterr().err


def test_open_session_refuses_an_edited_file_unless_allowed(here: Path) -> None:
    sf, text = _session_file(here)
    open_session(sf, SOURCE, text)
    doc = tiny_study("r", study={"storage": f"sqlite:///{here / 'o.db'}"}, objective={"epochs": 2})
    edited = parse_study(doc, SOURCE)
    with pytest.raises(ConfigError, match=r"objective\.epochs: is 2 here but 3"):
        open_session(edited, SOURCE, text)
    allowed = open_session(edited, SOURCE, text, allow_changes=True)
    assert allowed.study.user_attrs[Attr.SETTINGS]["objective.epochs"] == "3"  # still compared with the first run


def test_a_broken_problem_opens_nothing(here: Path) -> None:
    """The preflight comes first: refused, no storage and no MLflow store created."""
    doc = tiny_study("r", study={"storage": f"sqlite:///{here / 'o.db'}"})
    doc["objective"]["problem"] = {"name": f"{F}:raises"}
    with pytest.raises(ConfigError, match=r"objective\.problem: tests\.support\.fault_problems:raises"):
        open_session(parse_study(doc, SOURCE), SOURCE, "")
    assert sorted(p.name for p in here.iterdir()) == []


def test_an_unreachable_tracking_server_opens_nothing(here: Path) -> None:
    """A tracking server that does not answer is refused before the study is created."""
    doc = tiny_study("r", study={"storage": f"sqlite:///{here / 'o.db'}"}, tracking={"uri": "http://127.0.0.1:9"})
    with pytest.raises(SweepError, match=r"cannot reach MLflow tracking http://127\.0\.0\.1:9"):
        open_session(parse_study(doc, SOURCE), SOURCE, "")
    assert sorted(p.name for p in here.iterdir()) == []


@pytest.mark.parametrize(
    ("study", "pruner"),
    [
        ({"sampler": None}, optuna.pruners.NopPruner),  # the GP chosen by the space: no pruner
        ({"sampler": "gp"}, optuna.pruners.NopPruner),  # the GP named: the same
        ({"sampler": "tpe"}, optuna.pruners.MedianPruner),
        ({"sampler": None, "pruner": "hyperband"}, optuna.pruners.HyperbandPruner),  # the file's own wins
    ],
)
def test_the_session_prunes_as_its_sampler_can_learn_from(here: Path, study: dict[str, Any], pruner: type) -> None:
    """Optuna's GP sampler fits complete trials only (a pruned point would be proposed again and again), so a
    study whose file names no pruner runs the GP without one; other samplers keep the median pruner."""
    sf, text = _session_file(here, **study)
    session = open_session(sf, SOURCE, text)
    assert type(session.study.pruner) is pruner
