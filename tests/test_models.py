"""The trained model taken away, trials scored as practitioners do, baselines enqueued (through the CLI)."""

from __future__ import annotations

from pathlib import Path

import mlflow
import optuna
import pytest
import torch
from mlflow import MlflowClient

from objectives.dual_loss import evaluate
from objectives.problems import build_problem
from objectives.resolved import resolved
from sweep.tracking.weights import rebuild
from tests.conftest import run_main, tiny_study, write_yaml


def _study(tmp_path: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / '.sweep' / 'optuna.db'}")


def _run(tmp_path: Path, path: Path, *args: str) -> None:
    result = run_main("sweep.run", str(path), "--no-report", *args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr


def test_weights_reproduce_the_trial_and_its_replay(tmp_path: Path) -> None:
    """Each complete trial keeps its last epoch's weights (the default with score: last); exported with
    --weights they load with weights_only=True and reproduce the trial's value; the replay keeps the same."""
    path = write_yaml(tmp_path / "w.yaml", tiny_study("w", study={"n_trials": 3}))
    _run(tmp_path, path)
    study = _study(tmp_path, "w")
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    for trial in study.trials:
        assert trial.user_attrs["checkpoint_epoch"] == 2  # epochs: 3
        assert "weights.pt" in {a.path for a in client.list_artifacts(trial.user_attrs["mlflow_run_id"])}
    best = study.best_trial
    exported = run_main("sweep.export", str(path), "-o", "best.yaml", "--weights", "best", cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    assert f"Weights of trial #{best.number} (epoch 2) in best/weights.pt" in exported.stdout
    state = torch.load(tmp_path / "best" / "weights.pt", weights_only=True)
    assert set(state) == {"model"}

    # The weights reproduce the trial's validation value on CPU.
    model = rebuild(best.user_attrs["config"], tmp_path / "best" / "weights.pt")
    cfg = resolved(type(_dual(best.user_attrs["config"])).model_validate(best.user_attrs["config"]))
    problem = build_problem(cfg.problem.name, cfg.problem.options, cfg.data_seed)
    value = evaluate(model, {"a": problem.a, "b": problem.b}, cfg, torch.device("cpu"))["val_total_loss"]
    assert float(value) == pytest.approx(best.value, rel=1e-6)

    # export → run → weights: the replay keeps the very same tensors.
    _run(tmp_path, tmp_path / "best.yaml")
    replay_path = tmp_path / "best.yaml"
    again = run_main("sweep.export", str(replay_path), "-o", "again.yaml", "--weights", "again", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    replayed = torch.load(tmp_path / "again" / "weights.pt", weights_only=True)
    assert all(torch.equal(state["model"][k], replayed["model"][k]) for k in state["model"])


def _dual(config: dict) -> object:
    from objectives.loops import LOOPS

    return LOOPS[config["loop"]].config.model_validate(config)


def test_checkpoint_none_keeps_nothing_and_export_says_so(tmp_path: Path) -> None:
    doc = tiny_study("none", study={"n_trials": 1})
    doc["objective"]["checkpoint"] = "none"
    path = write_yaml(tmp_path / "n.yaml", doc)
    _run(tmp_path, path)
    trial = _study(tmp_path, "none").trials[0]
    assert "checkpoint_epoch" not in trial.user_attrs
    out = run_main("sweep.export", str(path), "--weights", "w", cwd=tmp_path)
    assert out.returncode == 1 and "kept no weights" in out.stderr and not (tmp_path / "w" / "weights.pt").exists()


def test_score_best_and_early_stopping_match_the_logged_curves(tmp_path: Path) -> None:
    """score: best → the value is the best epoch's (recorded as attribute and tag); early stopping ends a
    stalled trial as COMPLETE with its best value; the kept weights follow the best epoch."""
    doc = tiny_study("best", study={"n_trials": 3, "score": "best", "pruner": "none"})
    doc["objective"] = {**doc["objective"], "epochs": 6, "early_stopping": {"patience": 2, "min_delta": 1.0e9}}
    path = write_yaml(tmp_path / "b.yaml", doc)
    _run(tmp_path, path)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    for trial in _study(tmp_path, "best").trials:
        assert trial.state == optuna.trial.TrialState.COMPLETE  # not pruned
        run = client.get_run(trial.user_attrs["mlflow_run_id"])
        curve = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "val_total_loss")}
        # min_delta is huge: nothing counts as an improvement, so the trial stops after 1 + patience epochs
        assert sorted(curve) == [0, 1, 2] and trial.user_attrs["early_stopped_at_epoch"] == 2
        assert run.data.tags["sweep.early_stopped_at_epoch"] == "2"
        best_epoch = min(curve, key=lambda e: (curve[e], e))
        assert trial.value == pytest.approx(curve[best_epoch]) and trial.user_attrs["best_epoch"] == best_epoch
        assert run.data.tags["sweep.best_epoch"] == str(best_epoch)
        assert trial.user_attrs["checkpoint_epoch"] == best_epoch


def test_enqueued_points_run_first_and_once(tmp_path: Path) -> None:
    """Baselines in study.enqueue are the first trials, with exactly those values, and a resume does not
    run them again."""
    baselines = [{"weights.log10_ratio": 0.0}, {"weights.log10_ratio": 1.0, "optimizer.lr": 0.01}]
    path = write_yaml(tmp_path / "e.yaml", tiny_study("enq", study={"n_trials": 3, "enqueue": baselines}))
    _run(tmp_path, path)
    _run(tmp_path, path, "--n-trials", "5")
    trials = sorted(_study(tmp_path, "enq").trials, key=lambda t: t.number)
    assert len(trials) == 5
    assert trials[0].params["weights.log10_ratio"] == 0.0
    assert trials[1].params["weights.log10_ratio"] == 1.0 and trials[1].params["optimizer.lr"] == 0.01
    assert trials[0].user_attrs["weights"] == pytest.approx([0.5, 0.5])  # equal weights
    assert sum(t.params["weights.log10_ratio"] == 0.0 for t in trials) == 1
    assert sum(t.params.get("optimizer.lr") == 0.01 and t.params["weights.log10_ratio"] == 1.0 for t in trials) == 1


def test_an_enqueued_name_that_is_not_searched_is_refused(tmp_path: Path) -> None:
    write_yaml(tmp_path / "x.yaml", tiny_study("x", study={"enqueue": [{"optimizer.momentum": 0.5}]}))
    out = run_main("sweep.run", "x.yaml", cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.startswith("error: x.yaml: study.enqueue.0.optimizer.momentum: not a searched parameter")


@pytest.mark.slow
def test_register_the_best_model_on_sqlite(tmp_path: Path) -> None:
    """--register logs the trial's model with mlflow.pytorch.log_model on its run and registers it; the
    registered model predicts as the rebuilt one, and the trial's run stays FINISHED."""
    path = write_yaml(tmp_path / "r.yaml", tiny_study("reg", study={"n_trials": 2}))
    _run(tmp_path, path)
    out = run_main("sweep.export", str(path), "-o", "best.yaml", "--register", "tiny-best", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "as 'tiny-best' version 1" in out.stdout
    best = _study(tmp_path, "reg").best_trial
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    (version,) = client.search_model_versions("name = 'tiny-best'")
    assert version.run_id == best.user_attrs["mlflow_run_id"]
    assert client.get_run(version.run_id).info.status == "FINISHED"
    mlflow.set_tracking_uri(uri)
    loaded = mlflow.pytorch.load_model("models:/tiny-best/1")
    x = torch.randn(5, 4)
    with torch.no_grad():
        expected = rebuild(best.user_attrs["config"], _weights(tmp_path, path))(x)
        assert torch.allclose(loaded(x), expected)


def _weights(tmp_path: Path, path: Path) -> Path:
    out = run_main("sweep.export", str(path), "-o", "w.yaml", "--weights", "w", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    return tmp_path / "w" / "weights.pt"


def test_alternating_trials_keep_both_models(tmp_path: Path) -> None:
    """A coupled problem's trial keeps model_a and model_b; rebuilt, they run end to end as B(A(x)).
    With epoch: model_steps in alternate mode both models take a pass's worth of steps per epoch."""
    doc = tiny_study("alt", study={"n_trials": 1})
    doc["objective"] = {
        "loop": "alternating",
        "problem": {"name": "digits_codes", "options": {"n_train": 200, "code_dim": 4, "hidden": 16}},
        "epochs": 2,
        "batch_size": 32,
        "device": "cpu",
        "checkpoint": "best",
        "mode": "alternate",
        "epoch": "model_steps",
    }
    doc["search"] = {"params": {"model_a.optimizer.lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}}}
    path = write_yaml(tmp_path / "a.yaml", doc)
    _run(tmp_path, path)
    state = torch.load(_weights(tmp_path, path), weights_only=True)
    assert set(state) == {"model_a", "model_b"}
    trial = _study(tmp_path, "alt").trials[0]
    # epoch: model_steps — each model got a pass's worth of optimizer steps per epoch (200 / 32 → 7)
    run = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(trial.user_attrs["mlflow_run_id"])
    assert run.data.metrics["opt_steps_a"] == run.data.metrics["opt_steps_b"] == 2 * 7
    model = rebuild(trial.user_attrs["config"], tmp_path / "w" / "weights.pt")
    with torch.no_grad():
        assert model(torch.randn(3, 64)).shape == (3, 10)
