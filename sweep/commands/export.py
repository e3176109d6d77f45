"""``python -m sweep.export STUDY.yaml`` — the best trial (or trial N) as a study file that replays it.

The written file has the same schema as any study file, every searched value fixed and no search
space: ``objective`` is the trial's resolved config (seeds included), so ``python -m sweep.run
best.yaml`` trains exactly that configuration as a one-trial study, logged to MLflow beside the
original. A ``provenance`` section records where it came from. Storage and tracking URLs are copied
as the original file wrote them (``${VAR}`` references stay references); a password or token written
into a URL (userinfo or query) is replaced by ``${SWEEP_PASSWORD}``, and objective values the file
wrote with ``${VAR}`` keep their references (any other credential in them, a literal ``token:`` or a DSN's
``password=``, becomes ``${SWEEP_PASSWORD}`` too), so no secret reaches the exported file.

Multi-objective studies list their Pareto front; the trial is chosen by ``--trial N``, by
``--prefer METRIC`` (the front's best on that metric) or, by default, by the knee point: the front
trial closest to the ideal point once each objective is scaled to [0, 1] over the front.

``--seeds N`` also evaluates the exported trial (:mod:`sweep.evaluate`), training on ``--cpu-threads``
torch threads as every training command does. A replay's trial runs are named after what they replay
(:func:`sweep.tracking.lineage.replay_run_prefix`), not ``trial-0`` beside the original's.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import optuna
import yaml

from sweep.commands.cli import add_cpu_threads, apply_cpu_threads, load_or_report, study_parser
from sweep.core.errors import EXIT_CONFIG, EXIT_OK, EXIT_RUNTIME, ConfigError, SweepError, print_error
from sweep.core.interrupts import interruptible
from sweep.core.records import Attr, experiment_name
from sweep.core.urls import redact
from sweep.storage.storage import load_existing_study, storage_url
from sweep.studyfile.config import StudyFile, parse_study
from sweep.studyfile.sections import StudySection
from sweep.studyfile.studyyaml import expand_env, read_study_yaml
from sweep.tracking.artifacts import write_atomically

PASSWORD_PLACEHOLDER = "${SWEEP_PASSWORD}"


class ExportError(Exception):
    """The requested trial cannot be exported (one line)."""


def knee(trials: list[optuna.trial.FrozenTrial], directions: list[str]) -> optuna.trial.FrozenTrial:
    """The Pareto trial closest to the ideal point, each objective scaled to [0, 1] (0 = best) over the front."""
    scaled = []
    for i, direction in enumerate(directions):
        values = [t.values[i] for t in trials]
        lo, hi = min(values), max(values)
        span = (hi - lo) or 1.0
        scaled.append([((v - lo) if direction == "minimize" else (hi - v)) / span for v in values])
    distances = [math.sqrt(sum(axis[j] ** 2 for axis in scaled)) for j in range(len(trials))]
    return trials[min(range(len(trials)), key=lambda j: (distances[j], trials[j].number))]


def choose(
    study: optuna.Study, section: StudySection, number: int | None, prefer: str | None
) -> tuple[optuna.trial.FrozenTrial, str]:
    """The trial to export and the rule that chose it."""
    complete = {t.number: t for t in study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.COMPLETE])}
    if number is not None:
        if number not in complete:
            raise ExportError(f"trial {number} is not a complete trial of study {study.study_name!r}")
        return complete[number], f"--trial {number}"
    if not complete:
        raise ExportError(f"study {study.study_name!r} has no complete trial yet")
    metrics, directions = list(section.metric), list(section.directions)
    if not section.multi_objective:
        if prefer is not None and prefer != metrics[0]:
            raise ExportError(f"--prefer {prefer}: the study optimises only {metrics[0]}")
        return study.best_trial, f"best {metrics[0]} ({directions[0]})"
    front = sorted(study.best_trials, key=lambda t: t.number)
    if prefer is not None:
        if prefer not in metrics:
            raise ExportError(f"--prefer {prefer}: not one of the study's metrics {metrics}")
        i = metrics.index(prefer)
        pick = (min if directions[i] == "minimize" else max)(front, key=lambda t: t.values[i])
        return pick, f"Pareto front ({len(front)} trials), best {prefer} ({directions[i]})"
    return knee(front, directions), f"Pareto front ({len(front)} trials), knee point (closest to the ideal)"


def _hide_password(url: str) -> str:
    """A URL as the study file wrote it, for the exported file: ``${VAR}`` references stay; a literal
    secret (a URL's password, a ``?password=``/``token=``... parameter) becomes the placeholder."""
    return redact(url, mask=PASSWORD_PLACEHOLDER, keep_references=True)


def _hide_secrets(tree: Any) -> Any:
    """``tree`` for the exported file: each credential in its strings that is no ``${VAR}`` reference (a
    literal ``token:``, a URL's password, a value known to be secret) becomes the placeholder."""
    if isinstance(tree, dict):
        return {k: _hide_secrets(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_hide_secrets(v) for v in tree]
    return _hide_password(tree) if isinstance(tree, str) else tree


def _as_written(config: Any, raw: Any) -> Any:
    """``config`` with each string the study file wrote with ``${VAR}`` references given back as written.

    The trial's config holds the substituted values (the secrets themselves, for a user problem's
    ``options: {token: ${TOKEN}}``); the exported file must carry the references instead. A value the
    search changed is left alone (the file's text no longer describes it).
    """
    if isinstance(config, dict) and isinstance(raw, dict):
        return {k: _as_written(v, raw[k]) if k in raw else v for k, v in config.items()}
    if isinstance(config, list) and isinstance(raw, list) and len(config) == len(raw):
        return [_as_written(v, r) for v, r in zip(config, raw, strict=True)]
    if isinstance(config, str) and isinstance(raw, str) and "${" in raw:
        with contextlib.suppress(ConfigError):
            if expand_env(raw, Path("-")) == config:
                return raw
    return config


def _versions() -> dict[str, str]:
    out = {}
    for name in ("sweep", "torch", "optuna", "mlflow", "numpy", "pydantic"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out


def export_document(
    sf: StudyFile, raw: dict[str, Any], study: optuna.Study, trial: optuna.trial.FrozenTrial, rule: str
) -> dict[str, Any]:
    """The replay study file for ``trial`` as a YAML-ready mapping (validated by the caller)."""
    config = trial.user_attrs.get(Attr.CONFIG)
    if config is None:
        raise ExportError(f"trial {trial.number} has no recorded config (made by an older sweep?)")
    raw_study = raw.get("study", {}) if isinstance(raw.get("study"), dict) else {}
    raw_tracking = raw.get("tracking", {}) if isinstance(raw.get("tracking"), dict) else {}
    study_section: dict[str, Any] = {
        "name": f"{sf.study.name}-trial{trial.number}",
        "metric": list(sf.study.metric),
        "direction": list(sf.study.directions),
        "n_trials": 1,
        "seed": sf.study.seed,
        "sampler": {"type": "random"},
        "pruner": {"type": "none"},
        "score": sf.study.score,
    }
    if "storage" in raw_study:
        study_section["storage"] = _hide_password(str(raw_study["storage"]))
    tracking = {k: _hide_password(str(v)) if k in ("uri", "artifact_location") else v for k, v in raw_tracking.items()}
    tracking["experiment"] = experiment_name(sf.tracking.experiment, sf.study.name)
    values = trial.values if trial.values is not None else []
    provenance: dict[str, Any] = {
        "study": sf.study.name,
        "storage": redact(storage_url(sf.study.storage)),
        "trial": trial.number,
        "values": {m: v for m, v in zip(sf.study.metric, values, strict=True)},
        "chosen_by": rule,
        "device": config.get("device"),
        "mlflow_run_id": trial.user_attrs.get(Attr.RUN),
        "versions": _versions(),
    }
    # The discriminator first, as people write it; the device as "auto" so a file exported from a GPU
    # study runs on a CPU machine too (the original device is in the provenance).
    raw_objective = raw.get("objective") if isinstance(raw.get("objective"), dict) else {}
    objective = {"loop": config["loop"], **_hide_secrets(_as_written(config, raw_objective)), "device": "auto"}
    provenance = {k: redact(v) if isinstance(v, str) else v for k, v in _flat(provenance).items()}
    return {"study": study_section, "tracking": tracking, "objective": objective, "provenance": provenance}


def _flat(provenance: dict[str, Any]) -> dict[str, Any]:
    """Provenance as scalar values (the schema keeps it flat): nested maps become ``a.b`` keys."""
    out: dict[str, Any] = {}
    for key, value in provenance.items():
        if isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            out[key] = value
    return out


def parser() -> argparse.ArgumentParser:
    p = study_parser(
        "python -m sweep.export",
        "Write the best trial (or trial N) of a study as a study file that replays it exactly.",
        "python -m sweep.export studies/quickstart.yaml -o best.yaml && python -m sweep.run best.yaml",
    )
    p.add_argument("--trial", type=int, help="export this trial number instead of the best")
    p.add_argument("--prefer", metavar="METRIC", help="multi-objective: the Pareto trial best on METRIC")
    p.add_argument("-o", "--out", type=Path, help="output file (default: <study>-best.yaml)")
    p.add_argument("--weights", type=Path, metavar="DIR", help="also copy the trial's kept weights to DIR/weights.pt")
    p.add_argument(
        "--seeds",
        type=int,
        metavar="N",
        help="also retrain the exported trial with N fresh seeds and score it on the test split (sweep.evaluate)",
    )
    add_cpu_threads(p)
    p.add_argument(
        "--register",
        metavar="NAME",
        help="also log the trial's model (rebuilt with its weights) with mlflow.pytorch.log_model on its run "
        "and register it as NAME in the MLflow Model Registry of the study's tracking store",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    said = "Interrupted: each file it said it wrote is complete; run the same command again for the rest."
    return interruptible(lambda: _main(args), said)  # its writes are atomic or shielded (sweep.evaluate)


def _main(args: argparse.Namespace) -> int:
    if args.seeds is not None and args.seeds < 1:
        print_error(f"--seeds {args.seeds}: give a positive number")
        return EXIT_CONFIG
    sf = load_or_report(args, one_study=True)
    if sf is None:
        return EXIT_CONFIG
    try:
        study = load_existing_study(sf.study.name, sf.study.storage)
        trial, rule = choose(study, sf.study, args.trial, args.prefer)
        raw = read_study_yaml(args.study_file) or {}
        document = export_document(sf, raw, study, trial, rule)
    except ConfigError as e:  # the file changed since it was loaded above
        print_error(e)
        return EXIT_CONFIG
    except (SweepError, ExportError) as e:
        print_error(e)
        return EXIT_RUNTIME
    out = args.out or Path(f"{sf.study.name}-best.yaml")
    parse_study(yaml.safe_load(yaml.safe_dump(document)), out, substitute_env=False)  # loads like any study file
    header = f"# Run: python -m sweep.run {out}\n# Replays trial {trial.number} of study {sf.study.name!r} ({rule}).\n"
    write_atomically(out, header + yaml.safe_dump(document, sort_keys=False))
    if sf.study.multi_objective:
        print(f"Pareto front of {sf.study.name!r}:")
        for t in sorted(study.best_trials, key=lambda t: t.number):
            values = ", ".join(f"{m} = {v:.6g}" for m, v in zip(sf.study.metric, t.values, strict=True))
            print(f"  {'*' if t.number == trial.number else ' '} #{t.number}: {values}")
    values = ", ".join(f"{m} = {v:.6g}" for m, v in zip(sf.study.metric, trial.values, strict=True))
    print(f"Exported trial #{trial.number} ({values}; chosen by {rule}) to {out}")
    print(f"Replay it with: python -m sweep.run {out}")
    if args.seeds is not None:
        from sweep.commands.evaluate import run_evaluation

        apply_cpu_threads(args.cpu_threads)
        status = run_evaluation(sf, args.study_file, 1, args.seeds, trial.number)
        if status != EXIT_OK:
            return status
    if args.weights is None and args.register is None:
        return EXIT_OK
    from sweep.tracking import weights  # torch and MLflow's model flavour: only when asked for

    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = weights.download(sf.tracking.uri, trial, args.weights or Path(tmp))
            epoch = trial.user_attrs.get(Attr.CHECKPOINT_EPOCH)
            if args.weights is not None:
                print(f"Weights of trial #{trial.number} (epoch {epoch}) in {path}")
            if args.register is not None:
                model = weights.rebuild(trial.user_attrs[Attr.CONFIG], path)
                version = weights.register(sf.tracking.uri, trial, model, args.register)
                print(f"Registered the model of trial #{trial.number} as {args.register!r} version {version}")
    except SweepError as e:
        print_error(e)
        return EXIT_RUNTIME
    return EXIT_OK
