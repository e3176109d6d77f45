"""Regressions for defects found in review: each test failed before its fix."""

from __future__ import annotations

import http.server
import threading
from pathlib import Path

import optuna
import pytest
import torch
from torch import nn

from objectives.weighting import STRATEGIES, make
from sweep.config import load_study, parse_study
from sweep.interrupts import Interrupts
from sweep.runner import DeadTrials, Objective, ProblemCache, QuotaStop, check_tracking
from sweep.space import resolve
from sweep.urls import redact
from tests.conftest import tiny_study, write_yaml


def test_searching_the_weight_schedule_type_keeps_its_target() -> None:
    """Choosing another weight-schedule type keeps which loss it moves (target is not a type option)."""
    doc = {
        "study": {"name": "s"},
        "objective": {
            "loop": "alternating",
            "problem": "digits_codes",
            "weights": [1, 1, 1],
            "weight_schedule": {"type": "linear", "target": "consistency", "ramp_fraction": 0.5},
        },
        "search": {"params": {"weight_schedule.type": {"type": "categorical", "choices": ["linear", "sigmoid"]}}},
    }
    sf = parse_study(doc, "x.yaml")
    cfg = resolve(sf, 0, {"weight_schedule.type": "sigmoid"}, (1, 1, 1))
    assert cfg.weight_schedule.type == "sigmoid" and cfg.weight_schedule.target == "consistency"
    assert cfg.weight_schedule.ramp_fraction == 0.3  # the linear schedule's own option did not carry over


@pytest.mark.parametrize(
    "url", ["postgresql://sweep:pa/ss@db:5432/optuna", "postgresql://u:p:q/r@h/db", "mysql+pymysql://root:a/b@h/d"]
)
def test_redact_passwords_with_slashes(url: str) -> None:
    """Passwords with '/' or ':' are masked too (SQLAlchemy accepts them)."""
    out = redact(url)
    assert ":***@" in out and "pa/ss" not in out and "p:q/r" not in out and "a/b" not in out


def test_independent_processes_stop_at_n_trials() -> None:
    """A process whose quota is not used up still stops once the study holds n_trials (another machine filled it)."""
    study = optuna.create_study()
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=8)  # "other machines"
    stop = QuotaStop(target=5, quota=5, interval=1, grace=1, interrupts=Interrupts(), first_trial=8)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=10, callbacks=[stop])
    assert stop.ran == 1 and len(study.trials) == 9


def test_tracking_check_accepts_credentials_in_the_url() -> None:
    """An http tracking URI with user:password@ is checked against the host, not a host named 'user:...'."""
    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        check_tracking(f"http://user:s3cret@127.0.0.1:{server.server_address[1]}")  # answered (501): reachable
    finally:
        server.shutdown()


def test_gradnorm_measures_only_shared_parameters() -> None:
    """GradNorm's W is the parameters every loss reaches, even when losses come stacked (zeros, not None)."""
    trunk, head_a, head_b = nn.Linear(3, 4), nn.Linear(4, 1), nn.Linear(4, 1)
    x = torch.randn(8, 3)
    h = trunk(x)
    losses = torch.stack([head_a(h).pow(2).mean(), head_b(h).pow(2).mean()])
    strategy = make(STRATEGIES["gradnorm"].Config(), 2, torch.device("cpu"), 0)
    params = [*trunk.parameters(), *head_a.parameters(), *head_b.parameters()]
    active, shared, _ = strategy._which(losses, params)
    assert active == [0, 1] and shared == [0, 1]  # the trunk's weight and bias only


def test_gradnorm_in_alternate_mode_with_a_deeper_than_b() -> None:
    """A with more parameter tensors than B: A's and B's steps each get their own structure (was IndexError)."""
    from objectives import alternating
    from objectives.config import AlternatingConfig
    from objectives.problems import CoupledProblem

    g = torch.Generator().manual_seed(0)
    x, t, y = torch.randn(32, 4, generator=g), torch.randn(32, 3, generator=g), torch.randn(32, 2, generator=g)
    problem = CoupledProblem(
        make_model_a=lambda: nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 5), nn.Tanh(), nn.Linear(5, 3)),
        make_model_b=lambda: nn.Linear(3, 2),
        train=(x, y, t),
        val=(x, y, t),
        loss_a=nn.functional.mse_loss,
        loss_b=nn.functional.mse_loss,
    )
    cfg = AlternatingConfig(
        problem="x:y", mode="alternate", seed=0, data_seed=0, device="cpu", epochs=2, batch_size=8,
        weighting={"type": "gradnorm"},
    )  # fmt: skip
    metrics = alternating.train(cfg, None, problem=problem)
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())


def _dead_trial_requeued(study: optuna.Study) -> None:
    """Trial 0 as a killed worker leaves it: FAIL, re-queued by Optuna's retry callback."""
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    optuna.storages.RetryHeartbeatStaleTrialCallback()(study, study.trials[0])


def test_topping_up_counts_a_dead_trial_from_the_runs_first_trial() -> None:
    """A worker whose own quota was spent on a dead sibling's re-queued trial tops up the sibling's lost
    trials. Regression (CI flake): each worker counted its first trial itself, so a worker that started
    after trial 0 began took the retry of trial 0 for an older run's and stopped with the study short."""
    study = optuna.create_study()
    _dead_trial_requeued(study)
    stop = QuotaStop(target=4, quota=1, interval=1, grace=1, interrupts=Interrupts(), first_trial=0)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=20, callbacks=[stop])
    complete = study.get_trials(states=[optuna.trial.TrialState.COMPLETE])
    assert len(complete) == 4 and complete[0].system_attrs["failed_trial"] == 0


