"""Regressions for defects found in review: each test failed before its fix."""

from __future__ import annotations

import http.server
import threading

import optuna
import pytest
import torch
from torch import nn

from objectives.weighting import STRATEGIES, make
from sweep.config import parse_study
from sweep.interrupts import Interrupts
from sweep.runner import QuotaStop, check_tracking
from sweep.space import resolve
from sweep.urls import redact


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
