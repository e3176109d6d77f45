"""sweep.trials.slots: a vectorized group's freed slots refilled with new trials, each told as it ends."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient

from sweep.trials import groups
from tests.conftest import run_main, tiny_study, write_yaml
from tests.support.agreement import check_agreement

PRUNED, COMPLETE = optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.COMPLETE


def halving_study(name: str) -> dict:
    """10 trials of 4 epochs, 4 at once, under successive halving (η 2, from epoch 1): most are pruned early."""
    pruner = {"type": "successive_halving", "min_resource": 1, "reduction_factor": 2}
    data = tiny_study(name, study={"n_trials": 10, "parallel_trials": 4, "pruner": pruner})
    data["objective"]["epochs"] = 4
    return data


def beside(tags: dict[int, str]) -> dict[int, list[int]]:
    """Per trial, the trials it started training beside (its ``sweep.group`` tag, itself left out)."""
    return {n: [int(m) for m in tag.split(", ") if int(m) != n] for n, tag in tags.items()}


def run(tmp_path: Path, name: str) -> tuple[optuna.Study, MlflowClient]:
    result = run_main(
        "sweep.run", str(write_yaml(tmp_path / f"{name}.yaml", halving_study(name))), "--no-report", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / '.sweep' / 'optuna.db'}")
    return study, MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")


def test_pruned_members_free_their_slots_for_new_trials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """parallel_trials 4, n_trials 10, successive halving: the first group's pruned and finished members are
    told as they end and new trials take their slots beside the members still training (without refill:
    groups of 4, 4 and 2). Every trial is its own Optuna trial and MLflow run, each run holds its own epochs,
    all of them in MLflow before Optuna was told the trial's end, and Optuna and MLflow agree."""
    told: list[tuple[int, int]] = []  # (trial, its epochs in MLflow when told)
    real_tell = optuna.Study.tell

    def tell(study: optuna.Study, trial: optuna.Trial, *args: object, **kwargs: object) -> object:
        run_id = trial.user_attrs.get("mlflow_run_id")
        client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
        told.append((trial.number, len(client.get_metric_history(run_id, "val_total_loss")) if run_id else -1))
        return real_tell(study, trial, *args, **kwargs)

    monkeypatch.setattr(optuna.Study, "tell", tell)
    study, client = run(tmp_path, "h")
    trials = study.get_trials(deepcopy=False)
    counts = check_agreement(study, f"sqlite:///{tmp_path / 'mlflow.db'}", 10)
    assert len(trials) == 10 and all(t.state in (PRUNED, COMPLETE) for t in trials), counts
    assert any(t.state == PRUNED for t in trials)
    runs = {t.number: client.get_run(t.user_attrs["mlflow_run_id"]) for t in trials}
    assert len({r.info.run_id for r in runs.values()}) == 10
    for t in trials:  # its epochs: as many as Optuna holds for it, all there when it was told
        history = client.get_metric_history(runs[t.number].info.run_id, "val_total_loss")
        assert len(history) == len(t.intermediate_values) == dict(told)[t.number] > 0
    started = beside({n: r.data.tags["sweep.group"] for n, r in runs.items() if "sweep.group" in r.data.tags})
    assert started[0] == [1, 2, 3]  # the first group
    assert any(n >= 4 and any(m < 4 for m in ms) for n, ms in started.items())  # a later trial beside the first ones
    assert all(len(ms) < 4 for ms in started.values())  # never more than 4 at once
    assert sorted(n for n, _ in told) == list(range(10))
    # The fifth trial was asked once one of the first four had ended (told), while the others trained on.
    first_end = min(t.datetime_complete for t in trials[:4] if t.datetime_complete is not None)
    assert trials[4].datetime_start is not None and first_end <= trials[4].datetime_start
    assert any(t.datetime_complete is not None and t.datetime_complete > trials[4].datetime_start for t in trials[:4])


