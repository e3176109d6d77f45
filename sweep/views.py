"""The MLflow UI link a study prints: its runs table sorted by the target, with the searched params as
columns (a saved view of the UI, written as an experiment tag)."""

from __future__ import annotations

import hashlib
import json
import time
import urllib.parse
from collections.abc import Iterable

import optuna
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from sweep.config import StudySection

VIEW_TAG_PREFIX = "mlflow.sharedViewState."  # the MLflow UI's saved views: experiment tags under this prefix


def runs_view_url(
    client: MlflowClient,
    experiment_id: str,
    base: str,
    target: StudySection | None = None,
    trials: Iterable[optuna.trial.FrozenTrial] = (),
) -> str:
    """The URL of an experiment's runs table in the MLflow UI at ``base``; with ``target``, sorted by the
    study's (first) target, best first, with the target(s) and the params ``trials`` searched as columns.

    The UI (3.x) reads a sort from the URL (``orderByKey``, ``orderByAsc``) but columns only from a saved
    view, the experiment tag ``mlflow.sharedViewState.<key>`` that ``?viewStateShareKey=<key>`` opens (alone:
    the UI ignores a view when the URL sorts too). One view per study, updated; failing that, the URL sorts.
    """
    runs = f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs"
    if target is None:
        return runs
    metric, ascending = target.metric[0], target.directions[0] == "minimize"
    sort_only = f"{runs}?orderByKey={urllib.parse.quote(f'metrics.`{metric}`')}&orderByAsc={str(ascending).lower()}"
    params = dict.fromkeys(name for t in trials for name in t.params)  # in the order the trials sampled them
    names = {f"metrics.`{m}`": m for m in target.metric} | {f"params.`{p}`": p for p in params}
    widths = {column: max(150, 7 * len(n) + 40) for column, n in names.items()}  # px: the whole name in view
    view = {"orderByKey": f"metrics.`{metric}`", "orderByAsc": ascending, "selectedColumns": list(names)}
    state = json.dumps({**view, "columnOrder": list(names), "columnWidths": widths}, separators=(",", ":"))
    name = f"{target.name}: best {metric} first"
    key = hashlib.sha256(name.encode()).hexdigest()[:32]
    try:  # MLflow refuses a tag over 20,000 characters (a view of some 150 params)
        written = client.get_experiment(experiment_id).tags.get(VIEW_TAG_PREFIX + key)
        if written is None or json.loads(written).get("state") != state:
            envelope = {"name": name, "createdAt": int(time.time() * 1000), "state": state}
            client.set_experiment_tag(experiment_id, VIEW_TAG_PREFIX + key, json.dumps(envelope))
    except (MlflowException, OSError, ValueError):
        return sort_only
    return f"{runs}?{urllib.parse.urlencode({'viewStateShareKey': key})}"
