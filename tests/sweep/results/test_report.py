"""``sweep.results.report``: the trials table and its columns, what each trial's run logged at its kept epoch,
the top-k text, the report's files and plots on a small in-memory study, and a trial's loss curves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib
import optuna
import pandas as pd
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from sweep.core.records import Attr
from sweep.results.report import kept_metrics, loss_curves_png, top_table, trials_frame, write_report
from sweep.studyfile.sections import TrackingSection
from sweep.tracking.tracking import Tracker, TrialRun

SPACE = {"weights.log10_ratio": FloatDistribution(-3, 3), "optimizer.lr": FloatDistribution(0.01, 0.3, log=True)}


def test_the_top_table_shows_every_searched_parameter() -> None:
    """Categorical params such as the alternating mode are columns of the top table, not only LRs/types."""
    frame = pd.DataFrame(
        {
            "number": [0, 1],
            "state": ["COMPLETE", "COMPLETE"],
            "val_total_loss": [0.5, 0.4],
            "param.mode": ["joint", "alternate"],
            "param.steps_b": [1, 3],
            "duration_s": [1.0, 2.0],
        }
    )
    table = top_table(frame, ["val_total_loss"], ["minimize"], 5)
    header, first = table.splitlines()[:2]
    assert "mode" in header and "steps_b" in header
    assert first.split()[0] == "1" and "alternate" in first  # best first


def test_the_top_table_of_a_maximized_study_lists_the_highest_first() -> None:
    """The report's top-k table ranks by the first metric in its direction: a maximised metric highest
    first (the lowest cut off), a minimised one lowest first."""
    frame = pd.DataFrame(
        {
            "number": [0, 1, 2, 3],
            "state": ["COMPLETE", "COMPLETE", "COMPLETE", "COMPLETE"],
            "val_a_acc": [0.50, 0.90, 0.20, 0.70],
            "duration_s": [1.0, 1.0, 1.0, 1.0],
        }
    )

    def ranked(direction: str) -> list[int]:
        rows = top_table(frame, ["val_a_acc"], [direction], 3).splitlines()[1:]
        return [int(row.split()[0]) for row in rows]

    assert ranked("maximize") == [1, 3, 0]
    assert ranked("minimize") == [2, 0, 3]


def test_the_top_table_leaves_out_unfinished_trials_and_orders_its_columns() -> None:
    """Only complete trials are ranked (a pruned one with a better value is not); the columns: number,
    metrics, weights, parameters (without their prefix), the logged validation metrics, memory, state, time."""
    frame = pd.DataFrame(
        {
            "number": [0, 1, 2],
            "state": ["COMPLETE", "PRUNED", "COMPLETE"],
            "val_total_loss": [0.5, 0.1, 0.25],
            "duration_s": [1.0, 2.0, 3.0],
            "param.optimizer.lr": [0.01, 0.02, 0.03],
            "weight.a": [0.5, 0.5, 0.25],
            "val_a_loss": [0.2, 0.05, 0.1],
            "train_a_loss": [0.3, 0.3, 0.3],  # training metrics are not shown
            "peak_memory_mb": [10.0, 11.0, 12.0],
            "fail_reason": [None, None, None],
        }
    )
    lines = top_table(frame, ["val_total_loss"], ["minimize"], 10).splitlines()
    assert lines[0].split() == [
        "number", "val_total_loss", "weight.a", "optimizer.lr", "val_a_loss", "peak_memory_mb", "state", "duration_s"
    ]  # fmt: skip
    assert [line.split()[0] for line in lines[1:]] == ["2", "0"]
    none = top_table(frame.assign(state=["PRUNED", "FAIL", "RUNNING"]), ["val_total_loss"], ["minimize"], 10)
    assert none == "No complete trial yet."


def _study(n: int = 6) -> optuna.Study:
    """An in-memory study of ``n`` complete trials over two parameters, and one failed trial."""
    study = optuna.create_study(study_name="rep")
    for i in range(n):
        params = {"weights.log10_ratio": -3 + i, "optimizer.lr": 0.01 + 0.02 * i}
        attrs = {Attr.WEIGHTS: [0.25 * (i % 4), 1 - 0.25 * (i % 4)], Attr.RUN: f"run{i}"}
        value = (i - 2) ** 2 + 0.5
        curve = {0: 10.0, 1: value}
        study.add_trial(create_trial(params=params, distributions=SPACE, value=value, user_attrs=attrs,
                                     intermediate_values=curve))  # fmt: skip
    study.add_trial(create_trial(state=TrialState.FAIL, user_attrs={Attr.FAIL: "out of memory"}))
    return study


def test_trials_frame_names_its_columns_for_people() -> None:
    """One row per trial: the value under the metric's name, ``param.*``, each loss's weight, the logged
    metrics (validation first, then training, the rest, memory last; none overwrites a column), the failure
    reason and the run id."""
    study = _study(3)
    logged = {
        0: {"peak_memory_mb": 7.0, "time_s": 1.0, "lr": 0.5, "train_a_loss": 1.5, "val_b_acc": 0.75, "val_a_loss": 2.0},
        2: {"val_a_loss": 3.0, "val_total_loss": 99.0},
    }
    frame = trials_frame(study, ["val_total_loss"], ["a", "b"], logged)
    assert list(frame.columns) == [
        "number", "state", "val_total_loss", "duration_s", "param.optimizer.lr", "param.weights.log10_ratio",
        "weight.a", "weight.b", "val_a_loss", "val_b_acc", "train_a_loss", "lr", "time_s", "peak_memory_mb",
        Attr.FAIL, Attr.RUN,
    ]  # fmt: skip
    assert frame["number"].tolist() == [0, 1, 2, 3]
    assert frame["state"].tolist() == ["COMPLETE", "COMPLETE", "COMPLETE", "FAIL"]
    assert frame["val_total_loss"].tolist()[:3] == [4.5, 1.5, 0.5]  # the study's value, not the logged 99
    assert frame["weight.b"].tolist()[:3] == [1.0, 0.75, 0.5] and pd.isna(frame["weight.a"][3])
    assert frame["val_a_loss"].tolist()[0::2] == [2.0, 3.0] and pd.isna(frame["val_a_loss"][1])
    assert frame[Attr.FAIL].tolist()[3] == "out of memory" and frame[Attr.RUN].tolist()[:3] == ["run0", "run1", "run2"]
    assert "weight.c" not in trials_frame(study, ["val_total_loss"], ["a", "b", "c"]).columns  # no third weight


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")  # set_metric_names
def test_trials_frame_of_a_multi_objective_study_names_each_value() -> None:
    """Each objective's value under its metric's name, whether or not the study named its metrics."""
    study = optuna.create_study(directions=["minimize", "maximize"])
    study.add_trial(create_trial(values=[0.5, 0.75]))
    frame = trials_frame(study, ["val_a_loss", "val_b_acc"], ["a", "b"])
    assert frame[["val_a_loss", "val_b_acc"]].values.tolist() == [[0.5, 0.75]]
    named = optuna.create_study(directions=["minimize", "maximize"])
    named.set_metric_names(["val_a_loss", "val_b_acc"])
    named.add_trial(create_trial(values=[0.25, 0.5]))
    assert trials_frame(named, ["val_a_loss", "val_b_acc"], [])[["val_a_loss", "val_b_acc"]].values.tolist() == [
        [0.25, 0.5]
    ]


def test_kept_metrics_reads_each_runs_values_at_its_kept_epoch(tmp_path: Path) -> None:
    """A trial whose value comes from an earlier epoch (``best_epoch``) gets that epoch's logged values; one
    without gets its last; a trial without a run is left out; a study without a parent run has none."""
    study = optuna.create_study(study_name="kept")
    assert kept_metrics(None, study) == {}  # type: ignore[arg-type]  # no parent run: the client is not asked
    tracker = Tracker(TrackingSection(uri=f"sqlite:///{tmp_path / 'mlflow.db'}"), study)
    curves = {0: [3.0, 1.0, 2.0], 1: [3.0, 2.0, 1.0]}
    for number, curve in curves.items():
        trial = study.ask()
        run = TrialRun.open(tracker, trial)
        for epoch, value in enumerate(curve):
            trial.report(value, epoch)
            run.log_epoch(epoch, {"val_total_loss": value, "peak_memory_mb": 10.0 * (epoch + 1)})
        run.close(TrialState.COMPLETE)
        if number == 0:
            trial.set_user_attr(Attr.BEST_EPOCH, 1)
        study.tell(trial, min(curve) if number == 0 else curve[-1])
    study.add_trial(create_trial(value=5.0))  # no run
    kept = kept_metrics(tracker.client, study)
    assert kept == {
        0: {"val_total_loss": 1.0, "peak_memory_mb": 20.0},  # epoch 1
        1: {"val_total_loss": 1.0, "peak_memory_mb": 30.0},  # its last epoch
    }


def _files(out: Path) -> set[str]:
    return {p.name for p in out.iterdir()}


PLOTS = ("optimization_history", "param_importances", "parallel_coordinate", "weights_vs_objective")


def test_write_report_writes_the_tables_and_every_plot(tmp_path: Path) -> None:
    """Trials CSV (one row per trial), the top table, each plot as HTML and PNG, nothing skipped; the same
    study with no complete trial still gets its tables, and each plot is said to be skipped."""
    study = _study()
    written, skipped = write_report(study, ["val_total_loss"], ["minimize"], ["a", "b"], tmp_path / "r", k=2)
    assert skipped == []
    plots = {f"{p}.{ext}" for p in (*PLOTS, "intermediate_values") for ext in ("html", "png")}
    assert {"trials.csv", "top.txt", *plots} <= {p.name for p in written} == _files(tmp_path / "r")
    csv = pd.read_csv(tmp_path / "r" / "trials.csv")
    assert len(csv) == 7 and csv["weight.a"].tolist()[:2] == [0.0, 0.25]
    top = (tmp_path / "r" / "top.txt").read_text().splitlines()
    assert [line.split()[0] for line in top[1:]] == ["2", "1"]  # k=2, best first
    assert all((tmp_path / "r" / f).read_bytes()[:4] == b"\x89PNG" for f in plots if f.endswith(".png"))


def test_a_study_without_trials_gets_its_tables(tmp_path: Path) -> None:
    """``python -m sweep.report`` on a study created but not yet given a trial: tables, every plot skipped."""
    _, skipped = write_report(optuna.create_study(), ["val_total_loss"], ["minimize"], ["a"], tmp_path)
    assert (tmp_path / "top.txt").read_text() == "No complete trial yet.\n" and "trials.csv" in _files(tmp_path)
    assert all(s.endswith(": no complete trial yet") for s in skipped)


def test_a_study_whose_first_trial_is_running_gets_its_tables(tmp_path: Path) -> None:
    """The report of a study that is just starting (its first trial training in another process) writes the
    tables and skips the plots, as the docstring of write_report promises."""
    study = optuna.create_study()
    study.ask()
    _, skipped = write_report(study, ["val_total_loss"], ["minimize"], ["a"], tmp_path)
    assert (tmp_path / "top.txt").read_text() == "No complete trial yet.\n"
    assert len(pd.read_csv(tmp_path / "trials.csv")) == 1 and all(s.endswith("no complete trial yet") for s in skipped)


def test_write_report_of_a_multi_objective_study_draws_the_pareto_front(tmp_path: Path) -> None:
    """Two metrics: the Pareto front instead of the intermediate values (Optuna cannot prune such a study)."""
    study = optuna.create_study(directions=["minimize", "maximize"])
    for i in range(3):
        lr = {"optimizer.lr": SPACE["optimizer.lr"]}
        study.add_trial(create_trial(params={"optimizer.lr": 0.01 * (i + 1)}, distributions=lr, values=[i, i * i]))
    written, skipped = write_report(study, ["val_a_loss", "val_b_acc"], ["minimize", "maximize"], [], tmp_path)
    names = {p.name for p in written}
    assert {"pareto_front.html", "pareto_front.png", "optimization_history.png"} <= names
    assert not any(n.startswith(("intermediate_values", "weights_vs_objective")) for n in names)
    assert all(not s.startswith("pareto_front") for s in skipped)


def test_a_plot_that_cannot_be_drawn_is_skipped_and_said(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A plot Optuna refuses (its ValueError) is one line of ``skipped``; the other plots and the tables are
    written."""

    def refuses(*args: object, **kwargs: object) -> None:
        raise ValueError("Cannot evaluate parameter importances with only a single trial.\nmore")

    monkeypatch.setattr(optuna.visualization.matplotlib, "plot_param_importances", refuses)
    written, skipped = write_report(_study(2), ["val_total_loss"], ["minimize"], [], tmp_path)
    assert skipped == ["param_importances: Cannot evaluate parameter importances with only a single trial."]
    names = {p.name for p in written}
    assert {"optimization_history.png", "intermediate_values.png", "top.txt"} <= names
    assert not any(n.startswith("param_importances") for n in names)