def test_without_refill_each_group_ends_before_the_next(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``groups.REFILL = False`` (what benchmarks/halving.py compares with): groups of 4, 4 and 2, the same records."""
    monkeypatch.setattr(groups, "REFILL", False)
    study, client = run(tmp_path, "n")
    check_agreement(study, f"sqlite:///{tmp_path / 'mlflow.db'}", 10)
    tags = {t.number: client.get_run(t.user_attrs["mlflow_run_id"]).data.tags["sweep.group"] for t in study.trials}
    assert tags == {n: ["0, 1, 2, 3", "4, 5, 6, 7", "8, 9"][(n // 4)] for n in range(10)}


def test_a_trial_asked_for_a_slot_that_does_not_fit_trains_alone_after_the_group(tmp_path: Path) -> None:
    """The third trial (asked for a slot freed by the first two) has another batch size: it cannot join, and trains
    alone after the group; the fourth joins. Every trial asked is told, each its own run."""
    data = tiny_study("a", study={"n_trials": 4, "parallel_trials": 2, "pruner": "none"})
    data["search"]["params"]["batch_size"] = {"type": "categorical", "choices": [16, 32]}
    data["study"]["enqueue"] = [
        {"optimizer.lr": 0.01 * (i + 1), "weights.log10_ratio": 0.0, "batch_size": b}
        for i, b in enumerate([32, 32, 16, 32])
    ]
    result = run_main("sweep.run", str(write_yaml(tmp_path / "a.yaml", data)), "--no-report", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    study = optuna.load_study(study_name="a", storage=f"sqlite:///{tmp_path / '.sweep' / 'optuna.db'}")
    check_agreement(study, f"sqlite:///{tmp_path / 'mlflow.db'}", 4)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    tags = {t.number: client.get_run(t.user_attrs["mlflow_run_id"]).data.tags.get("sweep.group") for t in study.trials}
    assert tags == {0: "0, 1", 1: "0, 1", 2: None, 3: None}  # 3 joined alone: a group of one has no tag
    assert [t.state for t in study.trials] == [COMPLETE] * 4
    assert study.trials[2].datetime_complete > study.trials[3].datetime_complete  # 2 trained after the group


def test_an_interrupt_while_a_joiner_is_set_up_ends_every_trial(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while a trial asked for a freed slot writes its config.yaml (over HTTP it is raised at once): it
    and every member still training are told FAIL as interrupted (re-queued), their runs closed FAILED; the
    members told before stay as they ended; none is left RUNNING."""
    from sweep.tracking.tracking import TrialRun

    real, configs = TrialRun.log_text, []

    def log_text(run: TrialRun, text: str, name: str) -> bool:
        if name == "config.yaml":
            configs.append(run.run_id)
            if len(configs) == 5:  # the first trial asked for a freed slot (trial 4)
                raise KeyboardInterrupt
        return real(run, text, name)

    monkeypatch.setattr(TrialRun, "log_text", log_text)
    data = halving_study("i")
    result = run_main("sweep.run", str(write_yaml(tmp_path / "i.yaml", data)), "--no-report", cwd=tmp_path)
    assert result.returncode == 130, result.stderr
    study = optuna.load_study(study_name="i", storage=f"sqlite:///{tmp_path / '.sweep' / 'optuna.db'}")
    ran = [t for t in study.trials if t.state != optuna.trial.TrialState.WAITING]  # re-queued copies wait
    assert not [t for t in ran if t.state == optuna.trial.TrialState.RUNNING]
    failed = [t for t in ran if t.state == optuna.trial.TrialState.FAIL]
    assert 4 in {t.number for t in failed} and all("interrupted" in t.user_attrs["fail_reason"] for t in failed)
    assert any(t.state == PRUNED for t in ran)  # told as it ended, before the interrupt
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    status = {"FAIL": "FAILED", "PRUNED": "KILLED", "COMPLETE": "FINISHED"}
    for t in ran:
        assert client.get_run(t.user_attrs["mlflow_run_id"]).info.status == status[t.state.name], t.number
