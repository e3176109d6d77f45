"""A trial's trained model: its kept weights (``weights.pt``), the model rebuilt from them, and its entry
in the MLflow Model Registry.

A trial keeps the ``state_dict`` of each of its models at one epoch (``objective.checkpoint``) as the
artifact ``weights.pt`` of its run: ``{"model": ...}`` (dual-loss) or ``{"model_a": ..., "model_b":
...}`` (alternating), loadable with ``torch.load(path, weights_only=True)``.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import optuna
import torch

from objectives.data import call
from objectives.loops import LOOPS
from objectives.problems import build_problem
from objectives.resolved import resolved
from sweep.core.errors import SweepError, one_line
from sweep.core.records import Attr
from sweep.core.urls import absolute_sqlite, redact
from sweep.storage.storage import WEIGHTS
from sweep.tracking.tracking import quiet_mlflow


class Coupled(torch.nn.Module):
    """The alternating loop's two models as one: ``model_b(model_a(inputs))`` (what is registered)."""

    def __init__(self, model_a: torch.nn.Module, model_b: torch.nn.Module) -> None:
        super().__init__()
        self.model_a, self.model_b = model_a, model_b

    def forward(self, *inputs: Any, **named: Any) -> Any:
        z = self.model_a(*inputs, **named) if named or len(inputs) != 1 else call(self.model_a, inputs[0])
        return self.model_b(z)


def _client(uri: str) -> Any:
    from mlflow import MlflowClient

    quiet_mlflow()
    return MlflowClient(tracking_uri=absolute_sqlite(uri))


def download(uri: str, trial: optuna.trial.FrozenTrial, folder: Path) -> Path:
    """The trial's ``weights.pt``, copied into ``folder``.

    Raises:
        SweepError: the trial kept no weights, or the tracking store does not have them.
    """
    run_id = trial.user_attrs.get(Attr.RUN)
    if Attr.CHECKPOINT_EPOCH not in trial.user_attrs or run_id is None:
        raise SweepError(f"trial {trial.number} kept no weights (objective.checkpoint: none, or made before it)")
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            local = _client(uri).download_artifacts(run_id, WEIGHTS, tmp)
            return Path(shutil.copy(local, folder / WEIGHTS))
    except Exception as e:  # MLflow's errors embed the URL
        raise SweepError(f"cannot read the weights of trial {trial.number} from {redact(uri)}: {one_line(e)}") from None


def rebuild(config: dict[str, Any], path: Path) -> torch.nn.Module:
    """The trial's model with its kept weights: its problem's model(s) built from the recorded config."""
    cfg = resolved(LOOPS[config["loop"]].config.model_validate(config))
    loop = LOOPS[cfg.loop]
    problem = build_problem(cfg.problem.name, cfg.problem.options, cfg.data_seed, loop.name, loop.problem)
    state = torch.load(path, weights_only=True)
    if "model" in state:
        model = problem.make_model()
        model.load_state_dict(state["model"])
        return model.eval()
    a, b = problem.make_model_a(), problem.make_model_b()
    a.load_state_dict(state["model_a"])
    b.load_state_dict(state["model_b"])
    return Coupled(a, b).eval()


def register(uri: str, trial: optuna.trial.FrozenTrial, model: torch.nn.Module, name: str) -> int:
    """Log ``model`` with ``mlflow.pytorch.log_model`` on the trial's run and register it as ``name``.

    Returns:
        The new registered model version.
    """
    import mlflow
    import mlflow.pytorch

    quiet_mlflow()
    mlflow.set_tracking_uri(absolute_sqlite(uri))
    try:
        with mlflow.start_run(run_id=trial.user_attrs[Attr.RUN]):  # the trial's run: FINISHED again after
            # pickle: the model class as the problem defines it (pt2 would need an input example to trace)
            info = mlflow.pytorch.log_model(
                model, name="model", registered_model_name=name, serialization_format="pickle"
            )
    except Exception as e:
        raise SweepError(f"cannot register the model of trial {trial.number} as {name!r}: {one_line(e)}") from None
    return int(info.registered_model_version)
