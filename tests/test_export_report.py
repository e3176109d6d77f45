"""Export → replay → same value; reports; the UI command; secrets stay out of exported and logged files."""

from __future__ import annotations

import ast
import csv
import json
import uuid
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient
from optuna.trial import TrialState, create_trial

from sweep.commands.export import knee
from sweep.studyfile.config import load_study, parse_study
from tests.conftest import postgres_error, run_cli, run_main, tiny_study, write_yaml


def _storage(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / '.sweep' / 'optuna.db'}"


@pytest.mark.slow
def test_export_replays_the_trial(tmp_path: Path) -> None:
    """The exported best trial validates, has no search space, and replays to the same value (CPU)."""
    path = write_yaml(tmp_path / "tiny.yaml", tiny_study("replay", study={"n_trials": 4}))
    assert run_cli("sweep.run", str(path), "--no-report", cwd=tmp_path).returncode == 0
    exported = run_main("sweep.export", str(path), "-o", "best.yaml", cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    study = optuna.load_study(study_name="replay", storage=_storage(tmp_path))
    best = study.best_trial
    assert f"Exported trial #{best.number}" in exported.stdout

    sf = load_study(tmp_path / "best.yaml")
    assert sf.search.is_empty and sf.study.n_trials == 1
    assert sf.objective.seed == best.user_attrs["seed"]
    assert sf.provenance["trial"] == best.number and sf.provenance["mlflow_run_id"] == best.user_attrs["mlflow_run_id"]
    assert sf.provenance["study"] == "replay" and sf.provenance["storage"] == "sqlite:///.sweep/optuna.db"
    assert sf.provenance["values.val_total_loss"] == best.value and "best val_total_loss" in sf.provenance["chosen_by"]
    assert {"versions.sweep", "versions.torch", "versions.optuna", "versions.mlflow"} <= set(sf.provenance)
    assert (tmp_path / "best.yaml").read_text().startswith("# Run: python -m sweep.run best.yaml")

    replay = run_main("sweep.run", "best.yaml", "--no-report", cwd=tmp_path)
    assert replay.returncode == 0, replay.stderr
    again = optuna.load_study(study_name=f"replay-trial{best.number}", storage=_storage(tmp_path))
    assert again.trials[0].value == pytest.approx(best.value, rel=1e-6)
    # the replay is logged like any trial, in the same experiment, under its own parent run
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.get_run(again.trials[0].user_attrs["mlflow_run_id"])
    assert run.info.experiment_id == client.get_experiment_by_name("replay").experiment_id
    parent = client.get_run(run.data.tags["mlflow.parentRunId"])
    assert parent.data.tags["sweep.provenance.trial"] == str(best.number)

    other = next(t.number for t in study.trials if t.number != best.number and t.state == TrialState.COMPLETE)
    by_number = run_main("sweep.export", str(path), "--trial", str(other), "-o", "other.yaml", cwd=tmp_path)
    assert by_number.returncode == 0 and load_study(tmp_path / "other.yaml").provenance["trial"] == other
    missing = run_main("sweep.export", str(path), "--trial", "99", "-o", "x.yaml", cwd=tmp_path)
    assert missing.returncode == 1 and "trial 99" in missing.stderr and not (tmp_path / "x.yaml").exists()


def test_export_before_any_run_creates_nothing(tmp_path: Path) -> None:
    """Export/report on a study that was never run: one error line, exit 1, no storage created."""
    path = write_yaml(tmp_path / "tiny.yaml", tiny_study("never"))
    for module in ("sweep.export", "sweep.report"):
        result = run_main(module, str(path), cwd=tmp_path)
        assert result.returncode == 1 and "run python -m sweep.run" in result.stderr
    assert not (tmp_path / ".sweep").exists()


def _trial(number: int, values: list[float]) -> optuna.trial.FrozenTrial:
    t = create_trial(values=values, params={}, distributions={})
    t.number = number
    return t


def test_knee_point() -> None:
    """The knee is the front point nearest the ideal after scaling each objective to [0, 1]."""
    front = [_trial(0, [0.0, 0.0]), _trial(1, [0.2, 0.5]), _trial(2, [1.0, 1.0])]  # minimise, maximise
    assert knee(front, ["minimize", "maximize"]).number == 1  # (0.2, 0.5) vs ideal (0, 1)
    assert knee([_trial(0, [0.0, 1.0]), _trial(1, [0.45, 0.45]), _trial(2, [1.0, 0.0])], ["minimize"] * 2).number == 1


def test_multi_objective_export_rules(tmp_path: Path) -> None:
    """A multi-objective export lists the front and picks by --prefer or the knee, recording the rule."""
    doc = tiny_study("mo", study={"metrics": ["val_a_loss", "val_b_loss"], "n_trials": 6})
    path = write_yaml(tmp_path / "mo.yaml", doc)
    assert run_main("sweep.run", str(path), cwd=tmp_path).returncode == 0
    study = optuna.load_study(study_name="mo", storage=_storage(tmp_path))
    knee_out = run_main("sweep.export", str(path), "-o", "knee.yaml", cwd=tmp_path)
    assert knee_out.returncode == 0 and "Pareto front of 'mo'" in knee_out.stdout
    assert "knee point" in load_study(tmp_path / "knee.yaml").provenance["chosen_by"]
    prefer = run_main("sweep.export", str(path), "--prefer", "val_b_loss", "-o", "b.yaml", cwd=tmp_path)
    assert prefer.returncode == 0
    chosen = load_study(tmp_path / "b.yaml").provenance["trial"]
    assert chosen == min(study.best_trials, key=lambda t: t.values[1]).number
    bad = run_main("sweep.export", str(path), "--prefer", "val_total_loss", cwd=tmp_path)
    assert bad.returncode == 1 and "not one of" in bad.stderr
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    logged = {a.path for a in client.list_artifacts(study.user_attrs["mlflow_parent_run_id"], "report")}
    assert {"report/pareto_front.png", "report/pareto_front.html"} <= logged  # the run's own report


def test_report_files_and_parent_artifacts(tmp_path: Path) -> None:
    """sweep.report writes one CSV row per trial with its state, plots as PNG and HTML; the parent run has them too."""
    doc = tiny_study(
        "rep",
        study={"n_trials": 6, "pruner": {"type": "median", "n_startup_trials": 1, "n_warmup_steps": 0}},
        objective={"epochs": 4},
        tracking={"trial_plots": True},
    )
    doc["search"]["params"]["optimizer.lr"] = {"type": "float", "low": 1e-5, "high": 1e-1, "log": True}
    path = write_yaml(tmp_path / "rep.yaml", doc)
    assert run_main("sweep.run", str(path), cwd=tmp_path).returncode == 0
    result = run_main("sweep.report", str(path), "-o", "out", "--top", "3", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    header = next(line for line in result.stdout.splitlines() if "val_total_loss" in line)
    for column in ("weight.a", "weight.b", "optimizer.lr", "state", "duration_s"):
        assert column in header, (column, header)
    study = optuna.load_study(study_name="rep", storage=_storage(tmp_path))
    with open(tmp_path / "out" / "trials.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [(int(r["number"]), r["state"]) for r in rows] == [(t.number, t.state.name) for t in study.trials]
    plots = ("optimization_history", "param_importances", "weights_vs_objective", "intermediate_values")
    for name in (*plots, "parallel_coordinate"):
        for ext in ("png", "html"):
            assert (tmp_path / "out" / f"{name}.{ext}").stat().st_size > 1000, (name, ext)
    assert (tmp_path / "out" / "trials.parquet").exists()
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    parent = client.get_run(study.user_attrs["mlflow_parent_run_id"])
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/trials.csv", "report/weights_vs_objective.png", "report/optimization_history.html"} <= logged
    parent_csv = Path(client.download_artifacts(parent.info.run_id, "report/trials.csv", str(tmp_path)))
    assert {"val_a_loss", "val_b_loss", "peak_memory_mb"} <= set(parent_csv.read_text().splitlines()[0].split(","))
    child = study.trials[0].user_attrs["mlflow_run_id"]
    assert "loss_curves.png" in {a.path for a in client.list_artifacts(child)}  # tracking.trial_plots: true


def test_the_report_shows_each_trials_logged_metrics_at_its_kept_epoch(tmp_path: Path) -> None:
    """trials.csv has every metric the loop logged (each task's losses and accuracies, weights, LR,
    ``peak_memory_mb``) as it was at the trial's kept epoch (``score: best``: the best one, not the last);
    the top table shows the validation metrics and the peak memory."""
    doc = _maximized("logged", n_trials=3)
    doc["study"]["score"] = "best"
    doc["objective"]["epochs"] = 4
    doc["search"]["params"]["optimizer.lr"] = {"type": "float", "low": 0.05, "high": 1.0, "log": True}
    path = write_yaml(tmp_path / "logged.yaml", doc)
    assert run_main("sweep.run", str(path), "--no-report", "--no-progress", cwd=tmp_path).returncode == 0
    result = run_main("sweep.report", str(path), "-o", "out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    study = optuna.load_study(study_name="logged", storage=_storage(tmp_path))
    frame = pd.read_csv(tmp_path / "out" / "trials.csv").set_index("number")
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    logged = ("val_a_loss", "val_b_loss", "val_a_acc", "val_b_acc", "train_a_loss", "weight_a", "lr", "peak_memory_mb")
    for trial in study.trials:
        kept = trial.user_attrs["best_epoch"]
        run_id = trial.user_attrs["mlflow_run_id"]
        for key in logged:
            at = {m.step: m.value for m in client.get_metric_history(run_id, key)}
            assert frame.loc[trial.number, key] == pytest.approx(at[kept], rel=1e-12), (trial.number, key)
        assert frame.loc[trial.number, "val_a_acc"] == pytest.approx(trial.value, rel=1e-12)
    assert any(t.user_attrs["best_epoch"] != max(t.intermediate_values) for t in study.trials)  # not the last
    header = (tmp_path / "out" / "top.txt").read_text().splitlines()[0].split()
    assert {"val_a_loss", "val_b_loss", "val_b_acc", "peak_memory_mb"} <= set(header), header
    assert header == next(line for line in result.stdout.splitlines() if "val_b_loss" in line).split()


def test_a_replays_run_is_named_after_what_it_replays() -> None:
    """The name an exported file's trial runs get (its provenance), not ``trial-0`` beside the original."""
    from sweep.tracking.lineage import replay_run_prefix

    assert replay_run_prefix({"study": "quickstart", "trial": 7}) == "replay of quickstart trial-7 · "
    assert replay_run_prefix(None) == replay_run_prefix({}) == ""  # not a replay: trial-<number>


def test_a_replayed_run_is_not_named_like_the_original(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "s.yaml", tiny_study("named", study={"n_trials": 2}))
    assert run_main("sweep.run", str(path), "--no-report", "--no-progress", cwd=tmp_path).returncode == 0
    exported = run_main("sweep.export", str(path), "--trial", "1", "-o", "best.yaml", cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    replay = run_main("sweep.run", "best.yaml", "--no-report", "--no-progress", cwd=tmp_path)
    assert replay.returncode == 0, replay.stderr
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    again = optuna.load_study(study_name="named-trial1", storage=_storage(tmp_path)).trials[0]
    assert client.get_run(again.user_attrs["mlflow_run_id"]).info.run_name == "replay of named trial-1 · trial-0"


def test_ui_command(tmp_path: Path) -> None:
    """sweep.ui prints the loopback URL of the study's runs; without a tracked study it says so."""
    path = write_yaml(tmp_path / "tiny.yaml", tiny_study("ui", study={"n_trials": 1}))
    assert run_main("sweep.run", str(path), cwd=tmp_path).returncode == 0
    shown = run_main("sweep.ui", str(path), "--port", "5123", "--print-only", cwd=tmp_path)
    assert shown.returncode == 0
    assert "http://127.0.0.1:5123/#/experiments/1/runs" in shown.stdout and "--host 127.0.0.1" in shown.stdout
    assert "starting" not in shown.stdout and "not started" in shown.stdout  # --print-only starts nothing
    other = write_yaml(tmp_path / "other.yaml", tiny_study("not-run"))
    missing = run_main("sweep.ui", str(other), "--print-only", cwd=tmp_path)
    assert missing.returncode == 1 and "run the study first" in missing.stderr


@pytest.mark.slow
@pytest.mark.skipif(bool(postgres_error()), reason=postgres_error() or "")
def test_no_password_in_exports_or_logs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A password in the storage URL (trust auth ignores it) appears in no output, MLflow file or export."""
    password = f"pw{uuid.uuid4().hex[:12]}"
    name = f"secret-{uuid.uuid4().hex[:8]}"
    url = f"postgresql+psycopg2://postgres:{password}@127.0.0.1:5432/test"
    path = write_yaml(tmp_path / "s.yaml", tiny_study(name, study={"storage": url, "n_trials": 2}))
    try:
        outputs = [run_cli("sweep.run", str(path), cwd=tmp_path)]  # with the report: its files are checked too
        outputs.append(run_main("sweep.export", str(path), "-o", "best.yaml", cwd=tmp_path))
        outputs.append(run_main("sweep.report", str(path), "-o", "rep", cwd=tmp_path))
        assert all(o.returncode == 0 for o in outputs), [o.stderr for o in outputs]
        for o in outputs:
            assert password not in o.stdout and password not in o.stderr
        for file in tmp_path.rglob("*"):
            if file.is_file() and file.name != "s.yaml":
                assert password.encode() not in file.read_bytes(), file
        exported = yaml.safe_load((tmp_path / "best.yaml").read_text())
        assert exported["study"]["storage"] == url.replace(password, "${SWEEP_PASSWORD}")
        monkeypatch.setenv("SWEEP_PASSWORD", password)
        assert load_study(tmp_path / "best.yaml").study.storage == url  # replays once the variable is set
        parse_study(exported, "best.yaml", substitute_env=False)
    finally:
        optuna.delete_study(study_name=name, storage=url)


def test_export_replays_a_trial_on_the_dataloader_path(tmp_path: Path) -> None:
    """Datasets with random augmentation read by 2 DataLoader workers per task: the exported best trial
    replays to the same value bit for bit (loader shuffling and worker RNGs are seeded from the trial)."""
    doc = tiny_study("loader", study={"n_trials": 3})
    doc["objective"] = {
        **doc["objective"],
        "problem": "tests.support.fault_problems:augmented",
        "data": {"num_workers": 2, "persistent_workers": True},
    }
    path = write_yaml(tmp_path / "loader.yaml", doc)
    ran = run_main("sweep.run", str(path), "--no-report", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    study = optuna.load_study(study_name="loader", storage=_storage(tmp_path))
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    assert len({t.value for t in study.trials}) == 3  # the trials differ
    exported = run_main("sweep.export", str(path), "-o", "best.yaml", cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    assert load_study(tmp_path / "best.yaml").objective.data.num_workers == 2
    replay = run_main("sweep.run", "best.yaml", "--no-report", cwd=tmp_path)
    assert replay.returncode == 0, replay.stderr
    again = optuna.load_study(study_name=f"loader-trial{study.best_trial.number}", storage=_storage(tmp_path))
    assert again.trials[0].value == study.best_value


def _maximized(name: str, n_trials: int = 4) -> dict:
    """A tiny study maximising an accuracy (val_a_acc, on digits_pair) with distinct learning rates."""
    return tiny_study(
        name,
        study={"metric": "val_a_acc", "n_trials": n_trials, "pruner": {"type": "none"}},
        objective={
            "problem": {
                "name": "digits_pair",
                "options": {"n_a": 200, "n_b": 40, "n_val": 200, "n_test": 100, "hidden": 8},
            }
        },
    )


def _study_of(direction: str, values: list[float]) -> optuna.Study:
    """An in-memory study (``direction``) of complete trials 0, 1, ... with these values."""
    study = optuna.create_study(direction=direction)
    for value in values:
        study.add_trial(create_trial(params={}, distributions={}, value=value))
    return study


def test_export_of_a_maximized_study_takes_the_highest_trial() -> None:
    """Without --trial, a maximised study exports its highest trial (a minimised one its lowest), and the
    rule it records names the direction."""
    from sweep.commands.export import choose

    sf = parse_study(_maximized("acc"), "acc.yaml")
    values = [0.50, 0.90, 0.20, 0.70]
    trial, rule = choose(_study_of("maximize", values), sf.study, None, None)
    assert (trial.number, trial.value, rule) == (1, 0.90, "best val_a_acc (maximize)")
    loss = parse_study(tiny_study("loss"), "loss.yaml")
    assert choose(_study_of("minimize", values), loss.study, None, None)[0].number == 2


def test_a_maximized_study_is_exported_evaluated_reported_and_linked_best_first(tmp_path: Path) -> None:
    """End to end on a study maximising val_a_acc (4 trials, distinct values): the Optuna study maximises,
    sweep.export takes the highest trial, sweep.evaluate --top 2 retrains the two highest, sweep.report's
    top table lists all four highest first, and sweep.ui's link opens a view sorted descending."""
    path = write_yaml(tmp_path / "max.yaml", _maximized("max"))
    result = run_main("sweep.run", str(path), "--no-report", "--no-progress", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    study = optuna.load_study(study_name="max", storage=_storage(tmp_path))
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    best_first = [t.number for t in sorted(study.trials, key=lambda t: -t.value)]
    assert len({t.value for t in study.trials}) == 4  # distinct: the order is well defined

    exported = run_main("sweep.export", str(path), "-o", "best.yaml", cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    assert load_study(tmp_path / "best.yaml").provenance["trial"] == best_first[0]

    evaluated = run_main("sweep.evaluate", str(path), "--top", "2", "--seeds", "1", "--no-progress", cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("max").experiment_id], max_results=100)
    tags = [r.data.tags["sweep.trial"] for r in runs if r.data.tags.get("sweep.role") == "evaluation"]
    assert sorted(tags) == sorted(str(n) for n in best_first[:2])

    report = run_main("sweep.report", str(path), "-o", "out", "--top", "4", cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    rows = (tmp_path / "out" / "top.txt").read_text().splitlines()[1:]
    assert [int(row.split()[0]) for row in rows] == best_first

    shown = run_main("sweep.ui", str(path), "--print-only", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    key = shown.stdout.split("viewStateShareKey=")[1].split()[0]
    experiment = client.get_experiment_by_name("max")
    state = json.loads(json.loads(experiment.tags[f"mlflow.sharedViewState.{key}"])["state"])
    assert (state["orderByKey"], state["orderByAsc"]) == ("metrics.`val_a_acc`", False)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Query string argument:Warning")  # SQLAlchemy: SQLite ignores ?password=
def test_no_secret_in_url_parameters_reaches_outputs_stores_or_exports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Secrets as URL query parameters (SQLite ignores ``?password=``/``?token=``, so this runs anywhere):
    one from the environment (``${SWEEP_TEST_PW}``), one written literally. Neither appears in any output,
    the Optuna or MLflow store, a tag, an artifact, the report or the export; the export writes the
    reference as the file wrote it and the literal one as ``${SWEEP_PASSWORD}``."""
    from_env, literal = f"pw{uuid.uuid4().hex[:12]}", f"tk{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("SWEEP_TEST_PW", from_env)
    storage = "sqlite:///optuna.db?password=${SWEEP_TEST_PW}"
    tracking = f"sqlite:///mlflow.db?token={literal}"
    doc = tiny_study("params", study={"storage": storage, "n_trials": 2}, tracking={"uri": tracking})
    path = write_yaml(tmp_path / "s.yaml", doc)
    outputs = [run_cli("sweep.run", str(path), cwd=tmp_path)]  # a real process, with the report
    outputs.append(run_main("sweep.export", str(path), "-o", "best.yaml", cwd=tmp_path))
    assert all(o.returncode == 0 for o in outputs), [o.stderr for o in outputs]
    for secret in (from_env, literal):
        for o in outputs:
            assert secret not in o.stdout and secret not in o.stderr
        for file in tmp_path.rglob("*"):
            if file.is_file() and file.name != "s.yaml":
                assert secret.encode() not in file.read_bytes(), file

    exported = yaml.safe_load((tmp_path / "best.yaml").read_text())
    assert exported["study"]["storage"] == storage  # the reference, as written
    assert exported["tracking"]["uri"] == "sqlite:///mlflow.db?token=${SWEEP_PASSWORD}"
    assert exported["provenance"]["storage"] == "sqlite:///optuna.db?password=***"
    monkeypatch.setenv("SWEEP_PASSWORD", literal)
    replayed = load_study(tmp_path / "best.yaml")
    assert (replayed.study.storage, replayed.tracking.uri) == (storage.replace("${SWEEP_TEST_PW}", from_env), tracking)

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("params").experiment_id
    parent = client.search_runs([experiment], "tags.`sweep.role` = 'parent'")
    assert parent[0].data.tags["sweep.storage"].endswith("optuna.db?password=***")
    logged = Path(client.download_artifacts(parent[0].info.run_id, "study.yaml", str(tmp_path / "dl"))).read_text()
    assert "optuna.db?password=***" in logged and "mlflow.db?token=***" in logged


def test_export_gives_objective_values_back_as_the_file_wrote_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """A trial's config holds substituted values (a user problem's ``token: ${TOKEN}`` is the token
    itself); the exported objective carries the reference again, except where the search changed it."""
    from sweep.commands.export import _as_written

    monkeypatch.setenv("SWEEP_TEST_TOKEN", "tk-secret")
    config = {"problem": {"name": "m:f", "options": {"token": "tk-secret", "n": 3}}, "mixing": "zip"}
    raw = {"problem": {"name": "m:f", "options": {"token": "${SWEEP_TEST_TOKEN}", "n": 3}}, "mixing": "${MIX}"}
    assert _as_written(config, raw) == {
        "problem": {"name": "m:f", "options": {"token": "${SWEEP_TEST_TOKEN}", "n": 3}},
        "mixing": "zip",  # ${MIX} is not set: not what the trial ran, so the trial's value stays
    }


_REPORT_IN_A_FRESH_PROCESS = """
import sys, warnings
from pathlib import Path
import optuna
from optuna.distributions import FloatDistribution
from optuna.trial import create_trial
from sweep.results.report import write_report
optuna.logging.set_verbosity(optuna.logging.ERROR)
study = optuna.create_study()
space = {"weights.log10_ratio": FloatDistribution(-3, 3), "optimizer.lr": FloatDistribution(0.01, 0.3, log=True)}
for i in range(12):
    params = {"weights.log10_ratio": -3 + i / 2, "optimizer.lr": 0.01 + 0.02 * (i % 5)}
    study.add_trial(create_trial(params=params, distributions=space, value=(i - 6) ** 2 + 0.01 * (i % 5),
                                 intermediate_values={0: 1.0}))
written, skipped = write_report(study, ["val_total_loss"], ["minimize"], ["a", "b"], Path(sys.argv[1]))
print("skipped", skipped)
print("sklearn loaded", "sklearn" in sys.modules)
print("importances", optuna.importance.get_param_importances(study))
import sklearn.ensemble  # a user's later import still works
print("later import", sklearn.ensemble.RandomForestRegressor.__name__)
"""


@pytest.mark.slow
def test_the_report_draws_importances_without_importing_scikit_learn(tmp_path: Path) -> None:
    """Optuna's importance package would import scikit-learn's forests (for fANOVA, unused): ~1 s of every run."""
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", _REPORT_IN_A_FRESH_PROCESS, str(tmp_path / "report")],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert out.returncode == 0, out.stderr
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines() if " " in line)
    assert lines["skipped"] == "[]" and lines["sklearn"] == "loaded False", out.stdout
    assert (tmp_path / "report" / "param_importances.png").stat().st_size > 1000
    importances = ast.literal_eval(lines["importances"])
    assert importances["weights.log10_ratio"] > importances["optimizer.lr"]  # PED-ANOVA, as without the block
    assert lines["later"] == "import RandomForestRegressor"
