"""The MLflow UI links a study prints: its trials' runs table sorted by the target, with the compared key
and the searched params as columns, and its test-set evaluations by their mean over seeds (saved views of
the UI, written as experiment tags)."""

from __future__ import annotations

import hashlib
import json
import time
import urllib.parse
from collections.abc import Iterable

import optuna
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from sweep.core.records import Role, Tag, runs_filter, tag_clause
from sweep.studyfile.sections import StudySection

VIEW_TAG_PREFIX = "mlflow.sharedViewState."  # the MLflow UI's saved views: experiment tags under this prefix
# The runs a trials' view lists: not the evaluation runs (sweep.evaluate), whose target metric holds one seed's
# value (each seed is a step; MLflow shows the last) and would rank among the trials; their mean has a view of
# its own (evaluations_view_url). Every run sweep writes has a role tag: trial, parent, comparison, evaluation.
TRIALS_FILTER = tag_clause(Tag.ROLE, Role.EVALUATION, "!=")
EVALUATIONS_FILTER = runs_filter(Role.EVALUATION)


def runs_view_url(
    client: MlflowClient,
    experiment_id: str,
    base: str,
    target: StudySection | None = None,
    trials: Iterable[optuna.trial.FrozenTrial] = (),
) -> str:
    """The URL of an experiment's runs table in the MLflow UI at ``base``; with ``target``, its trials (no
    evaluation run, :data:`TRIALS_FILTER`) sorted by the study's (first) target, best first, with the
    target(s), the compared key (``study.compare``) and the params ``trials`` searched as columns.

    The UI (3.x) reads a sort and a filter from the URL (``orderByKey``, ``orderByAsc``, ``searchFilter``)
    but columns only from a saved view, the experiment tag ``mlflow.sharedViewState.<key>`` that
    ``?viewStateShareKey=<key>`` opens (alone: the UI ignores a view when the URL sorts or filters too). One
    view per study, updated; failing that, the URL sorts and filters.
    """
    runs = f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs"
    if target is None:
        return runs
    metric = target.metric[0]
    columns = [f"metrics.`{m}`" for m in target.metric] + _params(target, trials)
    name = f"{target.name}: best {metric} first"
    return _saved_view(client, experiment_id, runs, name, columns, _ascending(target), TRIALS_FILTER)


def evaluations_view_url(
    client: MlflowClient,
    experiment_id: str,
    base: str,
    target: StudySection,
    trials: Iterable[optuna.trial.FrozenTrial] = (),
) -> str:
    """The URL of the study's test-set evaluations (runs tagged ``sweep.role = evaluation``) in the MLflow UI
    at ``base``: sorted by the mean over seeds of the target's test value (``test_<x>_mean`` for a target
    ``val_<x>``), best first, with the means and 95 % CI half-widths of the test and validation target(s),
    the diverged seeds, the compared key and the searched params as columns. Never a single seed's value:
    those are the steps of the unsuffixed metrics, which the view leaves out."""
    runs = f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs"
    tests = [f"test_{m.removeprefix('val_')}" for m in target.metric]
    metrics = [f"{m}_{s}" for m in (*tests, *target.metric) for s in ("mean", "ci95")] + ["diverged_seeds"]
    columns = [f"metrics.`{m}`" for m in metrics] + _params(target, trials)
    name = f"{target.name}: evaluations, best {tests[0]} mean first"
    return _saved_view(client, experiment_id, runs, name, columns, _ascending(target), EVALUATIONS_FILTER)


def _ascending(target: StudySection) -> bool:
    return target.directions[0] == "minimize"


def _params(target: StudySection, trials: Iterable[optuna.trial.FrozenTrial]) -> list[str]:
    """The param columns: the compared key first (a comparison's trials differ by it), then the params in the
    order the trials sampled them."""
    names = dict.fromkeys([*([target.compare] if target.compare else []), *(p for t in trials for p in t.params)])
    return [f"params.`{p}`" for p in names]


def _saved_view(
    client: MlflowClient, experiment_id: str, runs: str, name: str, columns: list[str], ascending: bool, where: str
) -> str:
    """The URL of the saved view ``name`` of ``runs``: ``columns`` shown (the first one sorted on) and the runs
    that match the filter ``where``; the view is written (or updated) as an experiment tag. Where it cannot be
    written (MLflow refuses a tag over 20,000 characters, a view of some 150 params; a read-only server) the
    URL sorts and filters by itself."""
    facets = {"orderByKey": columns[0], "orderByAsc": str(ascending).lower(), "searchFilter": where}
    fallback = f"{runs}?{urllib.parse.urlencode(facets, quote_via=urllib.parse.quote)}"
    widths = {c: max(150, 7 * len(c.split("`")[1]) + 40) for c in columns}  # px: the whole name in view
    view = {"orderByKey": columns[0], "orderByAsc": ascending, "searchFilter": where, "selectedColumns": columns}
    state = json.dumps({**view, "columnOrder": columns, "columnWidths": widths}, separators=(",", ":"))
    key = hashlib.sha256(name.encode()).hexdigest()[:32]
    try:
        written = client.get_experiment(experiment_id).tags.get(VIEW_TAG_PREFIX + key)
        if written is None or json.loads(written).get("state") != state:
            envelope = {"name": name, "createdAt": int(time.time() * 1000), "state": state}
            client.set_experiment_tag(experiment_id, VIEW_TAG_PREFIX + key, json.dumps(envelope))
    except (MlflowException, OSError, ValueError):
        return fallback
    return f"{runs}?{urllib.parse.urlencode({'viewStateShareKey': key})}"
