"""``objective.repeats`` through the CLI: a trial's value is the mean of its seeds' standalone runs, its run
logs the spread, pruning sees the mean, an export replays it, and an evaluation trains one model per seed."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient

from objectives import dual_loss, repeats
from objectives.config import DualLossConfig
from sweep.studyfile.config import load_study
from tests.conftest import run_main, tiny_study, write_yaml


def _study(tmp_path: Path) -> optuna.Study:
    return optuna.load_study(study_name="rep", storage=f"sqlite:///{tmp_path / '.sweep' / 'optuna.db'}")


def test_a_trials_value_is_the_mean_of_its_seeds_and_its_export_replays_it(tmp_path: Path) -> None:
    data = tiny_study("rep", study={"n_trials": 2, "pruner": "none"})
    data["objective"]["repeats"] = 3
    path = write_yaml(tmp_path / "rep.yaml", data)
    ran = run_main("sweep.run", str(path), "--no-report", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    study = _study(tmp_path)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    for trial in study.trials:
        cfg = DualLossConfig.model_validate(trial.user_attrs["config"])
        assert cfg.repeats == 3
        alone = [dual_loss.train(m)["val_total_loss"] for m in repeats.members(cfg)]  # each seed on its own
        assert math.isclose(trial.value, sum(alone) / 3, rel_tol=1e-5), (trial.number, trial.value, alone)
        assert len(trial.intermediate_values) == 3  # pruning saw the mean every epoch
        assert math.isclose(trial.intermediate_values[2], trial.value, rel_tol=1e-12)
        spread = client.get_metric_history(trial.user_attrs["mlflow_run_id"], "val_total_loss_sd")
        assert [m.step for m in spread] == [0, 1, 2]

        assert math.isclose(spread[-1].value, statistics.stdev(alone), rel_tol=1e-4)

    exported = run_main("sweep.export", str(path), "-o", "best.yaml", cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    assert load_study(tmp_path / "best.yaml").objective.repeats == 3
    replay = run_main("sweep.run", "best.yaml", "--no-report", cwd=tmp_path)
    assert replay.returncode == 0, replay.stderr
    best = study.best_trial
    again = optuna.load_study(
        study_name=f"rep-trial{best.number}", storage=f"sqlite:///{tmp_path / '.sweep' / 'optuna.db'}"
    )
    assert again.trials[0].value == pytest.approx(best.value, rel=1e-6)


def test_repeats_cannot_be_searched(tmp_path: Path) -> None:
    data = tiny_study("rep")
    data["search"]["params"]["repeats"] = {"type": "int", "low": 1, "high": 3}
    ran = run_main("sweep.run", str(write_yaml(tmp_path / "s.yaml", data)), cwd=tmp_path)
    assert ran.returncode != 0
    assert "search.params.repeats" in ran.stderr and "cannot be searched" in ran.stderr
    assert not (tmp_path / ".sweep").exists()


def test_one_after_another_every_seeds_epoch_is_progress_to_the_watchdog(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A trial whose seeds train one after another (gradnorm) reports nothing while the seeds before the
    first train: the watchdog's stall clock must still hear their epochs, else ``stall_timeout`` fails a
    healthy trial as hung. Counted in process, no clock: progress per epoch of each seed."""
    from sweep.trials.watchdog import Watchdog

    heard: list[int] = []
    real = Watchdog.progress
    monkeypatch.setattr(Watchdog, "progress", lambda self, epoch: (heard.append(epoch), real(self, epoch))[1])
    data = tiny_study("rep", study={"n_trials": 1, "pruner": "none"})
    data["objective"].update(repeats=2, weighting={"type": "gradnorm"})
    ran = run_main("sweep.run", str(write_yaml(tmp_path / "rep.yaml", data)), "--no-report", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert heard == [0, 1, 2, 0, 1, 2]  # the second seed's epochs, then the first's (with the mean)


def test_an_evaluation_trains_one_model_per_fresh_seed_whatever_the_trials_repeats() -> None:
    """``sweep.evaluate`` and ``sweep.noise`` retrain a recorded config per fresh seed (config_for): each is
    one model (repeats 1), the fresh seed its own; the data seed stays the search's."""
    from sweep.results.evaluation import config_for

    recorded = DualLossConfig(problem="linear_pair", seed=5, data_seed=7, repeats=3).model_dump(mode="json")
    cfg = config_for(recorded, 11, "cpu")
    assert (cfg.repeats, cfg.seed, cfg.data_seed) == (1, 11, 7)
