"""``python -m sweep.noise`` (sweep/commands/noise.py), in process: which configuration it measures, that its
figures are those of the configuration's seeds trained alone, and that it writes nothing."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import optuna
import pytest

from objectives.loops import LOOPS
from sweep.commands.noise import Z95_DIFF, Measured, configuration, summary, values
from sweep.core.records import Attr
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


def _pruned_only_study(tmp_path: Path, config: dict) -> Path:
    """A study file whose storage holds one trial, pruned after one epoch (Optuna gives it that epoch's value)."""
    path = _file(tmp_path)
    (tmp_path / ".sweep").mkdir()
    study = optuna.create_study(study_name="noise", storage=f"sqlite:///{tmp_path / '.sweep' / 'optuna.db'}")
    trial = study.ask()
    trial.set_user_attr(Attr.CONFIG, config)
    trial.report(0.5, 0)
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    assert study.trials[0].values == [0.5]  # what made the pruned trial look complete
    return path


def test_a_pruned_trial_is_neither_the_best_nor_measurable_by_number(tmp_path: Path) -> None:
    """A pruned trial's value is a training cut short: --trial N of it is refused, saying so, and a study with
    no complete trial measures the file's objective (instead of a traceback from Optuna's best_trial)."""
    sf = load_study(_file(tmp_path))
    recorded = configuration(sf.study, sf.search, sf.objective, None).config
    path = _pruned_only_study(tmp_path, recorded)
    out = run_main("sweep.noise", str(path), "--seeds", "2", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "the file's objective with equal loss weights" in out.stdout and "own value" not in out.stdout
    numbered = run_main("sweep.noise", str(path), "--seeds", "2", "--trial", "0", cwd=tmp_path)
    assert numbered.returncode != 0 and "no complete trial #0 (it is pruned)" in numbered.stderr
    assert len(numbered.stderr.strip().splitlines()) == 1


def test_a_trials_own_value_with_repeats_is_a_mean_compared_in_its_own_sd() -> None:
    """With repeats r the trial's value is the mean of r seeds: its distance is in units of sd/√r, and the
    line does not call it one seed's."""
    seeds = [1.0, 1.2, 0.8, 1.1]
    sd = statistics.stdev(seeds)
    text = "\n".join(summary("val_total_loss", seeds, own=0.7, own_repeats=4))
    assert "(the mean of its 4 seeds)" in text and "its one seed" not in text
    assert f"{(0.7 - statistics.mean(seeds)) / (sd / 2):+.2f} sd/√4" in text
    assert Measured({"repeats": 4}, "t").repeats == 4 and Measured({}, "t").repeats == 1


def test_a_comparisons_choice_is_measured_with_that_choice(tmp_path: Path) -> None:
    """``--compare-value gradnorm`` measures gradnorm (the sub-study fixes its compared key), and says so —
    not the objective's default weighting under the sub-study's name."""
    data = tiny_study("cmp", study={"n_trials": 2, "compare": "weighting.type"})
    data["search"]["params"]["weighting.type"] = {"type": "categorical", "choices": ["static", "gradnorm"]}
    path = write_yaml(tmp_path / "c.yaml", data)
    from sweep.studyfile.compare import member

    sub = member(load_study(path), "gradnorm").sf
    measured = configuration(sub.study, sub.search, sub.objective, None)
    assert measured.config["weighting"]["type"] == "gradnorm" and "weighting.type=gradnorm" in measured.which
    out = run_main("sweep.noise", str(path), "--seeds", "2", "--compare-value", "gradnorm", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "cmp.gradnorm: the file's objective with equal loss weights, weighting.type=gradnorm" in out.stdout
    assert not (tmp_path / ".sweep").exists() and not (tmp_path / "mlflow.db").exists()  # wrote nothing
    whole = run_main("sweep.noise", str(path), "--seeds", "2", cwd=tmp_path)  # which choice? it does not guess
    assert whole.returncode != 0 and "give --compare-value CHOICE (static, gradnorm)" in whole.stderr


def test_with_early_stopping_each_seeds_value_is_the_one_a_trial_would_report(tmp_path: Path) -> None:
    """A trial with early stopping completes with its best epoch's value once its target stalls: each fresh
    seed's value is that too (not its last epoch's after training on), so the spread is that of trials' values."""
    from objectives.config import EarlyStopping
    from sweep.results.scoring import EarlyStop, Score

    data = tiny_study("noise", study={"n_trials": 3, "pruner": "none"})
    data["objective"].update(epochs=6, early_stopping={"patience": 1, "min_delta": 1e9})  # stops at epoch 1
    path = write_yaml(tmp_path / "n.yaml", data)
    sf = load_study(path)
    recorded = configuration(sf.study, sf.search, sf.objective, None).config
    seeds = evaluation_seeds(sf.study.seed, 2)
    expected = []
    for seed in seeds:
        score = Score("minimize", "last", EarlyStopping(patience=1, min_delta=1e9))
        history: list[float] = []
        with pytest.raises(EarlyStop):  # the trial's reporter stops it
            config = config_for(recorded, seed, "cpu")
            LOOPS[config.loop].train(
                config, lambda e, m, h=history, s=score: (h.append(m["val_total_loss"]), s.add(e, h[-1]))
            )
        expected.append(score.value())
        assert score.value() == min(history[:2])
    out = run_main("sweep.noise", str(path), "--seeds", "2", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert f"mean {statistics.mean(expected):.6g}," in out.stdout


def test_seeds_that_do_not_fit_as_one_group_train_one_after_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """n seeds as one group need n× the memory of one: out of memory, they train one after another (with a
    note) and give each seed's standalone value."""
    import torch

    import sweep.commands.noise as noise

    def too_big(*args: object, **kwargs: object) -> list:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB")

    sf = load_study(_file(tmp_path))
    recorded = configuration(sf.study, sf.search, sf.objective, None).config
    cfgs = [config_for(recorded, s, "cpu") for s in evaluation_seeds(0, 2)]
    grouped = values(cfgs, ["val_total_loss"], [None], progress=False)
    monkeypatch.setattr(noise, "train_group", too_big)
    alone = values(cfgs, ["val_total_loss"], [None], progress=False)
    assert [row[0] for row in alone] == pytest.approx([row[0] for row in grouped], rel=1e-5)
    assert "2 seeds as one vectorized group ran out of memory" in capsys.readouterr().err
