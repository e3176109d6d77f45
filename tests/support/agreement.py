"""What must hold after any fault: Optuna and MLflow agree, nothing is left RUNNING, nothing is lost."""

from __future__ import annotations

from collections import Counter

import optuna
from mlflow import MlflowClient

from sweep.tracking.tracking import STATUS

FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


def check_agreement(study: optuna.Study, tracking_uri: str, n_trials: int) -> dict[str, int]:
    """Assert the study ended cleanly; return its counts.

    - exactly ``n_trials`` finished trials (complete or pruned);
    - no trial RUNNING; every FAILED trial says why;
    - every trial with a run: the run's status is its trial's (COMPLETE→FINISHED, PRUNED→KILLED,
      FAIL→FAILED); no run of the study RUNNING; every run belongs to a trial or is marked orphaned;
    - no parameter set run twice among the trials that were not re-queued copies of a dead one;
    - no run linked by two trials, no fail reason on a trial that did not fail (a retry inherits neither).
    """
    trials = study.get_trials(deepcopy=False)
    states = Counter(t.state.name for t in trials)
    assert sum(t.state in FINISHED for t in trials) == n_trials, states
    assert not states.get("RUNNING"), [(t.number, t.state.name) for t in trials]
    for t in trials:
        if t.state == optuna.trial.TrialState.FAIL:
            assert t.user_attrs.get("fail_reason"), (t.number, t.user_attrs, t.system_attrs)
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(study.study_name)
    runs = client.search_runs([experiment.experiment_id], max_results=5000) if experiment else []
    children = {r.info.run_id: r for r in runs if r.data.tags.get("sweep.role") == "trial"}
    for t in trials:
        run_id = t.user_attrs.get("mlflow_run_id")
        if run_id is None:
            continue
        assert children[run_id].info.status == STATUS[t.state], (t.number, t.state, children[run_id].info.status)
    # A run belongs to one trial (a retry does not inherit its predecessor's run), and only a failed trial
    # says why it failed (a retry that completed does not carry the dead one's reason).
    links = Counter(t.user_attrs["mlflow_run_id"] for t in trials if "mlflow_run_id" in t.user_attrs)
    assert all(n == 1 for n in links.values()), [(r, n) for r, n in links.items() if n > 1]
    reasons = [t.number for t in trials if t.state != optuna.trial.TrialState.FAIL and "fail_reason" in t.user_attrs]
    assert not reasons, reasons
    linked = {t.user_attrs.get("mlflow_run_id") for t in trials}
    for run_id, run in children.items():
        assert run.info.status != "RUNNING", (run_id, run.data.tags)
        if run_id not in linked:
            assert run.info.status == "FAILED" and run.data.tags.get("sweep.fail_reason"), run.data.tags
    retried = {t.number for t in trials if "failed_trial" in t.system_attrs}
    fresh = [tuple(sorted(t.params.items())) for t in trials if t.number not in retried and t.params]
    dupes = [p for p, n in Counter(fresh).items() if n > 1]
    assert not dupes, dupes
    parents = [r for r in runs if r.data.tags.get("sweep.role") == "parent"]
    return {"trials": len(trials), "failed": states.get("FAIL", 0), "runs": len(children), "parents": len(parents)}
