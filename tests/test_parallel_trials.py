"""``study.parallel_trials`` through the CLI: K trials asked at once and trained as one program, each its
own Optuna trial and MLflow run, with the values its sequential run gives."""

from __future__ import annotations

import math
import re
import signal
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient

from tests.conftest import interrupt, run_cli, run_main, start_cli, tiny_study, write_yaml
from tests.support.agreement import check_agreement
from tests.support.pausing import Pauses

POINTS = [
    {"optimizer.lr": lr, "weights.log10_ratio": r}
    for lr, r in [(0.01, -1.0), (0.05, 0.0), (0.02, 1.5), (0.08, -0.5), (0.03, 0.7), (0.06, 2.0)]
]


def study(name: str, **study_keys: object) -> dict:
    data = tiny_study(name, study={"n_trials": len(POINTS), "enqueue": POINTS, **study_keys})
    data["objective"]["optimizer"] = {"type": "adam", "lr": 0.01, "schedule": {"type": "cosine"}}
    return data


def trials(folder: Path, name: str) -> list[optuna.trial.FrozenTrial]:
    storage = f"sqlite:///{folder / '.sweep' / 'optuna.db'}"
    return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)


def same_values(tmp_path: Path, data: dict, k: int) -> tuple[Path, list[optuna.trial.FrozenTrial]]:
    """Run ``data`` one by one and with ``parallel_trials: k``; assert every trial's values agree."""
    seq, par = tmp_path / "seq", tmp_path / "par"
    seq.mkdir(), par.mkdir()
    name = data["study"]["name"]
    one = run_main("sweep.run", str(write_yaml(seq / "s.yaml", data)), "--no-report", cwd=seq)
    assert one.returncode == 0, one.stderr
    grouped_data = {**data, "study": {**data["study"], "parallel_trials": k}}
    grouped = run_main("sweep.run", str(write_yaml(par / "s.yaml", grouped_data)), "--no-report", cwd=par)
    assert grouped.returncode == 0, grouped.stderr
    a, b = trials(seq, name), trials(par, name)
    assert [t.params for t in a] == [t.params for t in b]  # the enqueued points, in order
    for ta, tb in zip(a, b, strict=True):
        assert ta.state == tb.state == optuna.trial.TrialState.COMPLETE
        assert math.isclose(ta.value, tb.value, rel_tol=1e-5), (ta.number, ta.value, tb.value)
        assert ta.intermediate_values.keys() == tb.intermediate_values.keys()
        for epoch, value in ta.intermediate_values.items():
            assert math.isclose(value, tb.intermediate_values[epoch], rel_tol=1e-5)
    return par, b


