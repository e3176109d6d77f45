"""``sweep.results.evaluation``: each loop's test scoring against a direct computation, and the kept epoch."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from objectives.loops import LOOPS
from objectives.problems import build_problem
from sweep.results.evaluation import NoTestSplit, Selection, config_for, retrain


def _config(loop: str, problem: str, options: dict, **extra: object) -> dict:
    cfg = {"loop": loop, "problem": {"name": problem, "options": options}, "epochs": 3, "batch_size": 32,
           "seed": 1, "data_seed": 0, "device": "cpu", **extra}  # fmt: skip
    return LOOPS[loop].config.model_validate(cfg).model_dump(mode="json")


def _trained(recorded: dict) -> tuple[object, dict[str, torch.nn.Module]]:
    cfg = config_for(recorded, recorded["seed"], "cpu")
    loop = LOOPS[cfg.loop]
    problem = build_problem(cfg.problem.name, cfg.problem.options, cfg.data_seed, cfg.loop, loop.problem)
    models: dict[str, torch.nn.Module] = {}
    loop.train(cfg, None, problem=problem, checkpoint=lambda e, m, ms: models.update(ms))
    return cfg, problem, models


def test_dual_loss_test_metrics_are_the_losses_on_the_test_split() -> None:
    cfg, problem, models = _trained(_config("dual_loss", "linear_pair", {"dim": 4, "n_a": 64, "n_b": 64}))
    out = LOOPS["dual_loss"].test_metrics(cfg, problem, models)
    model = models["model"]
    with torch.no_grad():
        a = F.mse_loss(model(problem.a.test[0]), problem.a.test[1]).item()
        b = F.mse_loss(model(problem.b.test[0]), problem.b.test[1]).item()
    assert out["test_a_loss"] == pytest.approx(a, rel=1e-5)
    assert out["test_b_loss"] == pytest.approx(b, rel=1e-5)
    assert out["test_total_loss"] == pytest.approx(a + b, rel=1e-5)
    assert not any(k.startswith("val_") for k in out)


def test_alternating_test_metrics_are_the_losses_on_the_test_split() -> None:
    cfg, problem, models = _trained(_config("alternating", "digits_codes", {}))
    out = LOOPS["alternating"].test_metrics(cfg, problem, models)
    x, y, t = problem.test
    with torch.no_grad():
        z = models["model_a"](x)
        logits = models["model_b"](z)
    assert out["test_a_loss"] == pytest.approx(F.mse_loss(z, t).item(), rel=1e-5)
    assert out["test_b_loss"] == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-5)
    assert out["test_b_acc"] == pytest.approx((logits.argmax(1) == y).float().mean().item(), rel=1e-6)


def test_best_rule_scores_the_best_validation_epoch_on_test() -> None:
    """With ``score: best`` the models scored on test are the best validation epoch's, not the last."""
    recorded = _config("dual_loss", "linear_pair", {"dim": 4, "n_a": 64, "n_b": 64}, epochs=8,
                       optimizer={"type": "sgd", "lr": 0.5, "momentum": 0.9})  # fmt: skip
    cfg = config_for(recorded, 3, "cpu")
    problem = build_problem("linear_pair", cfg.problem.options, 0)
    history: list[float] = []
    loop = LOOPS["dual_loss"]
    loop.train(cfg, lambda e, m: history.append(m["val_total_loss"]), problem=problem)
    best = min(range(len(history)), key=history.__getitem__)
    assert best != len(history) - 1, "the setting must make the last epoch worse than the best (it diverges)"
    out = retrain(cfg, problem, Selection("val_total_loss", "minimize", "best"))
    assert out["epoch"] == best and out["val_total_loss"] == history[best]
    last = retrain(cfg, problem, Selection("val_total_loss", "minimize", "last"))
    assert last["epoch"] == len(history) - 1 and last["test_total_loss"] != out["test_total_loss"]


def test_a_problem_without_a_test_split_is_refused() -> None:
    from dataclasses import replace

    cfg = config_for(_config("dual_loss", "linear_pair", {"dim": 4}), 1, "cpu")
    problem = build_problem("linear_pair", {"dim": 4}, 0)
    with pytest.raises(NoTestSplit, match="no test split"):
        retrain(cfg, replace(problem, a=replace(problem.a, test=None)), Selection("val_total_loss"))


def test_an_evaluation_trains_one_model_per_fresh_seed_whatever_the_trials_repeats() -> None:
    """A configuration searched with ``repeats: 3`` is evaluated seed by seed: each fresh seed is one model (the
    evaluation's seeds are its repeats), and the retrained run equals that seed's plain training."""
    recorded = _config("dual_loss", "linear_pair", {"dim": 4, "n_a": 64, "n_b": 64}, epochs=2, repeats=3)
    cfg = config_for(recorded, 7, "cpu")
    assert cfg.repeats == 1 and cfg.seed == 7
    problem = build_problem("linear_pair", cfg.problem.options, 0)
    alone = LOOPS["dual_loss"].train(cfg, problem=problem)
    assert retrain(cfg, problem, Selection("val_total_loss"))["val_total_loss"] == alone["val_total_loss"]
