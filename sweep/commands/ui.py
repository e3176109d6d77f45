"""``python -m sweep.ui STUDY.yaml`` — open the MLflow UI on a study's tracking store, bound to 127.0.0.1.

For a ``sqlite:///`` (or other database) tracking URI it starts ``mlflow ui`` on that store (one
worker, job execution off: it starts in ~9 s instead of ~15 s) and prints the URL of the study's
runs; Ctrl-C stops it. For an ``http://`` tracking server there is nothing to start: it prints the
server's URL for the study. Either URL opens the study's trials sorted by its target, best first, with
the target, the compared key of a comparison and the searched params as columns (a saved view of the
experiment, see :func:`sweep.tracking.views.runs_view_url`); where ``sweep.evaluate`` recorded test-set evaluations
it prints their view too (:func:`sweep.tracking.views.evaluations_view_url`). ``optuna-dashboard`` on the study's
storage works too (see docs/howto/scale-out.md).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
from typing import TYPE_CHECKING

import optuna

from sweep.commands.cli import load_or_report, study_parser
from sweep.core.errors import EXIT_CONFIG, EXIT_OK, EXIT_RUNTIME, one_line, print_error
from sweep.core.interrupts import interruptible
from sweep.core.records import experiment_name
from sweep.core.urls import absolute_sqlite, redact
from sweep.studyfile.sections import StudySection

if TYPE_CHECKING:
    from mlflow import MlflowClient


def parser() -> argparse.ArgumentParser:
    p = study_parser(
        "python -m sweep.ui",
        "Open the MLflow UI on a study's tracking store (bound to 127.0.0.1) and print its URL.",
        "python -m sweep.ui studies/quickstart.yaml --port 5000",
    )
    p.add_argument("--port", type=int, default=5000, help="port on 127.0.0.1 (default 5000)")
    p.add_argument("--print-only", action="store_true", help="print the command and URL, start nothing")
    return p


def _trials(names: list[str], storage: str | None) -> list[optuna.trial.FrozenTrial]:
    """The trials of the studies ``names`` (their params are the searched ones): the study's, or a comparison's
    sub-studies' (``<name>.<choice>``, :mod:`sweep.studyfile.compare`: the comparison's own name holds none).
    None from a storage without such a study."""
    from sweep.storage.storage import load_existing_study

    found: list[optuna.trial.FrozenTrial] = []
    for name in names:
        try:
            found += load_existing_study(name, storage).get_trials(deepcopy=False)
        except Exception:  # no storage, no study, a database that does not answer: the target column alone
            continue
    return found


def _evaluations(
    client: MlflowClient, experiment_id: str, base: str, study: StudySection, trials: list[optuna.trial.FrozenTrial]
) -> str | None:
    """The link to the study's test-set evaluations (:func:`sweep.tracking.views.evaluations_view_url`), where the
    experiment has any (``sweep.evaluate``); they are not in the trials' view."""
    from sweep.tracking.views import EVALUATIONS_FILTER, evaluations_view_url

    try:
        if not client.search_runs([experiment_id], filter_string=EVALUATIONS_FILTER, max_results=1):
            return None
    except Exception:  # a server that does not answer the search: the trials' link alone
        return None
    return evaluations_view_url(client, experiment_id, base, study, trials)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return interruptible(lambda: _main(args), "Interrupted: the MLflow UI was not started.")  # Ctrl-C once it is: 0


def _main(args: argparse.Namespace) -> int:
    sf = load_or_report(args)
    if sf is None:
        return EXIT_CONFIG
    from mlflow import MlflowClient

    from sweep.studyfile.compare import members
    from sweep.tracking.views import runs_view_url

    names = [m.sf.study.name for m in members(sf)] or [sf.study.name]
    uri = sf.tracking.uri
    name = experiment_name(sf.tracking.experiment, sf.study.name)
    if uri.startswith(("http://", "https://")):
        try:
            client = MlflowClient(tracking_uri=uri)
            found = client.get_experiment_by_name(name)
        except Exception as e:  # MLflow's errors embed the URL: redact it
            print_error(f"cannot reach MLflow tracking {redact(uri)}: {one_line(e, with_type=False)}")
            return EXIT_RUNTIME
        base, trials = redact(uri).rstrip("/"), _trials(names, sf.study.storage)
        url = runs_view_url(client, found.experiment_id, base, sf.study, trials) if found else f"{base}/"
        print(f"The study is tracked by the server {redact(uri)}: open {url}")
        evaluations = _evaluations(client, found.experiment_id, base, sf.study, trials) if found else None
        if evaluations:
            print(f"Its test-set evaluations (mean over seeds): {evaluations}")
        return EXIT_OK
    try:
        client = MlflowClient(tracking_uri=absolute_sqlite(uri))
        found = client.get_experiment_by_name(name)
    except Exception as e:  # MLflow's errors embed the URL: redact it
        print_error(f"cannot read MLflow tracking {redact(uri)}: {one_line(e, with_type=False)}")
        return EXIT_RUNTIME
    if found is None:
        print_error(f"no MLflow experiment {name!r} in {redact(uri)}: run the study first")
        return EXIT_RUNTIME
    command = [
        sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
        "--host", "127.0.0.1", "--port", str(args.port), "--workers", "1",
    ]  # fmt: skip
    base, trials = f"http://127.0.0.1:{args.port}", _trials(names, sf.study.storage)
    url = runs_view_url(client, found.experiment_id, base, sf.study, trials)
    evaluations = _evaluations(client, found.experiment_id, base, sf.study, trials)
    shown = " ".join(redact(part) for part in command)
    how = (
        f"not started (--print-only); to start it: {shown}"
        if args.print_only
        else f"starting: {shown}; Ctrl-C stops it"
    )
    print(f"MLflow UI: {url}\n({how})", flush=True)
    if evaluations:
        print(f"Test-set evaluations (mean over seeds): {evaluations}", flush=True)
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
