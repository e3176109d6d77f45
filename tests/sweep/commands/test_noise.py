"""``python -m sweep.noise`` (sweep/commands/noise.py), in process: which configuration it measures, that its
figures are those of the configuration's seeds trained alone, and that it writes nothing."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import optuna
import pytest

from objectives.loops import LOOPS
from sweep.commands.noise import Z95_DIFF, configuration, summary, values
from sweep.results.evaluation import config_for, evaluation_seeds
from sweep.studyfile.config import load_study
from tests.conftest import run_main, tiny_study, write_yaml


def _file(tmp_path: Path, **study: object) -> Path:
    return write_yaml(tmp_path / "n.yaml", tiny_study("noise", study={"n_trials": 3, "pruner": "none", **study}))


def test_before_a_study_ran_it_measures_the_files_objective_with_equal_weights(tmp_path: Path) -> None:
    sf = load_study(_file(tmp_path))
    measured = configuration(sf.study, sf.search, sf.objective, None)
    assert measured.which == "the file's objective with equal loss weights" and measured.own is None
    assert measured.config["weights"] == [0.5, 0.5] and measured.config[
        "optimizer"
    ] == sf.objective.optimizer.model_dump(mode="json")
    assert not (tmp_path / ".sweep").exists()  # looking for the study created nothing


def test_values_are_each_fresh_seeds_standalone_training(tmp_path: Path) -> None:
    """Grouped or not, each seed's value is what that seed's config trains to alone (last epoch; best epoch
    with the best rule)."""
    sf = load_study(_file(tmp_path))
    recorded = configuration(sf.study, sf.search, sf.objective, None).config
    cfgs = [config_for(recorded, s, "cpu") for s in evaluation_seeds(0, 3)]
    alone = []
    for c in cfgs:
        history: list[float] = []
        LOOPS[c.loop].train(c, lambda e, m, h=history: h.append(m["val_total_loss"]))
        alone.append(history)
    rows = values(cfgs, ["val_total_loss", "val_total_loss"], [None, True], progress=False)
    for row, history in zip(rows, alone, strict=True):
        assert math.isclose(row[0], history[-1], rel_tol=1e-5) and math.isclose(row[1], min(history), rel_tol=1e-5)


def test_summary_states_the_spread_and_the_difference_that_is_more_than_noise() -> None:
    seeds = [1.0, 1.2, 0.8, 1.1]
    sd = statistics.stdev(seeds)
    text = "\n".join(summary("val_total_loss", seeds, own=0.7))
    assert f"sd {sd:.3g}" in text and f"closer than {Z95_DIFF * sd:.3g}" in text
    assert (
        f"objective.repeats: 4 (a trial's value the mean of 4 seeds; 4× the training): {Z95_DIFF * sd / 2:.3g}" in text
    )
    assert f"{(0.7 - statistics.mean(seeds)) / sd:+.2f} sd" in text
    diverged = "\n".join(summary("val_total_loss", [1.0, math.nan, 1.2]))
    assert "1 of 3 seeds diverged" in diverged
    assert "too few" in "\n".join(summary("val_total_loss", [1.0, math.nan]))


def test_after_a_study_it_measures_the_best_trial_and_says_how_lucky_its_seed_was(tmp_path: Path) -> None:
    path = _file(tmp_path)
    assert run_main("sweep.run", str(path), "--no-report", cwd=tmp_path).returncode == 0
    study = optuna.load_study(study_name="noise", storage=f"sqlite:///{tmp_path / '.sweep' / 'optuna.db'}")
    before = {p.name for p in tmp_path.rglob("*")}, (tmp_path / "mlflow.db").stat().st_size
    out = run_main("sweep.noise", str(path), "--seeds", "3", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert f"the best trial (#{study.best_trial.number})" in out.stdout and "3 fresh seeds × 3 epochs" in out.stdout
    assert "the trial's own value" in out.stdout
    assert ({p.name for p in tmp_path.rglob("*")}, (tmp_path / "mlflow.db").stat().st_size) == before  # wrote nothing
    other = next(t.number for t in study.trials if t.number != study.best_trial.number)
    chosen = run_main("sweep.noise", str(path), "--seeds", "2", "--trial", str(other), cwd=tmp_path)
    assert chosen.returncode == 0 and f"trial #{other}" in chosen.stdout


@pytest.mark.parametrize(
    ("args", "says"),
    [(["--seeds", "1"], "--seeds 1: give at least 2"), (["--trial", "7"], "no study storage")],
)
def test_bad_requests_are_one_line_and_write_nothing(tmp_path: Path, args: list[str], says: str) -> None:
    out = run_main("sweep.noise", str(_file(tmp_path)), *args, cwd=tmp_path)
    assert out.returncode != 0 and says in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert not (tmp_path / ".sweep").exists()