def test_a_digits_pair_study_with_16_parallel_trials_gives_its_sequential_values(tmp_path: Path) -> None:
    points = [{"optimizer.lr": 0.01 + 0.004 * i, "weights.log10_ratio": -1.5 + 0.2 * i} for i in range(16)]
    data = tiny_study("d", study={"n_trials": 16, "enqueue": points, "pruner": "none"})
    data["objective"].update(
        problem={"name": "digits_pair", "options": {"n_a": 200, "n_b": 40, "n_val": 100}}, epochs=3, batch_size=32
    )
    data["objective"]["optimizer"] = {"type": "sgd", "lr": 0.05, "momentum": 0.9}
    par, _ = same_values(tmp_path, data, 16)
    client = MlflowClient(f"sqlite:///{par / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("d").experiment_id])
    assert {r.data.tags.get("sweep.group") for r in runs if r.data.tags.get("sweep.role") == "trial"} == {
        ", ".join(map(str, range(16)))
    }


def test_a_study_in_groups_gives_the_values_of_the_same_trials_run_one_by_one(tmp_path: Path) -> None:
    data = study("s")
    data["study"]["pruner"] = "none"
    par, _ = same_values(tmp_path, data, 4)
    counts = check_agreement(
        optuna.load_study(study_name="s", storage=f"sqlite:///{par / '.sweep' / 'optuna.db'}"),
        f"sqlite:///{par / 'mlflow.db'}",
        len(POINTS),
    )
    assert counts["runs"] == len(POINTS)
    client = MlflowClient(f"sqlite:///{par / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("s").experiment_id])
    groups = sorted({r.data.tags["sweep.group"] for r in runs if r.data.tags.get("sweep.role") == "trial"})
    assert groups == ["0, 1, 2, 3", "4, 5"]  # 4 at once, then the 2 left of n_trials
    metrics = [r for r in runs if r.data.tags.get("sweep.role") == "trial"]
    assert all(len(client.get_metric_history(r.info.run_id, "val_total_loss")) == 3 for r in metrics)


@pytest.mark.slow
def test_a_diverging_member_fails_alone_and_the_study_still_ends_with_n_trials(tmp_path: Path) -> None:
    data = study("nan", parallel_trials=3)
    # The first member diverges; the fourth point is what the top-up trial takes (enqueued points first).
    data["study"]["enqueue"] = [{**POINTS[0], "optimizer.lr": 1e9}, *POINTS[1:4]]
    data["study"]["n_trials"] = 3
    data["search"]["params"]["optimizer.lr"]["high"] = 1e9
    data["objective"]["optimizer"] = {"type": "sgd", "lr": 0.01, "momentum": 0.9}
    result = run_cli("sweep.run", str(write_yaml(tmp_path / "nan.yaml", data)), "--no-report", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    ts = trials(tmp_path, "nan")
    assert ts[0].state == optuna.trial.TrialState.FAIL and "NonFiniteLossError" in ts[0].user_attrs["fail_reason"]
    assert [t.state for t in ts[1:]] == [optuna.trial.TrialState.COMPLETE] * 3
    check_agreement(
        optuna.load_study(study_name="nan", storage=f"sqlite:///{tmp_path / '.sweep' / 'optuna.db'}"),
        f"sqlite:///{tmp_path / 'mlflow.db'}",
        3,
    )


@pytest.mark.parametrize(
    ("objective", "says"),
    [
        ({"weighting": {"type": "pcgrad"}}, "weighting pcgrad"),
        ({"precision": "bf16"}, "precision bf16"),
    ],
)
def test_what_cannot_be_vectorized_trains_one_by_one_with_one_line(tmp_path: Path, objective: dict, says: str) -> None:
    data = study("fallback", parallel_trials=3)
    data["study"]["n_trials"] = 3
    data["study"]["enqueue"] = POINTS[:3]
    data["objective"].update(objective)
    result = run_main("sweep.run", str(write_yaml(tmp_path / "f.yaml", data)), "--no-report", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    notes = [line for line in result.stderr.splitlines() if "train one after another" in line]
    assert len(notes) == 1 and says in notes[0], result.stderr
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials(tmp_path, "fallback"))


def test_pruning_stops_members_one_by_one(tmp_path: Path) -> None:
    data = tiny_study(
        "prune",
        study={
            "n_trials": 12,
            "parallel_trials": 4,
            "pruner": {"type": "median", "n_startup_trials": 2, "n_warmup_steps": 0},
        },
    )
    data["objective"]["epochs"] = 6
    result = run_main("sweep.run", str(write_yaml(tmp_path / "p.yaml", data)), "--no-report", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    ts = trials(tmp_path, "prune")
    pruned = [t for t in ts if t.state == optuna.trial.TrialState.PRUNED]
    assert pruned, [t.state for t in ts]
    # Pruned members stopped while the rest of their group trained on (one pruned at its last epoch is allowed).
    assert any(len(t.intermediate_values) < 6 for t in pruned), [len(t.intermediate_values) for t in pruned]
    check_agreement(
        optuna.load_study(study_name="prune", storage=f"sqlite:///{tmp_path / '.sweep' / 'optuna.db'}"),
        f"sqlite:///{tmp_path / 'mlflow.db'}",
        12,
    )


def test_parallel_trials_is_checked_and_overridable(tmp_path: Path) -> None:
    bad = run_main("sweep.run", str(write_yaml(tmp_path / "b.yaml", study("b", parallel_trials=0))), cwd=tmp_path)
    assert bad.returncode == 2 and "study.parallel_trials" in bad.stderr
    assert not (tmp_path / ".sweep").exists()
    ok = run_main(
        "sweep.run",
        str(write_yaml(tmp_path / "o.yaml", study("o"))),
        "--parallel-trials",
        "6",
        "--no-report",
        cwd=tmp_path,
    )
    assert ok.returncode == 0, ok.stderr
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("o").experiment_id])
    assert {r.data.tags.get("sweep.group") for r in runs if r.data.tags.get("sweep.role") == "trial"} == {
        "0, 1, 2, 3, 4, 5"
    }


@pytest.mark.slow
def test_ctrl_c_in_a_group_fails_every_member_and_the_study_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    doc = study("ctrlc", parallel_trials=3, pruner="none")
    doc["study"]["n_trials"] = 3
    path = write_yaml(tmp_path / "c.yaml", doc)
    pauses = Pauses(tmp_path / "pauses", "epoch:1").apply(monkeypatch)  # the group held inside its training
    proc = start_cli("sweep.run", str(path), "--no-report", cwd=tmp_path)
    try:
        pauses.wait("epoch:1", [proc])
        err, took = interrupt(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode in (130, -signal.SIGINT) and took < 20, err
    assert "Interrupted" in err
    ts = [t for t in trials(tmp_path, "ctrlc") if t.state != optuna.trial.TrialState.WAITING]  # enqueued, not run
    assert [t.state for t in ts] == [optuna.trial.TrialState.FAIL] * 3
    assert all("interrupted" in t.user_attrs["fail_reason"] for t in ts)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert {client.get_run(t.user_attrs["mlflow_run_id"]).info.status for t in ts} == {"FAILED"}
    monkeypatch.delenv("SWEEP_PAUSE_AT")
    resumed = run_cli("sweep.run", str(path), "--no-report", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    storage = f"sqlite:///{tmp_path / '.sweep' / 'optuna.db'}"
    check_agreement(optuna.load_study(study_name="ctrlc", storage=storage), f"sqlite:///{tmp_path / 'mlflow.db'}", 3)


@pytest.mark.slow
def test_workers_each_run_groups(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--workers 2 with groups of 2: the coordinator and its worker each train groups (the coordinator is
    held after its first group until the worker trains one too), every trial recorded as one by one."""
    doc = tiny_study("w", study={"n_trials": 8})
    path = write_yaml(tmp_path / "w.yaml", doc)
    pauses = Pauses(tmp_path / "pauses", "closed@main", "epoch:1@workers").apply(monkeypatch)
    proc = start_cli(
        "sweep.run", str(path), "--workers", "2", "--parallel-trials", "2", "--no-report", "--no-progress", cwd=tmp_path
    )
    try:
        pauses.wait("closed@main", [proc])
        pauses.wait("epoch:1@workers", [proc])
        pauses.release("epoch:1@workers", procs=[proc])
        pauses.release("closed@main", procs=[proc])
        _, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    ran = re.search(r"worker 1: (\d+) trial\(s\) run", err)
    assert ran and int(ran.group(1)) >= 2, err  # at least its group of two
    storage = f"sqlite:///{tmp_path / '.sweep' / 'optuna.db'}"
    check_agreement(optuna.load_study(study_name="w", storage=storage), f"sqlite:///{tmp_path / 'mlflow.db'}", 8)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = [
        r
        for r in client.search_runs([client.get_experiment_by_name("w").experiment_id])
        if r.data.tags.get("sweep.role") == "trial"
    ]
    groups = {r.data.tags.get("sweep.group") for r in runs} - {None}  # a last trial alone has no group
    assert groups and all(len(g.split(", ")) == 2 for g in groups), groups


def test_an_alternating_study_in_groups_gives_its_sequential_values(tmp_path: Path) -> None:
    """The shipped alternating study (shortened): the searched mode and steps split the group by what must be
    equal; every trial has the value of the same trial run one by one."""
    import yaml

    from tests.conftest import ROOT

    doc = yaml.safe_load((ROOT / "studies" / "alternating.yaml").read_text())
    doc["study"].update({"n_trials": 8, "sampler": {"type": "random"}, "pruner": "none"})
    doc["objective"].update({"epochs": 2, "problem": {"name": "digits_codes", "options": {"n_train": 120}}})
    par, _ = same_values(tmp_path, doc, 8)
    client = MlflowClient(f"sqlite:///{par / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name(doc["study"]["name"]).experiment_id])
    groups = {r.data.tags.get("sweep.group") for r in runs if r.data.tags.get("sweep.role") == "trial"} - {None}
    assert groups, "no two of 8 random trials could share a group"
