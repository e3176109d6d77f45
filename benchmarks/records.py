"""``python -m benchmarks.records A B`` — are two runs of a study the same records in Optuna and MLflow?

Speed work must not change what a study records (issue #14). Run one study file in two fresh folders,
e.g. with the code before and after a change, then compare the folders::

    git worktree add /tmp/before <rev>
    (cd /tmp/a && cp /path/to/studies/quickstart.yaml . && PYTHONPATH=/tmp/before python -m sweep.run quickstart.yaml)
    (cd /tmp/b && cp /path/to/studies/quickstart.yaml . && python -m sweep.run quickstart.yaml)
    python -m benchmarks.records /tmp/a /tmp/b

Each folder's records are read into one normalised tree: every Optuna trial (state, values, params and
their distributions, intermediate values, user and system attributes) and every MLflow run of the study's
experiment (status, params, tags, every metric's full history by step, the artifact files: text files by
content, ``weights.pt`` by its tensors, others by size), trials and runs keyed by trial number. What is
different on every run by nature is left out: times, durations, ids (run ids become the trial number
they belong to), host, user, paths, heartbeats. The differences are printed one per line; the exit code
is 1 when there are any (``--allow PATTERN`` accepts differences at the paths a glob matches, e.g. a
record a change removed on purpose: ``--allow '*/loss_curves.png'``).
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import math
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Keys whose values differ on every run (times, ids, machines), left out wherever they appear.
VOLATILE = (
    "mlflow.user",
    "mlflow.source.name",
    "mlflow.source.git.commit",
    "mlflow.runName",
    "mlflow.parentRunId",
    "mlflow.rootRunId",
    "mlflow.log-model.history",
    "mlflow.note.content",
    "mlflow_run_id",
    "mlflow_parent_run_id",
    "sweep.host",
    "sweep.pid",
    "sweep.started",
    "sweep.cwd",
    "heartbeat",
    "claim",
    "peak_memory_mb",  # on CPU the process's peak RSS: what else the process imported and allocated
)


def _volatile(key: str) -> bool:
    return any(part in key for part in VOLATILE)


def _timing(column: str) -> bool:
    return "duration" in column or "datetime" in column


def _number(value: float | None) -> Any:
    """A float as text that compares exactly (NaN equal to NaN); other values unchanged."""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else repr(value)
    return value


def optuna_records(folder: Path, study_name: str | None) -> dict[str, Any]:
    """The study's trials by number, from ``.sweep/optuna.db`` in ``folder``."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = f"sqlite:///{folder / '.sweep' / 'optuna.db'}"
    names = [s.study_name for s in optuna.get_all_study_summaries(url)]
    out: dict[str, Any] = {}
    for name in names if study_name is None else [study_name]:
        study = optuna.load_study(study_name=name, storage=url)
        attrs = {k: v for k, v in study.user_attrs.items() if not _volatile(k)}
        out[f"study {name}"] = {"directions": [d.name for d in study.directions], "user_attrs": attrs}
        for t in study.get_trials(deepcopy=False):
            out[f"study {name}/trial {t.number}"] = {
                "state": t.state.name,
                "values": [_number(v) for v in t.values or []],
                "params": {k: _number(v) for k, v in t.params.items()},
                "distributions": {k: repr(d) for k, d in t.distributions.items()},
                "intermediate_values": {str(k): _number(v) for k, v in sorted(t.intermediate_values.items())},
                "user_attrs": {k: v for k, v in t.user_attrs.items() if not _volatile(k)},
                "system_attrs": {k: v for k, v in t.system_attrs.items() if not _volatile(k)},
            }
    return out


def _artifact(path: Path) -> Any:
    """A file as compared: text by its content's hash, ``.pt`` by its tensors' bytes (any dtype, bf16
    too), report tables without their time and id columns, other files (plots) by their presence."""
    if path.suffix == ".pt":
        import torch

        tree = torch.load(path, weights_only=True, map_location="cpu")
        digest = hashlib.sha256()
        for model, state in sorted(tree.items()):
            for key, tensor in sorted(state.items()):
                digest.update(f"{model}.{key}{tuple(tensor.shape)}{tensor.dtype}".encode())
                digest.update(tensor.detach().cpu().contiguous().flatten().view(torch.uint8).numpy().tobytes())
        return f"tensors {digest.hexdigest()[:16]}"
    if path.suffix in (".csv", ".txt") and path.parent.name == "report":  # tables: without time or id columns
        rows = [line.split(",") if path.suffix == ".csv" else line.split() for line in path.read_text().splitlines()]
        keep = [i for i, name in enumerate(rows[0] if rows else []) if not (_timing(name) or _volatile(name))]
        text = "\n".join(" ".join(row[i] for i in keep if i < len(row)) for row in rows)
        return f"table {hashlib.sha256(text.encode()).hexdigest()[:16]}"
    if path.suffix in (".yaml", ".txt", ".json", ".md", ".csv"):
        return f"text {hashlib.sha256(path.read_bytes()).hexdigest()[:16]}"
    return f"file ({path.suffix or 'no suffix'})"