def test_a_tracking_store_that_fails_still_gives_the_report(tmp_path: Path) -> None:
    """The logged metrics are extra: a store that cannot be read is said, and the Optuna records make the
    report."""
    from mlflow.exceptions import MlflowException

    class Down:
        def get_run(self, run_id: str) -> Any:
            raise MlflowException("connection refused")

    study = optuna.create_study()  # failed trials only: the tables, no plot (drawing is tested above)
    for _ in range(2):
        study.add_trial(create_trial(state=TrialState.FAIL, user_attrs={Attr.RUN: "run"}))
    study.set_user_attr(Attr.PARENT, "parent")
    written, skipped = write_report(study, ["val_total_loss"], ["minimize"], [], tmp_path, client=Down())  # type: ignore[arg-type]
    assert skipped[0] == "the trials' logged metrics (MLflow): connection refused"
    assert all(s.endswith("no complete trial yet") for s in skipped[1:])
    assert "trials.csv" in {p.name for p in written} and len(pd.read_csv(tmp_path / "trials.csv")) == 2


def test_loss_curves_draw_each_loss_but_the_weighted_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Train (dashed) and validation losses, one line each, ``train_weighted_loss`` and non-losses left out;
    a log scale when every value is positive, else linear."""
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    drawn: list[Any] = []
    close = plt.close
    monkeypatch.setattr(plt, "close", lambda fig=None: (drawn.append(fig), close(fig)))
    history = [
        {"train_a_loss": 2.0, "val_a_loss": 1.5, "train_weighted_loss": 9.0, "val_a_acc": 0.5},
        {"train_a_loss": 1.0, "val_a_loss": 1.25, "train_weighted_loss": 8.0, "val_a_acc": 0.75},
    ]
    assert loss_curves_png(history, tmp_path / "c.png") == tmp_path / "c.png"
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    (ax,) = drawn[0].axes
    assert [(line.get_label(), line.get_linestyle()) for line in ax.get_lines()] == [
        ("train_a_loss", "--"),
        ("val_a_loss", "-"),
    ]
    assert list(ax.get_lines()[1].get_ydata()) == [1.5, 1.25] and ax.get_yscale() == "log"
    history[1]["val_a_loss"] = -0.5  # a loss that can be negative (a log-likelihood): linear
    loss_curves_png(history, tmp_path / "d.png")
    assert drawn[1].axes[0].get_yscale() == "linear"
