"""``sweep.tracking.weights``: a trial's kept weights read back from its run, the model rebuilt from them (one
model, or the alternating loop's two as :class:`Coupled`), and the Model Registry entry (end to end through
``sweep.export`` in tests/test_models.py)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch

from objectives.loops import LOOPS
from objectives.problems import build_problem
from sweep.core.errors import SweepError
from sweep.core.records import Attr
from sweep.studyfile.sections import TrackingSection
from sweep.tracking.tracking import Tracker, TrialRun
from sweep.tracking.weights import Coupled, download, rebuild, register

LINEAR = {"dim": 4, "n_a": 32, "n_b": 32, "n_val": 32}
CODES = {"n_train": 64, "code_dim": 4, "hidden": 8}


def _config(loop: str, problem: str, options: dict) -> dict[str, Any]:
    """A trial's recorded config (``user_attrs["config"]``): resolved, as JSON."""
    cfg = {"loop": loop, "problem": {"name": problem, "options": options}, "seed": 3, "data_seed": 0, "device": "cpu"}
    return LOOPS[loop].config.model_validate(cfg).model_dump(mode="json")


def _problem(config: dict[str, Any]) -> Any:
    loop = LOOPS[config["loop"]]
    return build_problem(config["problem"]["name"], config["problem"]["options"], 0, loop.name, loop.problem)


def _scrambled(model: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Weights unlike a freshly built model's (so that loading them shows)."""
    generator = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=generator) for k, v in model.state_dict().items()}


def test_rebuild_loads_the_kept_weights_into_the_problems_model(tmp_path: Path) -> None:
    """``{"model": state}`` → the problem's model holding exactly those weights, in eval mode."""
    config = _config("dual_loss", "linear_pair", LINEAR)
    state = _scrambled(_problem(config).make_model(), 1)
    torch.save({"model": state}, tmp_path / "weights.pt")
    model = rebuild(config, tmp_path / "weights.pt")
    assert not model.training  # ready to predict
    assert model.state_dict().keys() == state.keys()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())


def test_rebuild_couples_the_alternating_loops_two_models(tmp_path: Path) -> None:
    """``{"model_a", "model_b"}`` → one module computing ``model_b(model_a(x))`` with the kept weights of each."""
    config = _config("alternating", "digits_codes", CODES)
    problem = _problem(config)
    a, b = problem.make_model_a(), problem.make_model_b()
    a.load_state_dict(_scrambled(a, 1))
    b.load_state_dict(_scrambled(b, 2))
    torch.save({"model_a": a.state_dict(), "model_b": b.state_dict()}, tmp_path / "weights.pt")
    model = rebuild(config, tmp_path / "weights.pt")
    assert isinstance(model, Coupled) and not model.training and not model.model_a.training
    x = torch.randn(5, 64)
    with torch.no_grad():
        assert torch.equal(model(x), b.eval()(a.eval()(x)))
        assert model(x).shape == (5, 10)


def test_rebuild_refuses_weights_of_another_model(tmp_path: Path) -> None:
    """Weights of a larger problem, or only one of a pair, are not loaded."""
    bigger = _config("dual_loss", "linear_pair", {**LINEAR, "dim": 6})
    torch.save({"model": _problem(bigger).make_model().state_dict()}, tmp_path / "big.pt")
    with pytest.raises(RuntimeError, match="size mismatch"):
        rebuild(_config("dual_loss", "linear_pair", LINEAR), tmp_path / "big.pt")
    codes = _config("alternating", "digits_codes", CODES)
    torch.save({"model_a": _problem(codes).make_model_a().state_dict()}, tmp_path / "half.pt")
    with pytest.raises(KeyError, match="model_b"):
        rebuild(codes, tmp_path / "half.pt")


class _Pair(torch.nn.Module):
    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return x + (0 if y is None else 10 * y)


def test_coupled_passes_a_batch_the_way_the_loops_do() -> None:
    """One input as the loops call a model (a tuple spread, a dict by name); several or named ones as given."""
    coupled = Coupled(_Pair(), torch.nn.Identity())
    one, two = torch.ones(2), torch.full((2,), 2.0)
    assert torch.equal(coupled(one), one)
    assert torch.equal(coupled((one, two)), one + 20)
    assert torch.equal(coupled({"x": one, "y": two}), one + 20)
    assert torch.equal(coupled(one, two), one + 20)
    assert torch.equal(coupled(one, y=two), one + 20)


@pytest.fixture
def store(tmp_path: Path) -> tuple[str, Tracker, optuna.Study]:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    study = optuna.create_study(study_name="w")
    return uri, Tracker(TrackingSection(uri=uri), study), study


def _trial_with_weights(store: tuple[str, Tracker, optuna.Study], folder: Path, keep: bool = True) -> Any:
    """A complete trial whose run holds ``weights.pt`` (``keep``: and records its checkpoint epoch)."""
    _, tracker, study = store
    trial = study.ask()
    run = TrialRun.open(tracker, trial)
    folder.mkdir()
    torch.save({"model": {"w": torch.arange(3.0)}}, folder / "weights.pt")
    assert run.log_artifact(folder / "weights.pt")
    run.close(optuna.trial.TrialState.COMPLETE)
    if keep:
        trial.set_user_attr(Attr.CHECKPOINT_EPOCH, 2)
    study.tell(trial, 1.0)
    return study.trials[trial.number]


