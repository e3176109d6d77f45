"""``python -m sweep.ui STUDY.yaml`` — open the MLflow UI on a study's tracking store, bound to 127.0.0.1.

For a ``sqlite:///`` (or other database) tracking URI it starts ``mlflow ui`` on that store (one
worker, job execution off: it starts in ~9 s instead of ~15 s) and prints the URL of the study's
runs; Ctrl-C stops it. For an ``http://`` tracking server there is nothing to start: it prints the
server's URL for the study. ``optuna-dashboard`` on the study's storage works too (see README).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from sweep.cli import load_or_report, study_parser
from sweep.console import print_error
from sweep.errors import EXIT_CONFIG, EXIT_OK, EXIT_RUNTIME, one_line
from sweep.urls import absolute_sqlite, redact


def parser() -> argparse.ArgumentParser:
    p = study_parser(
        "python -m sweep.ui",
        "Open the MLflow UI on a study's tracking store (bound to 127.0.0.1) and print its URL.",
        "python -m sweep.ui studies/quickstart.yaml --port 5000",
    )
    p.add_argument("--port", type=int, default=5000, help="port on 127.0.0.1 (default 5000)")
    p.add_argument("--print-only", action="store_true", help="print the command and URL, start nothing")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    sf = load_or_report(args)
    if sf is None:
        return EXIT_CONFIG
    from mlflow import MlflowClient

    uri = sf.tracking.uri
    experiment_name = sf.tracking.experiment or sf.study.name
    if uri.startswith(("http://", "https://")):
        try:
            found = MlflowClient(tracking_uri=uri).get_experiment_by_name(experiment_name)
        except Exception as e:  # MLflow's errors embed the URL: redact it
            print_error(f"cannot reach MLflow tracking {redact(uri)}: {one_line(e, with_type=False)}")
            return EXIT_RUNTIME
        where = f"#/experiments/{found.experiment_id}/runs" if found else ""
        print(f"The study is tracked by the server {redact(uri)}: open {redact(uri).rstrip('/')}/{where}")
        return EXIT_OK
    try:
        found = MlflowClient(tracking_uri=absolute_sqlite(uri)).get_experiment_by_name(experiment_name)
    except Exception as e:  # MLflow's errors embed the URL: redact it
        print_error(f"cannot read MLflow tracking {redact(uri)}: {one_line(e, with_type=False)}")
        return EXIT_RUNTIME
    if found is None:
        print_error(f"no MLflow experiment {experiment_name!r} in {redact(uri)}: run the study first")
        return EXIT_RUNTIME
    command = [
        sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
        "--host", "127.0.0.1", "--port", str(args.port), "--workers", "1",
    ]  # fmt: skip
    url = f"http://127.0.0.1:{args.port}/#/experiments/{found.experiment_id}/runs"
    shown = " ".join(redact(part) for part in command)
    print(f"MLflow UI: {url}\n(starting: {shown}; Ctrl-C stops it)", flush=True)
    if args.print_only:
        return EXIT_OK
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    try:
        return subprocess.call(command, env=env)
    except KeyboardInterrupt:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
