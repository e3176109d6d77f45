"""A trial whose training hangs (``study.trial_timeout``, ``study.stall_timeout``): it fails with its reason
and the study goes on — in the same process when the hang can be interrupted, else in another one."""

from __future__ import annotations

import time
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient

from sweep.core.errors import ConfigError
from sweep.studyfile.config import load_study
from tests.conftest import run_main, start_cli, tiny_study, write_yaml
from tests.support.agreement import check_agreement
from tests.support.pausing import Pauses

MIN = "study: {name: s, %s}\nobjective: {problem: linear_pair}\n"


@pytest.mark.parametrize("key", ["trial_timeout", "stall_timeout"])
@pytest.mark.parametrize(
    ("value", "fragment"),
    [("0", "greater than 0"), ("-5", "greater than 0"), ("1e9", "less than or equal to 2592000")],
)
def test_limits_are_positive_and_bounded(tmp_path: Path, key: str, value: str, fragment: str) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(MIN % f"{key}: {value}")
    with pytest.raises(ConfigError) as info:
        load_study(path)
    assert info.value.key == f"study.{key}" and fragment in info.value.message


def test_limits_are_off_by_default_and_load(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(MIN % "n_trials: 2")
    assert (load_study(path).study.trial_timeout, load_study(path).study.stall_timeout) == (None, None)
    path.write_text(MIN % "trial_timeout: 3600, stall_timeout: 90.5")
    assert (load_study(path).study.trial_timeout, load_study(path).study.stall_timeout) == (3600, 90.5)


# The limits these tests set: far above a normal trial's epoch (milliseconds; a few seconds on a loaded,
# slowed machine), so only the trial that hangs meets them, at any machine speed.
LIMIT = 10


def _hang_study(name: str, how: str, limits: dict, n_trials: int = 3, env: str = "") -> dict:
    doc = tiny_study(name, study={"n_trials": n_trials, "pruner": "none", "heartbeat_interval": 1, **limits})
    doc["study"]["grace_period"] = 2
    doc["objective"]["problem"] = {"name": "tests.support.fault_problems:hangs", "options": {"how": how, "env": env}}
    return doc


def _study(tmp_path: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / '.sweep' / 'optuna.db'}")


def test_a_trial_past_its_timeout_fails_and_the_next_trial_runs(tmp_path: Path) -> None:
    """study.trial_timeout: the hung trial (blocked in user code) fails with the reason in Optuna and MLflow,
    and the same process runs the others to n_trials."""
    path = write_yaml(tmp_path / "t.yaml", _hang_study("wall", "python", {"trial_timeout": LIMIT}))
    result = run_main("sweep.run", str(path), "--no-report", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    study = _study(tmp_path, "wall")
    failed = [t for t in study.trials if t.state.name == "FAIL"]
    assert [t.number for t in failed] == [0]
    why = failed[0].user_attrs["fail_reason"]
    assert why == f"TrialTimeout: timed out: still training after {LIMIT} s (study.trial_timeout)"
    run = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(failed[0].user_attrs["mlflow_run_id"])
    assert run.info.status == "FAILED" and run.data.tags["sweep.fail_reason"] == why
    assert "trial 0 failed: TrialTimeout: timed out" in result.stderr
    check_agreement(study, f"sqlite:///{tmp_path / 'mlflow.db'}", 3)


@pytest.mark.slow
def test_a_stalled_trial_fails_with_no_progress_and_the_study_ends(tmp_path: Path) -> None:
    """study.stall_timeout, a real process: the trial that stops reporting epochs fails "no progress" after
    its last epoch; the study still ends with n_trials, exit 0."""
    path = write_yaml(tmp_path / "s.yaml", _hang_study("stall", "python", {"stall_timeout": LIMIT}))
    proc = start_cli("sweep.run", str(path), "--no-report", "--no-progress", cwd=tmp_path)
    try:
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err, err
    study = _study(tmp_path, "stall")
    (failed,) = [t for t in study.trials if t.state.name == "FAIL"]
    assert failed.user_attrs["fail_reason"] == (
        f"TrialTimeout: no progress: no epoch reported for {LIMIT} s after epoch 0 (study.stall_timeout)"
    )
    assert sorted(failed.intermediate_values) == [0]  # its one reported epoch is kept
    check_agreement(study, f"sqlite:///{tmp_path / 'mlflow.db'}", 3)


@pytest.mark.slow
def test_a_trial_stuck_in_c_code_is_taken_over_by_another_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hang is in C code that no signal gets out of (the GIL released). One process ran trial 0 and is
    held before it claims again; a second one hangs in trial 1; the first, released, waits for that trial
    "running elsewhere". grace_period after its timeout the second process fails the trial with the reason,
    re-queues it and exits (1, one line) as a killed one would; the first takes the trial over and ends the
    study with n_trials."""
    doc = _hang_study("stuck", "c", {"trial_timeout": LIMIT}, n_trials=2, env="SWEEP_TEST_HANG")
    path = write_yaml(tmp_path / "c.yaml", doc)
    pauses = Pauses(tmp_path / "pauses", "closed").apply(monkeypatch)  # the first process to close a trial
    waits = start_cli("sweep.run", str(path), "--no-report", "--no-progress", cwd=tmp_path)
    stuck = None
    try:
        pauses.wait("closed", [waits])  # trial 0 done
        hanging = tmp_path / "hanging"
        monkeypatch.setenv("SWEEP_TEST_HANG", str(hanging))  # only this process hangs (in its first trial)
        stuck = start_cli("sweep.run", str(path), "--no-report", "--no-progress", cwd=tmp_path)
        while not hanging.exists():  # trial 1 is inside the hang
            assert stuck.poll() is None, stuck.communicate()
            time.sleep(0.05)
        pauses.release("closed", procs=[waits])
        _, stuck_err = stuck.communicate(timeout=120)
        _, waits_err = waits.communicate(timeout=120)
    finally:
        for proc in (waits, stuck):
            if proc is not None and proc.poll() is None:
                proc.kill()
    assert stuck.returncode == 1, stuck_err
    errors = [line for line in stuck_err.splitlines() if line.startswith("error:")]
    why = f"timed out: still training after {LIMIT} s (study.trial_timeout); the training did not stop within 2 s"
    assert len(errors) == 1 and errors[0].startswith(f"error: trial 1: {why}"), stuck_err
    assert "this process exits, as a killed one would" in errors[0] and "Traceback" not in stuck_err
    assert waits.returncode == 0, waits_err
    assert "1 trial(s) running elsewhere may finish the study; waiting" in waits_err
    study = _study(tmp_path, "stuck")
    hung = study.trials[1]
    assert hung.state.name == "FAIL" and hung.user_attrs["fail_reason"].startswith(why)
    retry = study.trials[2]
    assert retry.system_attrs["failed_trial"] == 1 and retry.params == hung.params
    assert retry.state.name == "COMPLETE"
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.get_run(hung.user_attrs["mlflow_run_id"])
    assert run.info.status == "FAILED" and run.data.tags["sweep.fail_reason"].endswith("; re-queued")
    stack = client.download_artifacts(run.info.run_id, "error.txt", str(tmp_path))
    assert "in _hang" in Path(stack).read_text()  # where the main thread hung
    check_agreement(study, f"sqlite:///{tmp_path / 'mlflow.db'}", 2)