def test_download_copies_the_trials_weights(store: Any, tmp_path: Path) -> None:
    """The run's ``weights.pt`` byte for byte, in a folder made as needed."""
    trial = _trial_with_weights(store, tmp_path / "made")
    got = download(store[0], trial, tmp_path / "out" / "deeper")
    assert got == tmp_path / "out" / "deeper" / "weights.pt"
    assert got.read_bytes() == (tmp_path / "made" / "weights.pt").read_bytes()
    assert torch.equal(torch.load(got, weights_only=True)["model"]["w"], torch.arange(3.0))


def test_download_says_when_a_trial_kept_no_weights(store: Any, tmp_path: Path) -> None:
    """``checkpoint: none`` (no checkpoint epoch), a trial without a run: said, before the store is asked."""
    uri = store[0]
    trial = _trial_with_weights(store, tmp_path / "made", keep=False)
    with pytest.raises(SweepError, match=r"trial 0 kept no weights \(objective.checkpoint: none"):
        download(uri, trial, tmp_path / "out")
    no_run = optuna.trial.create_trial(value=1.0, user_attrs={Attr.CHECKPOINT_EPOCH: 1})
    with pytest.raises(SweepError, match="kept no weights"):
        download(uri, no_run, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_download_says_when_the_store_lacks_the_weights(store: Any, tmp_path: Path) -> None:
    """A trial that kept weights whose run has no ``weights.pt``: one line naming the trial and the store."""
    uri, tracker, study = store
    trial = study.ask()
    run = TrialRun.open(tracker, trial)  # a run without weights.pt (its artifacts lost)
    trial.set_user_attr(Attr.CHECKPOINT_EPOCH, 0)
    study.tell(trial, 1.0)
    with pytest.raises(SweepError, match=f"cannot read the weights of trial 0 from {uri}: ") as said:
        download(uri, study.trials[0], tmp_path / "out")
    assert run.run_id  # the run is there, its file is not
    assert not (tmp_path / "out" / "weights.pt").exists() and "\n" not in str(said.value)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_password_in_the_tracking_url_is_not_in_the_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unreachable tracking server with credentials in its URL: the error shows the URL redacted."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    uri = f"http://user:s3cret@127.0.0.1:{_closed_port()}"
    trial = optuna.trial.create_trial(value=1.0, user_attrs={Attr.CHECKPOINT_EPOCH: 1, Attr.RUN: "abc"})
    trial.number = 5
    with pytest.raises(SweepError, match=r"cannot read the weights of trial 5 from http://user:\*\*\*@") as said:
        download(uri, trial, tmp_path / "out")
    assert "s3cret" not in str(said.value)


@pytest.fixture
def tracking_uri() -> Any:
    """MLflow's process-wide tracking URI (``register`` sets it), put back after the test."""
    import mlflow.tracking._tracking_service.utils as utils

    before = utils._tracking_uri
    yield
    utils._tracking_uri = before


def test_register_says_when_the_trials_run_is_not_there(store: Any, tracking_uri: None) -> None:
    """A trial whose run is gone from the store: one line naming the trial and the name asked for."""
    trial = optuna.trial.create_trial(value=1.0, user_attrs={Attr.RUN: "0" * 32})
    trial.number = 4
    with pytest.raises(SweepError, match=r"cannot register the model of trial 4 as 'm': ") as said:
        register(store[0], trial, torch.nn.Linear(2, 1), "m")
    assert "\n" not in str(said.value)


@pytest.mark.slow  # mlflow.pytorch.log_model infers the model's requirements in a Python process of its own
def test_register_logs_the_model_on_the_trials_run_and_versions_it(
    store: Any, tmp_path: Path, tracking_uri: None
) -> None:
    """Each registration is a new version of the name, logged on the trial's run, which stays FINISHED; the
    registered model (a :class:`Coupled` pair too) loads and predicts as the one registered."""
    import mlflow.pytorch
    from mlflow import MlflowClient

    uri = store[0]
    trial = _trial_with_weights(store, tmp_path / "made")
    config = _config("alternating", "digits_codes", CODES)
    problem = _problem(config)
    model = Coupled(problem.make_model_a(), problem.make_model_b()).eval()
    assert register(uri, trial, model, "pair") == 1
    assert register(uri, trial, model, "pair") == 2
    client = MlflowClient(uri)
    versions = client.search_model_versions("name = 'pair'")
    assert sorted(int(v.version) for v in versions) == [1, 2]
    assert {v.run_id for v in versions} == {trial.user_attrs[Attr.RUN]}
    assert client.get_run(trial.user_attrs[Attr.RUN]).info.status == "FINISHED"
    loaded = mlflow.pytorch.load_model("models:/pair/2")
    x = torch.randn(3, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