def _record_workers(monkeypatch: pytest.MonkeyPatch) -> list[tuple[list[str], dict[str, str]]]:
    """Replace the worker processes run_workers starts by records of (command, env); each 'exits' 0 at once."""
    from sweep import runner

    started: list[tuple[list[str], dict[str, str]]] = []

    class Done:
        returncode = 0

        def __init__(self, command: list[str], env: dict[str, str], **_: object) -> None:
            started.append((command, env))

        def poll(self) -> int:
            return 0

    monkeypatch.setattr(runner.subprocess, "Popen", Done)
    return started


def test_workers_get_the_coordinators_first_trial(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """run_workers hands its own first trial number to every worker (not each worker's own count)."""
    from sweep import runner

    path = write_yaml(tmp_path / "w.yaml", tiny_study("first", study={"n_trials": 4}))
    monkeypatch.chdir(tmp_path)
    sf = load_study(path)
    study = optuna.create_study(study_name="first", storage=runner.open_storage(runner.storage_url(sf)))
    study.optimize(lambda t: t.suggest_float("weights.log10_ratio", -2, 2), n_trials=1)
    started = _record_workers(monkeypatch)
    runner.run_workers(sf, path, path.read_text(), 3, [], [], progress=False, report=False)
    assert len(started) == 3  # 3 trials left, one each
    assert all(c[c.index("--first-trial") + 1] == "1" for c, _ in started)


def test_dead_trial_is_requeued_even_when_its_mlflow_run_cannot_be_closed(capsys: pytest.CaptureFixture) -> None:
    """The stale-trial callback re-queues first; a tracking store that fails afterwards costs a warning only."""

    class Broken:
        client = None  # TrialRun on it raises

    study = optuna.create_study()
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    trial.set_user_attr("mlflow_run_id", "abc")
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    dead = DeadTrials(max_retry=2, grace_period=3)
    dead.bind(Broken())  # type: ignore[arg-type]
    dead(study, study.trials[0])
    assert [t.state.name for t in study.trials] == ["FAIL", "WAITING"]
    assert "could not close MLflow run abc of dead trial 0" in capsys.readouterr().err


def test_trial_beats_before_its_mlflow_run_exists(tmp_path: Path) -> None:
    """The objective records a heartbeat before anything else, so a worker killed at any point after
    its MLflow run exists leaves a trial the others see as stale (Optuna's own first beat is racy)."""
    calls: list[str] = []

    class Beat:
        heartbeat_interval = 1

        def record_heartbeat(self, trial_id: int) -> None:
            calls.append(f"beat {trial_id}")

    class Tracker:
        def start_trial(self, trial: optuna.Trial) -> None:
            calls.append("run")
            raise RuntimeError("stop here")

    sf = parse_study(tiny_study("beat"), "b.yaml")
    objective = Objective(sf, Tracker(), ProblemCache(), Interrupts(), beat=Beat())  # type: ignore[arg-type]
    study = optuna.create_study()
    study.optimize(objective, n_trials=1, catch=(RuntimeError,))
    assert calls == [f"beat {study.trials[0]._trial_id}", "run"]


def test_study_params_written_by_a_concurrent_start_are_not_an_error(tmp_path: Path) -> None:
    """Two processes starting the same study both find the parent's params missing and both write them;
    the loser's write fails (params are immutable) and it re-reads instead of crashing (seen in review)."""
    from mlflow.exceptions import MlflowException

    from sweep.config import TrackingSection
    from sweep.tracking import Tracker

    study = optuna.create_study(study_name="twice")
    tracker = Tracker(TrackingSection(uri=f"sqlite:///{tmp_path / 'm.db'}"), study, parent_tags={})
    real = tracker.client.log_batch
    raced: list[bool] = []

    def other_process_first(run_id: str, **kwargs: object) -> None:
        if not raced:
            raced.append(True)
            real(run_id, **kwargs)  # the other process's write lands first ...
            raise MlflowException("UNIQUE constraint failed: params.key")  # ... so ours fails
        real(run_id, **kwargs)

    tracker.client.log_batch = other_process_first  # type: ignore[method-assign]
    tracker.log_study_params({"seed": 0, "loop": "dual_loss"})
    assert raced and tracker.client.get_run(tracker.parent_id).data.params == {"seed": "0", "loop": "dual_loss"}


@pytest.mark.parametrize(
    ("argv", "visible", "expected"),
    [
        (["--workers", "auto"], "2,3", (2, ["2", "3"])),  # narrowed already: hand on its entries
        (["--workers", "3", "--devices", "0, 1"], "2,3", (3, ["0", "1"])),  # --devices wins
        (["--workers", "auto"], "", (1, [])),  # no GPU visible: one in-process worker
    ],
)
def test_worker_devices(
    argv: list[str], visible: str, expected: tuple[int, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Which CUDA_VISIBLE_DEVICES entries the workers get. Regression: with CUDA_VISIBLE_DEVICES=2,3 the
    workers were given 0 and 1, i.e. other physical GPUs."""
    from sweep import run

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert run._workers(run.parser().parse_args(["s.yaml", *argv])) == expected


def test_workers_are_spread_over_devices_round_robin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each worker process gets one device as its CUDA_VISIBLE_DEVICES, in turn."""
    from sweep import runner

    path = write_yaml(tmp_path / "d.yaml", tiny_study("spread", study={"n_trials": 3}))
    monkeypatch.chdir(tmp_path)
    started = _record_workers(monkeypatch)
    runner.run_workers(load_study(path), path, path.read_text(), 3, ["2", "3"], [], progress=False, report=False)
    assert [env["CUDA_VISIBLE_DEVICES"] for _, env in started] == ["2", "3", "2"]
