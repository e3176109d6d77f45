"""Several processes ending one study (issue #26, point 8): one writes the report and closes the parent run,
one evaluates, whoever gets there first; a claimer killed on the way leaves the job to the next run
(:mod:`sweep.execution.finishing`). Real processes on the local PostgreSQL, one shared MLflow SQLite store."""

from __future__ import annotations

import re
import socket
import subprocess
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.entities import ViewType

from sweep.execution.finishing import FINISHED_BY
from tests.conftest import postgres_error, run_cli, start_cli, tiny_study, write_yaml
from tests.support.agreement import check_agreement
from tests.support.pausing import Pauses
from tests.support.pgtools import database, pg, pg_study

needs_postgres = pytest.mark.skipif(bool(postgres_error()), reason=postgres_error() or "")
HOST = re.escape(socket.gethostname())
WRITES = re.compile(rf"^note: this process \({HOST}:(\d+)\) writes the report of the study's (\d+) finished trials$")
WRITTEN = re.compile(rf"^note: the report of the study's (\d+) finished trials is (?:being )?written by {HOST}:(\d+)$")


def _said(err: str, pattern: re.Pattern[str]) -> list[tuple[str, ...]]:
    return [m.groups() for line in err.splitlines() if (m := pattern.match(line))]


def _parent(tmp_path: Path, name: str, url: str) -> tuple[MlflowClient, str]:
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    return client, pg_study(name, url).user_attrs["mlflow_parent_run_id"]


