"""``python -m sweep.evaluate STUDY.yaml [--top K] [--seeds N]`` — chosen configurations on held-out data.

The search chose its best trials on the validation split; this command retrains each chosen
configuration with N fresh seeds (:func:`sweep.results.evaluation.evaluation_seeds`, the same for every
configuration), scores each run on the problem's ``test`` split, which no trial reads, and reports
the mean and 95 % confidence interval over the seeds. For a comparison (``study.compare``) it does so
for the top K of every compared choice and prints the comparison table: each method's best validation
value from the search, its retrained validation and test values ± CI, and its cost per trial.

Records: one MLflow run per configuration, tagged ``sweep.role = evaluation``, nested under the study's
parent run (per-seed values as steps 0..N−1 of ``<metric>_seed``, ``<metric>_mean`` and ``<metric>_ci95``), written
once the configuration's seeds have all run (an interrupted evaluation leaves no half-written run);
a new evaluation of a configuration (``--again``, other seeds) supersedes its earlier runs (tagged
``sweep.superseded_by``, moved to MLflow's deleted runs). The results also go to the Optuna study (user
attribute ``sweep.evaluation``) and to ``.sweep/reports/<study>/evaluation.{md,csv}``. A problem without a
test split is refused. Training runs on ``--cpu-threads`` torch threads, as in ``sweep.run``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import optuna

from objectives.helpers import NonFiniteLossError
from sweep.commands.cli import add_cpu_threads, apply_cpu_threads, load_or_report, study_parser
from sweep.core.errors import (
    EXIT_CONFIG,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_RUNTIME,
    ConfigError,
    SweepError,
    print_error,
    to_stderr,
)
from sweep.core.interrupts import Interrupts, interruptible
from sweep.core.records import Attr, Role, Tag, experiment_name, runs_filter, tag_clause
from sweep.execution.finishing import evaluation_claim
from sweep.results.evaluation import NoTestSplit, Selection, config_for, evaluation_seeds, retrain
from sweep.results.results import EVALUATION_ATTR, Evaluated, chosen, counts, seconds_per_trial, table
from sweep.storage.storage import load_existing_study
from sweep.studyfile.compare import members
from sweep.studyfile.config import StudyFile
from sweep.studyfile.sections import StudySection, TrackingSection

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

INTERRUPTED = "Interrupted: configurations evaluated before it are recorded; the rest are not."


def evaluate(
    sf: StudyFile, file: Path, top: int, n_seeds: int, number: int | None = None, device: str = "auto",
    progress: bool = True, again: bool = False,
) -> list[Evaluated]:  # fmt: skip
    """Retrain and test the chosen trials of a study, or of each sub-study of a comparison, and record them.
    A trial already evaluated with the same seeds is shown from its record (a re-run resumes where an
    interrupted one stopped); ``again`` retrains it.

    Raises:
        ConfigError: the problem has no test split (``objective.problem``).
        SweepError: a study missing from its storage, or without complete trials.
    """
    from tqdm.auto import tqdm

    from sweep.trials.trial import ProblemCache

    studies = [(m.label, m.sf) for m in members(sf)] or [(None, sf)]
    seeds = evaluation_seeds(sf.study.seed, n_seeds)
    plan = []
    for method, sub in studies:
        study = load_existing_study(sub.study.name, sub.study.storage)
        spent, cost = counts(study), seconds_per_trial(study)
        done = study.user_attrs.get(EVALUATION_ATTR) or {}
        for trial in chosen(study, sub.study, top, number):
            item = Evaluated(sub.study.name, method, trial, spent, cost, seeds)
            found = done.get(str(trial.number))
            if found and found["seeds"] == seeds and not again:
                item.restore(found)
                to_stderr(f"{item.study} #{trial.number}: evaluated before with these seeds; shown from its record "
                          f"(MLflow run {item.run_id}; --again retrains)")  # fmt: skip
            plan.append((study, item))
    problems = ProblemCache()
    total = sum(len(seeds) * int(e.trial.user_attrs[Attr.CONFIG]["epochs"]) for _, e in plan if not e.runs)
    bar = tqdm(total=total, desc="evaluate", unit="epoch", disable=not (progress and sys.stderr.isatty()))
    target = None if sf.study.multi_objective else sf.study.metric[0]
    selection = Selection(target, sf.study.directions[0], sf.study.score)
    interrupts = Interrupts.active()  # a signal ends the training at once; each record is written whole
    try:
        for study, item in plan:
            if item.runs:  # recorded before
                continue
            for seed in seeds:
                cfg = config_for(item.trial.user_attrs[Attr.CONFIG], seed, device)
                try:
                    with interrupts.raising():
                        run = retrain(cfg, problems.get(cfg), selection, on_epoch=lambda _: bar.update())
                    item.runs.append(run)
                except NonFiniteLossError as e:  # a result about this configuration: counted, not averaged
                    tqdm.write(f"{item.study} #{item.trial.number}, seed {seed}: diverged ({e})", file=sys.stderr)
                    item.runs.append({})
                except NoTestSplit as e:
                    raise ConfigError(
                        file, "objective.problem", f"{e}: give its Task(s) a test split to evaluate on held-out data"
                    ) from None
            with interrupts.shielded():
                item.run_id, replaced = _record(sf.tracking, sf.study, study, item)
            if replaced:
                tqdm.write(f"{item.study} #{item.trial.number}: MLflow run {item.run_id} supersedes the earlier "
                           f"evaluation run(s) {', '.join(replaced)} (tagged sweep.superseded_by, moved to MLflow's "
                           "deleted runs)", file=sys.stderr)  # fmt: skip
    finally:
        bar.close()
    return [item for _, item in plan]


def _record(
    tracking: TrackingSection, section: StudySection, study: optuna.Study, item: Evaluated
) -> tuple[str, list[str]]:
    """One MLflow run for the configuration (under the study's parent run) and the study's user attribute.

    Returns:
        The new run's id, and those of the configuration's earlier evaluation runs it supersedes.
    """
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    from sweep.core.urls import absolute_sqlite
    from sweep.tracking.tracking import quiet_mlflow

    quiet_mlflow()
    client = MlflowClient(tracking_uri=absolute_sqlite(tracking.uri))
    name = experiment_name(tracking.experiment, section.name)
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        raise SweepError(f"no MLflow experiment {name!r} in {tracking.uri}")
    tags = {
        Tag.ROLE: Role.EVALUATION,
        Tag.STUDY_NAME: item.study,
        Tag.TRIAL: str(item.trial.number),
        Tag.SEEDS: str(len(item.seeds)),
    }
    parent = study.user_attrs.get(Attr.PARENT)
    if parent:
        tags["mlflow.parentRunId"] = parent
    name = f"{item.study} #{item.trial.number} on test ({len(item.seeds)} seeds)"
    run_id = client.create_run(experiment.experiment_id, run_name=name, tags=tags).info.run_id
    now = int(time.time() * 1000)
    keys = [k for k in item.metric_names() if k != "epoch"]
    # Each seed's values under ``<metric>_seed`` (step = seed index), never under the metric's own name: a
    # table or a sort on ``val_total_loss`` must not show one seed's value where the mean belongs.
    metrics = [Metric(f"{k}_seed", r[k], now, i) for i, r in enumerate(item.runs) for k in (*keys, "epoch") if r]
    metrics.append(Metric("diverged_seeds", item.diverged, now, 0))
    for k in keys:  # none when every seed diverged
        ci = item.interval(k)
        metrics.append(Metric(f"{k}_mean", ci.mean, now, 0))
        if not math.isnan(ci.half_width):
            metrics.append(Metric(f"{k}_ci95", ci.half_width, now, 0))
    params = [Param(k, str(v)[:6000]) for k, v in item.trial.params.items()]
    params += [Param("trial", str(item.trial.number)), Param("seeds", " ".join(map(str, item.seeds))[:6000])]
    try:
        for i in range(0, len(params), 100):  # MLflow's limits per batch: 100 params, 1000 metrics
            client.log_batch(run_id, params=params[i : i + 100])
        for i in range(0, len(metrics), 1000):
            client.log_batch(run_id, metrics=metrics[i : i + 1000])
    except BaseException:  # never a run left RUNNING: it says it did not finish
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id)
    record = dict(study.user_attrs.get(EVALUATION_ATTR) or {})
    record[str(item.trial.number)] = {
        "seeds": item.seeds,
        "run_id": run_id,
        "values": {k: [r.get(k) for r in item.runs] for k in keys},  # None: that seed diverged
    }
    study.set_user_attr(EVALUATION_ATTR, record)
    return run_id, _supersede(client, experiment.experiment_id, item, run_id)


def _supersede(client: MlflowClient, experiment_id: str, item: Evaluated, run_id: str) -> list[str]:
    """Mark the configuration's earlier evaluation runs as replaced by ``run_id``: each gets the tag
    ``sweep.superseded_by`` and moves to MLflow's deleted runs (hidden from the runs table and searches,
    restorable in the UI), so one evaluation per configuration shows, as in the study's record.

    Returns:
        The superseded runs' ids.
    """
    query = f"{runs_filter(Role.EVALUATION, item.study)} and {tag_clause(Tag.TRIAL, item.trial.number)}"
    earlier = [r.info.run_id for r in client.search_runs([experiment_id], query, max_results=1000)]
    earlier = [old for old in earlier if old != run_id]
    for old in earlier:
        client.set_tag(old, Tag.SUPERSEDED_BY, run_id)
        client.delete_run(old)
    return earlier


def write_files(study_name: str, rows: list[Evaluated], text: str, out: Path | None = None) -> Path:
    """``evaluation.md`` (the table) and ``evaluation.csv`` (one row per seed run) in the report folder."""
    import pandas as pd

    from sweep.tracking.artifacts import write_atomically

    folder = out or Path(".sweep") / "reports" / study_name
    write_atomically(folder / "evaluation.md", text + "\n")
    frame = pd.DataFrame(
        [
            {"study": r.study, "method": r.method, "trial": r.trial.number, "seed": s, "diverged": not run, **run}
            for r in rows
            for s, run in zip(r.seeds, r.runs, strict=True)
        ]
    )
    write_atomically(folder / "evaluation.csv", frame.to_csv(index=False))
    return folder


def parser() -> argparse.ArgumentParser:
    p = study_parser(
        "python -m sweep.evaluate",
        "Retrain a study's best configuration(s) with fresh seeds and score them on the held-out test split: "
        "mean ± 95% CI over seeds, recorded in MLflow (runs tagged sweep.role=evaluation) and printed as a table.",
        "python -m sweep.evaluate studies/weighting_compare.yaml --seeds 5",
    )
    p.add_argument("--top", type=int, help="evaluate the K best trials (of each compared choice); default 1")
    p.add_argument("--seeds", type=int, help="fresh seeds per configuration (default: evaluate.seeds or 5)")
    p.add_argument("--trial", type=int, help="evaluate this trial number only")
    p.add_argument("--device", default="auto", help="device for the retraining runs (default: auto)")
    p.add_argument("-o", "--out", type=Path, help="folder for evaluation.md/.csv (default: .sweep/reports/<study>)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (it is shown only on a terminal)")
    p.add_argument(
        "--again",
        action="store_true",
        help="retrain configurations already evaluated with the same seeds (the new runs supersede the old)",
    )
    add_cpu_threads(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return interruptible(lambda: _main(args), INTERRUPTED)


def _main(args: argparse.Namespace) -> int:
    sf = load_or_report(args)
    if sf is None:
        return EXIT_CONFIG
    defaults = sf.evaluate
    top = args.top if args.top is not None else (defaults.top if defaults else 1)
    seeds = args.seeds if args.seeds is not None else (defaults.seeds if defaults else 5)
    for flag, value in (("--top", top), ("--seeds", seeds)):
        if value < 1:
            print_error(f"{flag} {value}: give a positive number")
            return EXIT_CONFIG
    apply_cpu_threads(args.cpu_threads)
    return run_evaluation(
        sf, args.study_file, top, seeds, args.trial, args.device, not args.no_progress, args.out, args.again
    )


def run_evaluation(
    sf: StudyFile, file: Path, top: int, seeds: int, number: int | None = None, device: str = "auto",
    progress: bool = True, out: Path | None = None, again: bool = False,
) -> int:  # fmt: skip
    """Evaluate, print the table and write its files; the exit status (also used by ``sweep.run``). While
    another process evaluates the same study (:func:`sweep.execution.finishing.evaluation_claim`): one line, exit 0."""
    try:
        name = next((m.sf.study.name for m in members(sf)), sf.study.name)  # a comparison's: its first choice's
        with evaluation_claim(sf.study, name) as other:
            if other is not None:
                to_stderr(f"note: the evaluation is under way in another process ({other}); once it ends, python -m "
                          f"sweep.evaluate {file} shows its table (--again retrains)")  # fmt: skip
                return EXIT_OK
            rows = evaluate(sf, file, top, seeds, number, device, progress, again)
    except ConfigError as e:
        print_error(e)
        return EXIT_CONFIG
    except SweepError as e:
        print_error(e)
        return EXIT_RUNTIME
    except KeyboardInterrupt:
        to_stderr(INTERRUPTED)
        return EXIT_INTERRUPTED
    text = table(sf.study, rows)
    folder = write_files(sf.study.name, rows, text, out)
    print(text)
    print(f"Per-seed results: {folder / 'evaluation.csv'}; MLflow runs tagged sweep.role=evaluation")
    return EXIT_OK
