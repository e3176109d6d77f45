"""The report of a study: top-k table, trials CSV/Parquet and Optuna's plots, and a trial's loss curves.

``python -m sweep.report`` (:mod:`sweep.commands.report`) writes these files for a study; the same files are
logged as artifacts of the study's parent MLflow run at the end of every ``sweep.run``
(:mod:`sweep.execution.runner`). Plots are Optuna's own: interactive HTML from ``optuna.visualization``
(plotly) and static PNG from ``optuna.visualization.matplotlib``, so they show in the MLflow artifact viewer.
Beside the Optuna records, the tables show what each trial's MLflow run logged at the trial's kept epoch
(:func:`kept_metrics`): every task's losses and metrics, ``peak_memory_mb``.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
import pandas as pd

from sweep.core.errors import one_line
from sweep.core.faultpoints import pause
from sweep.core.records import Attr, Role, runs_filter

if TYPE_CHECKING:
    from mlflow import MlflowClient


def kept_metrics(client: MlflowClient, study: optuna.Study) -> dict[int, dict[str, float]]:
    """What each trial's MLflow run logged for the trial's kept epoch, by trial number: the epoch its value
    comes from (``best_epoch``: ``score: best``, early stopping), else the last one it logged (a pruned
    trial's: the epoch it stopped at). A trial without a run in the store is left out.

    One search for the study's trial runs (their latest values); a metric history per metric only for a
    trial whose kept epoch is not its last.
    """
    parent = study.user_attrs.get(Attr.PARENT)
    if parent is None:
        return {}
    experiment = client.get_run(parent).info.experiment_id
    query = runs_filter(Role.TRIAL, study.study_name)
    runs, token = {}, None
    while True:
        page = client.search_runs([experiment], query, max_results=1000, page_token=token)
        runs.update((r.info.run_id, r) for r in page)
        token = page.token
        if not token:
            break
    out = {}
    for trial in study.get_trials(deepcopy=False):
        run = runs.get(trial.user_attrs.get(Attr.RUN))
        if run is None:
            continue
        values = dict(run.data.metrics)  # each metric's value at its last step
        kept = trial.user_attrs.get(Attr.BEST_EPOCH)
        if kept is not None and kept != max(trial.intermediate_values, default=None):
            at = {k: {m.step: m.value for m in client.get_metric_history(run.info.run_id, k)} for k in values}
            values = {k: steps[kept] for k, steps in at.items() if kept in steps}
        out[trial.number] = values
    return out


def _logged_order(name: str) -> tuple[bool, bool, bool, str]:
    """Logged metrics as columns: validation first, then training, the rest, ``peak_memory_mb`` last."""
    return not name.startswith("val_"), not name.startswith("train_"), name == "peak_memory_mb", name


def trials_frame(
    study: optuna.Study,
    metrics: Sequence[str],
    losses: Sequence[str],
    logged: Mapping[int, Mapping[str, float]] | None = None,
) -> pd.DataFrame:
    """One row per trial (Optuna's ``trials_dataframe``, columns named for people): number, state, the
    value(s) named by metric, duration, ``param.*``, the effective weights by loss name (``weight.a``),
    what the trial's run logged for its kept epoch (``logged``, by trial number: see :func:`kept_metrics`;
    ``val_a_loss``, ``val_b_acc``, ``train_a_loss``, ``lr``, ``peak_memory_mb``...), the failure reason and
    the MLflow run id."""
    frame = study.trials_dataframe(attrs=("number", "state", "values", "duration", "params", "user_attrs"))
    if frame.empty:  # a study created but given no trial yet: Optuna's frame has no columns
        frame = pd.DataFrame({"number": pd.Series(dtype=int), "state": pd.Series(dtype=str)})
    out = pd.DataFrame({"number": frame["number"], "state": frame["state"].astype(str)})
    for i, metric in enumerate(metrics):
        for column in (f"value_{metric}", f"values_{metric}", "value" if i == 0 else "", f"values_{i}"):
            if column in frame:
                out[metric] = frame[column]
                break
        else:
            out[metric] = None
    durations = pd.to_timedelta(frame["duration"]) if "duration" in frame else None  # all None while trials run
    out["duration_s"] = durations.dt.total_seconds() if durations is not None else None
    for column in frame.columns:
        if column.startswith("params_"):
            out[f"param.{column.removeprefix('params_')}"] = frame[column]
    weights = frame.get(f"user_attrs_{Attr.WEIGHTS}")
    for i, name in enumerate(losses):
        if weights is not None and any(isinstance(w, list) and len(w) > i for w in weights):
            out[f"weight.{name}"] = [w[i] if isinstance(w, list) and len(w) > i else None for w in weights]
    names = sorted({k for values in (logged or {}).values() for k in values} - set(out.columns), key=_logged_order)
    for name in names:
        out[name] = [(logged or {}).get(number, {}).get(name) for number in frame["number"]]
    for attr in (Attr.FAIL, Attr.RUN):
        out[attr] = frame.get(f"user_attrs_{attr}")
    return out


def top_table(frame: pd.DataFrame, metrics: Sequence[str], directions: Sequence[str], k: int) -> str:
    """The k best complete trials (by the first metric) as text: values, weights, every searched parameter,
    the validation metrics logged for the kept epoch and the peak memory (:func:`trials_frame`)."""
    done = frame[frame["state"] == "COMPLETE"]
    if done.empty:
        return "No complete trial yet."
    ranked = done.sort_values(metrics[0], ascending=directions[0] == "minimize").head(k)
    columns = ["number", *metrics, *[c for c in ranked.columns if c.startswith("weight.")]]
    columns += [c for c in ranked.columns if c.startswith("param.")]  # every searched parameter
    columns += [c for c in ranked.columns if c.startswith("val_") and c not in metrics]  # each task's, logged
    columns += ["peak_memory_mb", "state", "duration_s"]
    shown = ranked[[c for c in columns if c in ranked.columns]].rename(columns=lambda c: c.removeprefix("param."))
    return shown.to_string(index=False, float_format=lambda v: f"{v:.5g}")


def _plots(study: optuna.Study, metrics: Sequence[str]) -> dict[str, tuple[Callable, Callable, dict]]:
    """Name → (plotly function, matplotlib function, keyword arguments) of the plots this study supports."""
    vis, mpl = optuna.visualization, optuna.visualization.matplotlib
    multi = len(metrics) > 1
    first: dict[str, Any] = {"target": lambda t: t.values[0], "target_name": metrics[0]} if multi else {}
    plots: dict[str, tuple[Callable, Callable, dict]] = {
        "optimization_history": (vis.plot_optimization_history, mpl.plot_optimization_history, first),
        "param_importances": (vis.plot_param_importances, mpl.plot_param_importances, first),
        "parallel_coordinate": (vis.plot_parallel_coordinate, mpl.plot_parallel_coordinate, first),
    }
    params = {p for t in study.get_trials(deepcopy=False) for p in t.params}
    weight_params = sorted(p for p in params if p.startswith("weights."))
    if weight_params:
        plots["weights_vs_objective"] = (vis.plot_slice, mpl.plot_slice, {"params": weight_params, **first})
    if multi:
        names = {"target_names": list(metrics)}
        plots["pareto_front"] = (vis.plot_pareto_front, mpl.plot_pareto_front, names)
    else:
        plots["intermediate_values"] = (vis.plot_intermediate_values, mpl.plot_intermediate_values, {})
    return plots


def _import_importance_without_sklearn() -> None:
    """Import ``optuna.importance`` without scikit-learn (0.8–1.7 s, a tenth of the quickstart's wall time).

    Importing that package imports its fANOVA evaluator, which imports scikit-learn's random forests,
    although the importance plot uses the default evaluator (PED-ANOVA, numpy only). While the package
    loads, ``sklearn`` is marked absent in ``sys.modules``, so Optuna's ``try_import`` records fANOVA as
    unavailable in this process, as on a machine without scikit-learn (sweep never uses it); the mark is
    removed right after, so a later ``import sklearn`` (a user's problem) works as usual. Nothing is
    blocked when scikit-learn is loaded already (its cost is paid).
    """
    if "optuna.importance" in sys.modules or "sklearn" in sys.modules:
        return
    sys.modules["sklearn"] = None  # type: ignore[assignment]  # makes `import sklearn...` raise ImportError
    try:
        import optuna.importance  # noqa: F401
    finally:
        del sys.modules["sklearn"]


def write_report(
    study: optuna.Study,
    metrics: Sequence[str],
    directions: Sequence[str],
    losses: Sequence[str],
    out: Path,
    k: int = 10,
    client: MlflowClient | None = None,
) -> tuple[list[Path], list[str]]:
    """Write the trials table (CSV, and Parquet when pyarrow is present), the top-k table and the plots.

    Args:
        client: The study's MLflow tracking store, for what each trial's run logged (:func:`kept_metrics`);
            ``None``: the tables hold the Optuna records only.

    Returns:
        The files written, and one line per plot (or table part) that could not be made (e.g. importances
        need two complete trials) — a study that is just starting still gets the rest.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from mlflow.exceptions import MlflowException

    _import_importance_without_sklearn()
    pause("report")  # a test's pause point (sweep.core.faultpoints)
    out.mkdir(parents=True, exist_ok=True)
    metrics, directions = list(metrics), list(directions)
    skipped, logged = [], None
    try:
        logged = kept_metrics(client, study) if client is not None else None
    except (MlflowException, OSError) as e:  # the Optuna records still make a report
        skipped.append(f"the trials' logged metrics (MLflow): {one_line(e, with_type=False)}")
    frame = trials_frame(study, metrics, losses, logged)
    written = [out / "trials.csv"]
    frame.to_csv(written[0], index=False)
    try:
        frame.to_parquet(out / "trials.parquet", index=False)
        written.append(out / "trials.parquet")
    except ImportError:
        pass  # no pyarrow/fastparquet: CSV only
    (out / "top.txt").write_text(top_table(frame, metrics, directions, k) + "\n")
    written.append(out / "top.txt")

    complete = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    for name, (html_fn, png_fn, kwargs) in _plots(study, metrics).items():
        if not complete:
            skipped.append(f"{name}: no complete trial yet")
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Optuna marks its matplotlib backend experimental
                html_fn(study, **kwargs).write_html(out / f"{name}.html", include_plotlyjs="cdn")
                axes = png_fn(study, **kwargs)
            figure = (axes.flat[0] if hasattr(axes, "flat") else axes).figure
            figure.savefig(out / f"{name}.png", dpi=110, bbox_inches="tight")
            plt.close(figure)
            written += [out / f"{name}.html", out / f"{name}.png"]
        except (ValueError, RuntimeError, ZeroDivisionError) as e:  # e.g. importances with one trial
            skipped.append(f"{name}: {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}")
            plt.close("all")
    return written, skipped


def loss_curves_png(history: Sequence[Mapping[str, float]], path: Path) -> Path:
    """A trial's per-epoch losses (train and validation, each loss) as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    keys = [k for k in history[0] if k.endswith("_loss") and k != "train_weighted_loss"]
    epochs = list(range(len(history)))
    for key in keys:
        ax.plot(epochs, [h[key] for h in history], label=key, linestyle="--" if key.startswith("train") else "-")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_yscale("log" if all(h[k] > 0 for h in history for k in keys) else "linear")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
