"""``python -m sweep.ui STUDY.yaml`` — open the MLflow UI on a study's tracking store, bound to 127.0.0.1.

For a ``sqlite:///`` (or other database) tracking URI it starts ``mlflow ui`` on that store (one
worker, job execution off: it starts in ~9 s instead of ~15 s) and prints the URL of the study's
runs; Ctrl-C stops it. For an ``http://`` tracking server there is nothing to start: it prints the
server's URL for the study. Either URL opens the study's runs sorted by its target, best first, with
the target and the searched params as columns (a saved view of the experiment, see
:func:`sweep.views.runs_view_url`). ``optuna-dashboard`` on the study's storage works too (see README).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys

import optuna

from sweep.cli import load_or_report, study_parser
from sweep.config import StudyFile
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


def _trials(sf: StudyFile) -> list[optuna.trial.FrozenTrial]:
    """The study's trials (their params are the searched ones), or none when its storage has no such study."""
    from sweep.storage import load_existing_study

    try:
        return load_existing_study(sf.study.name, sf.study.storage).get_trials(deepcopy=False)
    except Exception:  # no storage, no study, a database that does not answer: the target column alone
        return []


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    sf = load_or_report(args)
    if sf is None:
        return EXIT_CONFIG
    from mlflow import MlflowClient

    from sweep.views import runs_view_url

    uri = sf.tracking.uri
    experiment_name = sf.tracking.experiment or sf.study.name
    if uri.startswith(("http://", "https://")):
        try:
            client = MlflowClient(tracking_uri=uri)
            found = client.get_experiment_by_name(experiment_name)
        except Exception as e:  # MLflow's errors embed the URL: redact it
            print_error(f"cannot reach MLflow tracking {redact(uri)}: {one_line(e, with_type=False)}")
            return EXIT_RUNTIME
        base = redact(uri).rstrip("/")
        url = runs_view_url(client, found.experiment_id, base, sf.study, _trials(sf)) if found else f"{base}/"
        print(f"The study is tracked by the server {redact(uri)}: open {url}")
        return EXIT_OK
    try:
        client = MlflowClient(tracking_uri=absolute_sqlite(uri))
        found = client.get_experiment_by_name(experiment_name)
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
    url = runs_view_url(client, found.experiment_id, f"http://127.0.0.1:{args.port}", sf.study, _trials(sf))
    shown = " ".join(redact(part) for part in command)
    print(f"MLflow UI: {url}\n(starting: {shown}; Ctrl-C stops it)", flush=True)
    if args.print_only:
        return EXIT_OK
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    return serve(command, env)


def serve(command: list[str], env: dict[str, str]) -> int:
    """Run the MLflow UI until it exits, or until Ctrl-C or SIGTERM reach this process: then stop its whole
    process group (``mlflow ui`` starts a server with workers of its own; stopping only the first left
    them listening), waiting up to 10 s before killing it."""
    server = subprocess.Popen(command, env=env, start_new_session=True)

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        return server.wait()
    except KeyboardInterrupt:
        return EXIT_OK
    finally:
        signal.signal(signal.SIGTERM, previous)
        if server.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(server.pid, signal.SIGKILL)
                server.wait()


if __name__ == "__main__":
    from sweep.exit import exit_now

    exit_now(main())