def _artifacts(root: Path) -> dict[str, Any]:
    if not root.is_dir():
        return {}
    return {str(p.relative_to(root)): _artifact(p) for p in sorted(root.rglob("*")) if p.is_file()}


def mlflow_records(folder: Path) -> dict[str, Any]:
    """Every run in ``folder/mlflow.db``, keyed by experiment and trial number (the parent as ``parent``)."""
    db = sqlite3.connect(f"file:{folder / 'mlflow.db'}?mode=ro", uri=True)
    experiments = dict(db.execute("SELECT experiment_id, name FROM experiments"))
    out: dict[str, Any] = {}
    runs = db.execute("SELECT run_uuid, experiment_id, status, artifact_uri FROM runs WHERE lifecycle_stage='active'")
    for run_id, experiment, status, artifact_uri in runs.fetchall():
        tags = dict(db.execute("SELECT key, value FROM tags WHERE run_uuid=?", (run_id,)))
        params = dict(db.execute("SELECT key, value FROM params WHERE run_uuid=?", (run_id,)))
        metrics: dict[str, list[Any]] = {}
        for key, step, value, is_nan in db.execute(
            "SELECT key, step, value, is_nan FROM metrics WHERE run_uuid=? ORDER BY key, step, timestamp", (run_id,)
        ):
            if _volatile(key):
                continue
            metrics.setdefault(key, []).append([step, "nan" if is_nan else _number(float(value))])
        number = tags.get("sweep.trial_number") or params.get("trial_number") or tags.get("optuna.trial_number")
        name = "parent" if "mlflow.parentRunId" not in tags else f"trial {number if number is not None else '?'}"
        local = Path(artifact_uri.removeprefix("file://")) if artifact_uri.startswith(("/", "file://")) else None
        if local is not None and not local.is_absolute():
            local = folder / local
        out[f"experiment {experiments[experiment]}/{name}"] = {
            "status": status,
            "params": params,
            "tags": {k: v for k, v in tags.items() if not _volatile(k)},
            "metrics": metrics,
            "artifacts": _artifacts(local) if local is not None else "not local",
        }
    return out


def records(folder: Path, study_name: str | None = None) -> dict[str, Any]:
    """Both stores' records of the study (or every study) run in ``folder``."""
    return {"optuna": optuna_records(folder, study_name), "mlflow": mlflow_records(folder)}


def differences(a: Any, b: Any, path: str = "") -> Iterator[str]:
    """One line per place the two trees differ (``path: a → b``; a missing side shown as ``absent``)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            where = f"{path}/{key}" if path else str(key)
            if key not in a:
                yield f"{where}: absent → {_short(b[key])}"
            elif key not in b:
                yield f"{where}: {_short(a[key])} → absent"
            else:
                yield from differences(a[key], b[key], where)
    elif a != b:
        yield f"{path}: {_short(a)} → {_short(b)}"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.records",
        description="Compare the Optuna and MLflow records of two runs of a study (two folders).",
    )
    p.add_argument("a", type=Path, help="the first run's folder (holds .sweep/optuna.db and mlflow.db)")
    p.add_argument("b", type=Path, help="the second run's folder")
    p.add_argument("--study", help="compare this study only (default: every study in the folders)")
    p.add_argument(
        "--allow",
        action="append",
        default=[],
        metavar="PATTERN",
        help="accept differences at paths matching this glob, e.g. '*/loss_curves.png' (repeatable)",
    )
    args = p.parse_args(argv)
    a, b = records(args.a, args.study), records(args.b, args.study)
    found = list(differences(a, b))
    allowed = [d for d in found if any(fnmatch.fnmatchcase(d.split(": ")[0], pattern) for pattern in args.allow)]
    shown = [d for d in found if d not in allowed]
    counts = {
        "trials": sum(1 for k in a["optuna"] if "/trial " in k),
        "runs": len(a["mlflow"]),
        "metric values": sum(len(v) for r in a["mlflow"].values() for v in r["metrics"].values()),
    }
    for line in shown:
        print(line)
    for line in allowed:
        print(f"(allowed) {line}")
    summary = ", ".join(f"{n} {what}" for what, n in counts.items())
    print(f"compared {summary}: {len(shown)} differences" + (f", {len(allowed)} allowed" if allowed else ""))
    return 1 if shown else 0


if __name__ == "__main__":
    sys.exit(main())
