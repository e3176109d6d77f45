"""One trial's objective call, without training: what it records and in which order."""

from __future__ import annotations

from pathlib import Path

import optuna

from sweep.core.interrupts import Interrupts
from sweep.studyfile.config import parse_study
from sweep.tracking.trialruns import TrialRuns
from sweep.trials.trial import Objective, ProblemCache
from tests.conftest import tiny_study


def test_trial_beats_before_its_mlflow_run_exists(tmp_path: Path) -> None:
    """The objective records a heartbeat before anything else, so a worker killed at any point after
    its MLflow run exists leaves a trial the others see as stale (Optuna's own first beat is racy)."""
    calls: list[str] = []
    storage = optuna.storages.InMemoryStorage()

    class Beat:
        """The study's storage as the objective sees it, recording heartbeats."""

        heartbeat_interval = 1
        get_study_id_from_name = storage.get_study_id_from_name
        get_trial_id_from_study_id_trial_number = storage.get_trial_id_from_study_id_trial_number

        def record_heartbeat(self, trial_id: int) -> None:
            calls.append(f"beat {trial_id}")

    class Client:
        def create_run(self, *args: object, **kwargs: object) -> None:
            calls.append("run")
            raise RuntimeError("stop here")

    class Tracker:
        client, experiment_id, parent_id, run_prefix = Client(), "0", "p", ""

    sf = parse_study(tiny_study("beat"), "b.yaml")
    records = TrialRuns(Tracker(), beat=Beat())  # type: ignore[arg-type]
    objective = Objective(sf.study, sf.search, sf.objective, records, ProblemCache(), Interrupts())
    study = optuna.create_study(study_name="beat", storage=storage)
    study.optimize(objective, n_trials=1, catch=(RuntimeError,))
    trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name("beat"), 0)
    assert calls == [f"beat {trial_id}", "run"]
