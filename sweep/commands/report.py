"""``python -m sweep.report STUDY.yaml`` — top-k table, trials CSV/Parquet and Optuna's plots.

The files are written by :func:`sweep.results.report.write_report` (which ``sweep.run`` calls too, for the
parent run's artifacts); this module is the command around it: the study file, the tracking store, the
sub-studies of a comparison, and the comparison or evaluation table (:mod:`sweep.results.results`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from sweep.commands.cli import load_or_report, study_parser
from sweep.core.errors import EXIT_CONFIG, EXIT_RUNTIME, SweepError, print_error, to_stderr
from sweep.core.interrupts import interruptible
from sweep.results.report import write_report
from sweep.storage.storage import load_existing_study

if TYPE_CHECKING:
    from mlflow import MlflowClient


def _tracking_client(uri: str) -> MlflowClient | None:
    """A client of the study's MLflow tracking store, or ``None`` (said on stderr where it matters): a
    SQLite file that does not exist (a reading command creates none), a server that does not answer."""
    from mlflow import MlflowClient

    from sweep.core.urls import absolute_sqlite, sqlite_path
    from sweep.tracking.tracking import check_tracking, quiet_mlflow

    path = sqlite_path(uri)
    if path is not None and not path.exists():
        return None
    try:
        check_tracking(uri)
    except SweepError as e:
        to_stderr(f"note: {e}: the tables show the Optuna records only")
        return None
    quiet_mlflow()
    return MlflowClient(tracking_uri=absolute_sqlite(uri))


def parser() -> argparse.ArgumentParser:
    p = study_parser(
        "python -m sweep.report",
        "Print the best trials of a study and write its trials table and plots.",
        "python -m sweep.report studies/quickstart.yaml -o reports/quickstart --top 5",
    )
    p.add_argument("-o", "--out", type=Path, help="folder for CSV/Parquet/plots (default: .sweep/reports/<study>)")
    p.add_argument("--top", type=int, default=10, help="rows in the top-k table (default 10)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    said = "Interrupted: the report is not complete; run the same command again to write it."
    return interruptible(lambda: _main(args), said)  # reads only: the first signal ends it at once


def _main(args: argparse.Namespace) -> int:
    sf = load_or_report(args)
    if sf is None:
        return EXIT_CONFIG
    from sweep.results.results import recorded, table
    from sweep.studyfile.compare import members

    out = args.out or Path(".sweep") / "reports" / sf.study.name
    losses = sf.objective.loop_losses
    subs = [(m.sf, out / m.label) for m in members(sf)] or [(sf, out)]
    client: MlflowClient | None = None
    try:
        for i, (sub, folder) in enumerate(subs):
            study = load_existing_study(sub.study.name, sub.study.storage)
            if i == 0:  # once a study is there to report on (sub-studies share the tracking store)
                client = _tracking_client(sf.tracking.uri)
            written, skipped = write_report(
                study, sf.study.metric, sf.study.directions, losses, folder, args.top, client
            )
            if len(subs) > 1:
                print(f"== {sub.study.name} ==")
            print((folder / "top.txt").read_text(), end="")
            print(f"\nWrote {len(written)} files to {folder}/ ({', '.join(p.name for p in written)})")
            for line in skipped:
                print(f"  not drawn: {line}")
        rows = recorded([(m.label, m.sf.study) for m in members(sf)] or [(None, sf.study)])
    except SweepError as e:
        print_error(e)
        return EXIT_RUNTIME
    if sf.study.compare or any(r.runs for r in rows):
        text = table(sf.study, rows)
        (out / "comparison.md").write_text(text + "\n")
        print(f"\nComparison ({sf.study.compare}):" if sf.study.compare else "\nEvaluation on the test split:")
        print(text)
    return 0
