"""A study tracked by a real ``mlflow server`` over http://, with a password in the tracking URL."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient

from tests.conftest import run_cli, run_main, serving, tiny_study, write_yaml


@pytest.mark.slow
def test_study_on_a_tracking_server_keeps_its_password(tmp_path: Path) -> None:
    """The scale-out set-up on one machine: runs, metrics and artifacts go through the server (which
    stores them under its own folder); the password in the URL (the server, without auth, ignores
    it) is in no output and no file, the Optuna database and the server's store included."""
    served = tmp_path / "server"
    served.mkdir()
    password = f"pw{uuid.uuid4().hex[:12]}"

    def server(port: int) -> list[str]:
        store = ["--backend-store-uri", f"sqlite:///{served / 'mlflow.db'}", "--artifacts-destination", str(served)]
        return [sys.executable, "-m", "mlflow", "server", *store, "--host", "127.0.0.1", "--port", str(port)]

    with serving(server, served) as port:
        uri = f"http://sweep:{password}@127.0.0.1:{port}"
        work = tmp_path / "work"
        work.mkdir()
        path = write_yaml(work / "s.yaml", tiny_study("served", tracking={"uri": uri}, study={"n_trials": 2}))
        outputs = [
            run_cli("sweep.run", str(path), cwd=work),  # with the report: artifacts uploaded through the server
            run_main("sweep.ui", str(path), cwd=work),
            run_main("sweep.report", str(path), "-o", str(work / "report"), cwd=work),
            run_main("sweep.export", str(path), "-o", str(work / "best.yaml"), "--register", "served-best", cwd=work),
        ]
        for o in outputs:
            assert o.returncode == 0, o.stderr
            assert password not in o.stdout and password not in o.stderr
        assert f"The study is tracked by the server http://sweep:***@127.0.0.1:{port}" in outputs[1].stdout

        client = MlflowClient(f"http://127.0.0.1:{port}")
        experiment = client.get_experiment_by_name("served")
        runs = client.search_runs([experiment.experiment_id])
        parents = [r for r in runs if r.data.tags.get("sweep.role") == "parent"]
        children = [r for r in runs if r.data.tags.get("sweep.role") == "trial"]
        assert len(parents) == 1 and parents[0].info.status == "FINISHED" and len(children) == 2
        study = optuna.load_study(study_name="served", storage=f"sqlite:///{work / '.sweep' / 'optuna.db'}")
        assert sorted(r.info.run_id for r in children) == sorted(t.user_attrs["mlflow_run_id"] for t in study.trials)
        for child in children:
            # the trial's files, and no per-trial plot unless tracking.trial_plots asks for one
            assert {a.path for a in client.list_artifacts(child.info.run_id)} == {"config.yaml", "weights.pt"}
            assert len(client.get_metric_history(child.info.run_id, "val_total_loss")) == 3  # one per epoch
        assert "report" in {a.path for a in client.list_artifacts(parents[0].info.run_id)}
        # --register: a real registry entry on the server, pointing at the best trial's run
        (version,) = client.search_model_versions("name = 'served-best'")
        assert version.run_id == study.best_trial.user_attrs["mlflow_run_id"]

    files = [f for f in tmp_path.rglob("*") if f.is_file() and f.name != "s.yaml"]
    assert any(f.name == "optuna.db" for f in files) and any(f.name == "weights.pt" for f in files)
    for file in files:
        assert password.encode() not in file.read_bytes(), file
