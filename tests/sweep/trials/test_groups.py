"""sweep.trials.groups: the trial loops around Optuna, with what other processes may do meanwhile."""

from __future__ import annotations

import functools
from pathlib import Path

import optuna
import pytest

from sweep.trials.groups import run_one_by_one

FAIL = optuna.trial.TrialState.FAIL


class Claims:
    """Stands in for sweep.storage.claims.Claims: start trials until ``target`` have finished."""

    def __init__(self, study: optuna.Study, target: int) -> None:
        self.study, self.target, self.counted = study, target, []

    def claim(self, wait: bool = True) -> bool:
        return sum(t.state.is_finished() and t.state != FAIL for t in self.study.trials) < self.target

    def count(self, trial: optuna.trial.FrozenTrial, ended_elsewhere: bool = False) -> bool:
        self.counted.append((trial.state, ended_elsewhere))
        return True

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if not self.count(trial) or not self.claim():
            study.stop()


class EndedElsewhere:
    """An objective whose second trial another process fails (as stale) while this one trains it."""

    def __init__(self, before_run: bool = False) -> None:
        self.runs: dict[int, str] = {}
        self.asked: int | None = None
        self.before_run = before_run  # the trial is failed elsewhere before its run opened, and opening fails

    def __call__(self, trial: optuna.Trial) -> float:
        self.asked = trial.number
        if trial.number == 1:
            trial.study._storage.set_trial_state_values(trial._trial_id, FAIL)  # what fail_stale_trials does
            if self.before_run:
                raise ConnectionError("the storage was unreachable while the run was being opened")
        self.runs[trial.number] = "run"
        return float(trial.number)

    def mine(self) -> set[int]:
        return {*self.runs, *([] if self.asked is None else [self.asked])}

    def on_trial_end(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self.runs.pop(trial.number, None)


@pytest.mark.parametrize("before_run", [False, True], ids=["while-training", "before-its-run-opened"])
def test_a_trial_ended_by_another_process_is_closed_and_the_study_goes_on(
    capsys: pytest.CaptureFixture[str], before_run: bool
) -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study()
    objective, ended = EndedElsewhere(before_run), []
    claims = Claims(study, 3)
    callbacks = [objective.on_trial_end, lambda s, t: ended.append((t.number, t.state)), claims]
    run_one_by_one(study, objective, claims, callbacks)  # type: ignore[arg-type]
    assert [t.state for t in study.trials] == [
        optuna.trial.TrialState.COMPLETE,
        FAIL,
        *[optuna.trial.TrialState.COMPLETE] * 2,
    ]
    assert (1, FAIL) in ended and not objective.runs  # its run closed with the storage's state
    assert "trial 1 was ended (FAIL) by another process" in capsys.readouterr().err
    # Counted as ended elsewhere: not this process's failure (see the next test).
    assert (FAIL, True) in claims.counted


def test_a_trial_ended_elsewhere_is_run_but_not_failed_by_this_process() -> None:
    """A process whose only trials another process failed as stale during an outage must not end with
    "all trials run now failed" (exit 1): it counts them as run, not as failed."""
    from sweep.core.interrupts import Interrupts
    from sweep.storage.claims import Claims as RealClaims

    study = optuna.create_study()
    trial = study.ask()
    study.tell(trial, state=FAIL)
    frozen = study.trials[0]
    claims = RealClaims(study, None, "", 1, 1.0, Interrupts())
    assert claims.count(frozen, ended_elsewhere=True) and (claims.ran, claims.failed) == (1, 0)
    assert not claims.count(frozen) and (claims.ran, claims.failed) == (2, 1) and claims.gave_up


def test_a_group_s_records_go_in_few_transactions_and_land_before_each_tell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A group of 4 (issue #28): the members' params and tags in one write for all four, their per-epoch metrics
    in writes for all four at once, none per member; every member's epochs are in MLflow when Optuna is told its
    end, and each run holds its own epochs."""
    from mlflow import MlflowClient

    from sweep.tracking import bulk, trialruns
    from tests.conftest import run_main, tiny_study, write_yaml

    writes: list[tuple[int, bool, bool]] = []  # (runs, with params, with metrics)
    real = bulk.write_many

    def counted(client: object, batches: dict, ends: dict | None = None) -> dict:
        with_params = any(params for _, params, _ in batches.values())
        with_metrics = any(metrics for metrics, _, _ in batches.values())
        writes.append((len(batches), with_params, with_metrics))
        return real(client, batches, ends)

    monkeypatch.setattr(bulk, "write_many", counted)
    monkeypatch.setattr(trialruns, "write_many", counted)
    # No 2-s flush: on a loaded machine the first epoch outlasts it, and member 0's first epoch went alone.
    monkeypatch.setattr(trialruns, "GroupLog", functools.partial(bulk.GroupLog, flush_every_s=3600.0))
    told: list[tuple[int, int]] = []  # (trial, epochs in MLflow when told)
    real_tell = optuna.Study.tell

    def tell(study: optuna.Study, trial: optuna.Trial, *args: object, **kwargs: object) -> object:
        client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
        told.append((trial.number, len(client.get_metric_history(trial.user_attrs["mlflow_run_id"], "val_total_loss"))))
        return real_tell(study, trial, *args, **kwargs)

    monkeypatch.setattr(optuna.Study, "tell", tell)
    data = tiny_study("g", study={"n_trials": 4, "parallel_trials": 4, "pruner": "none"})
    result = run_main("sweep.run", str(write_yaml(tmp_path / "g.yaml", data)), "--no-report", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert writes[0] == (4, True, False)  # every member's params and tags, before training
    assert [w for w in writes if w[2]] and all(n == 4 for n, _, m in writes if m)  # epochs: all members at once
    assert sorted(told) == [(i, 3) for i in range(4)]


@pytest.mark.parametrize("at", ["send_held", "config.yaml"])
def test_an_interrupt_while_the_members_records_are_sent_fails_every_member(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, at: str
) -> None:
    """Ctrl-C while the members' params and tags are sent, or a member's config.yaml written (over HTTP it is
    raised at once, inside MLflow's call): every member is told FAIL as interrupted, re-queued, its run closed
    FAILED; none is left RUNNING."""
    from mlflow import MlflowClient

    from sweep.tracking.tracking import TrialRun
    from sweep.tracking.trialruns import TrialRuns
    from tests.conftest import run_main, tiny_study, write_yaml

    def interrupted(*_args: object) -> dict:
        raise KeyboardInterrupt

    real = TrialRun.log_text

    def log_text(run: TrialRun, text: str, name: str) -> bool:
        return interrupted() if name == "config.yaml" else real(run, text, name)

    if at == "send_held":
        monkeypatch.setattr(TrialRuns, "send_held", interrupted)
    else:
        monkeypatch.setattr(TrialRun, "log_text", log_text)
    data = tiny_study("i", study={"n_trials": 2, "parallel_trials": 2, "pruner": "none"})
    result = run_main("sweep.run", str(write_yaml(tmp_path / "i.yaml", data)), "--no-report", cwd=tmp_path)
    assert result.returncode == 130, result.stderr
    study = optuna.load_study(study_name="i", storage=f"sqlite:///{tmp_path / '.sweep' / 'optuna.db'}")
    ran = [t for t in study.trials if t.state != optuna.trial.TrialState.WAITING]  # re-queued copies wait
    assert [t.state for t in ran] == [FAIL, FAIL]
    assert all("interrupted" in t.user_attrs["fail_reason"] for t in ran)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert {client.get_run(t.user_attrs["mlflow_run_id"]).info.status for t in ran} == {"FAILED"}