def _stop(procs: list[subprocess.Popen[str]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.communicate()


@pytest.mark.slow
@needs_postgres
def test_four_processes_ending_a_study_write_one_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Four processes on one study, all held at the start of their end (``finish``) until each is there,
    then let go together: one writes the report and closes the parent run, the three others say in one
    line that it did (before, all four wrote it and closed the run)."""
    with database() as db:
        url = pg(db)
        doc = tiny_study("four", study={"n_trials": 2, "storage": url, "pruner": "none", "grace_period": 120})
        path = write_yaml(tmp_path / "f.yaml", doc)
        pauses = Pauses(tmp_path / "pauses", "finish", each=True).apply(monkeypatch)
        procs = [start_cli("sweep.run", str(path), "--no-progress", cwd=tmp_path) for _ in range(4)]
        try:
            for pid in pauses.wait_each("finish", 4, procs):
                pauses.release("finish", pid, procs)
            errs = [p.communicate(timeout=300)[1] for p in procs]
        finally:
            _stop(procs)
        assert [p.returncode for p in procs] == [0] * 4, errs
        writers = [(p.pid, _said(e, WRITES)) for p, e in zip(procs, errs, strict=True) if _said(e, WRITES)]
        assert len(writers) == 1 and writers[0][1] == [(str(writers[0][0]), "2")], errs
        writer = writers[0][0]
        others = [_said(e, WRITTEN) for p, e in zip(procs, errs, strict=True) if p.pid != writer]
        assert others == [[("2", str(writer))]] * 3, errs
        client, parent = _parent(tmp_path, "four", url)
        assert client.get_run(parent).info.status == "FINISHED"
        assert {a.path for a in client.list_artifacts(parent)} == {"report", "study.yaml"}
        assert "report/trials.csv" in {a.path for a in client.list_artifacts(parent, "report")}
        study = pg_study("four", url)
        record = study._storage.get_study_system_attrs(study._study_id)[FINISHED_BY]
        assert record["done"] and record["finished"] == 2 and record["by"].endswith(f":{writer}")
        check_agreement(study, f"sqlite:///{tmp_path / 'mlflow.db'}", 2)


@pytest.mark.slow
@needs_postgres
def test_a_claimer_killed_before_the_report_leaves_it_to_the_next_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kill -9 of the process that has claimed the end of the study, before it wrote anything: the same
    command again writes the report and closes the parent run FINISHED; once more, it finds the study
    ended and only closes the parent run that its own start reopened."""
    with database() as db:
        url = pg(db)
        doc = tiny_study("killed", study={"n_trials": 2, "storage": url, "pruner": "none"})
        path = write_yaml(tmp_path / "k.yaml", doc)
        pauses = Pauses(tmp_path / "pauses", "finish_claimed").apply(monkeypatch)
        proc = start_cli("sweep.run", str(path), "--no-progress", cwd=tmp_path)
        try:
            pauses.wait("finish_claimed", [proc])
        finally:
            proc.kill()
            proc.communicate()
        client, parent = _parent(tmp_path, "killed", url)
        assert client.get_run(parent).info.status == "RUNNING"
        monkeypatch.delenv("SWEEP_PAUSE_AT")
        again = run_cli("sweep.run", str(path), "--no-progress", cwd=tmp_path)
        assert again.returncode == 0, again.stderr
        ((writer, finished),) = _said(again.stderr, WRITES)
        assert finished == "2" and int(writer) != proc.pid, again.stderr
        assert client.get_run(parent).info.status == "FINISHED"
        assert "report/trials.csv" in {a.path for a in client.list_artifacts(parent, "report")}
        check_agreement(pg_study("killed", url), f"sqlite:///{tmp_path / 'mlflow.db'}", 2)
        once_more = run_cli("sweep.run", str(path), "--no-progress", cwd=tmp_path)
        assert once_more.returncode == 0, once_more.stderr
        assert _said(once_more.stderr, WRITTEN) == [("2", writer)] and not _said(once_more.stderr, WRITES)
        assert client.get_run(parent).info.status == "FINISHED"


@pytest.mark.slow
@needs_postgres
@pytest.mark.parametrize("compare", [True, False], ids=["comparison", "plain study"])
def test_two_runs_evaluate_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, compare: bool) -> None:
    """The same study with ``evaluate:`` (a comparison, ``study.compare``, or a plain study) run twice at
    once, both held before their evaluation until both are there: one evaluates, the other says in one
    line that the evaluation is under way elsewhere and exits 0; one evaluation run per evaluated
    configuration (before: one per run)."""
    with database() as db:
        url = pg(db)
        doc = tiny_study("ev", study={"n_trials": 1, "storage": url, "pruner": "none"}, objective={"epochs": 2})
        doc["evaluate"] = {"seeds": 2}
        if compare:
            doc["study"]["compare"] = "weighting.type"
            doc["search"]["params"]["weighting.type"] = {"type": "categorical", "choices": ["static", "dwa"]}
        studies = ["ev.dwa", "ev.static"] if compare else ["ev"]
        path = write_yaml(tmp_path / "e.yaml", doc)
        pauses = Pauses(tmp_path / "pauses", "evaluate", "evaluate_claimed", each=True).apply(monkeypatch)
        procs = [start_cli("sweep.run", str(path), "--no-progress", cwd=tmp_path) for _ in range(2)]
        try:
            for pid in pauses.wait_each("evaluate", 2, procs):
                pauses.release("evaluate", pid, procs)
            (claimer,) = pauses.wait_each("evaluate_claimed", 1, procs)
            (other,) = [p for p in procs if p.pid != claimer]
            other_out, other_err = other.communicate(timeout=240)
            pauses.release("evaluate_claimed", claimer, procs)
            (first,) = [p for p in procs if p.pid == claimer]
            out, err = first.communicate(timeout=300)
        finally:
            _stop(procs)
        assert other.returncode == 0 and first.returncode == 0, (other_err, err)
        under_way = [line for line in other_err.splitlines() if "evaluation is under way" in line]
        assert len(under_way) == 1 and f"({socket.gethostname()}:{claimer})" in under_way[0], other_err
        assert "Per-seed results" in out and "Per-seed results" not in other_out  # the table: the evaluator's
        client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
        experiment = client.get_experiment_by_name("ev").experiment_id
        runs = client.search_runs([experiment], run_view_type=ViewType.ALL, max_results=1000)
        evaluations = sorted(r.data.tags["sweep.study_name"] for r in runs if r.data.tags["sweep.role"] == "evaluation")
        assert evaluations == studies  # deleted (superseded) runs included
        comparisons = [r.info.lifecycle_stage for r in runs if r.data.tags["sweep.role"] == "comparison"]
        assert comparisons.count("active") == int(compare)
        for name in studies:
            study = pg_study(name, url)
            assert client.get_run(study.user_attrs["mlflow_parent_run_id"]).info.status == "FINISHED"
