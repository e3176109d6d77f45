"""The record vocabulary: every key sweep writes on (or searches for in) Optuna and MLflow, in one place.

The Optuna user attributes of trials and studies (:class:`Attr`) and the study system attributes
(:class:`SystemAttr`), the MLflow run tags and params (:class:`Tag`) with the roles a run plays (:class:`Role`),
the MLflow search filters built from them (:func:`tag_clause`, :func:`runs_filter`) and the rule that names a
study's MLflow experiment (:func:`experiment_name`). The values are what the stores hold: never change one.
"""

from __future__ import annotations


class Attr:
    """The user-attribute keys sweep writes on trials and studies (defined once, read everywhere)."""

    RUN = "mlflow_run_id"  # trial → its MLflow child run
    PARENT = "mlflow_parent_run_id"  # study → its MLflow parent run
    FAIL = "fail_reason"  # trial → why it failed
    CONFIG = "config"  # trial → the resolved config export replays
    WEIGHTS = "weights"  # trial → the effective loss weights, in the loop's loss order
    SEED = "seed"  # trial → the model/batch seed
    BEST_EPOCH = "best_epoch"  # trial → the epoch its value comes from (score: best, early stopping)
    EARLY_STOP = "early_stopped_at_epoch"  # trial → the epoch early stopping ended it
    CHECKPOINT_EPOCH = "checkpoint_epoch"  # trial → the epoch of the weights it kept (weights.pt)
    ARTIFACT_ERROR = "artifact_error"  # trial → why some of its files (weights.pt, config.yaml...) are missing
    SETTINGS = "sweep.settings"  # study → what its trials are compared on (see sweep.execution.runner.settings)
    EVALUATION = "sweep.evaluation"  # study → {trial number: {"seeds", "run_id", "values"}} (sweep.evaluate)


class SystemAttr:
    """The study system-attribute keys of the once-only claims (see :mod:`sweep.execution.finishing`)."""

    FINISHED_BY = "sweep:finished_by"  # study → {"finished", "report", "by", "at", "running", "done"}: who ends it
    EVALUATING = "sweep:evaluating"  # study → {"by", "at", "running", "done"}: who evaluates it


class Tag:
    """The MLflow tag (and param) keys sweep writes on its runs."""

    ROLE = "sweep.role"  # every run → its :class:`Role`
    STUDY_NAME = "sweep.study_name"  # trial, parent, comparison and evaluation runs → the study
    TRIAL_NUMBER = "sweep.trial_number"  # trial run → its Optuna trial number
    TRIAL_STATE = "sweep.trial_state"  # trial run → RUNNING, then the Optuna state it ended in
    FAIL_REASON = "sweep.fail_reason"  # trial run → why it failed (the trial's Attr.FAIL)
    DEVICE = "sweep.device"  # trial run param → the device it trained on
    LOOP = "sweep.loop"  # trial run param → the training loop
    BEST_EPOCH = "sweep.best_epoch"  # trial run → the epoch its value comes from
    EARLY_STOP = "sweep.early_stopped_at_epoch"  # trial run → the epoch early stopping ended it
    PRUNED_AT = "sweep.pruned_at_epoch"  # trial run → the epoch the pruner stopped it
    CHECKPOINT_EPOCH = "sweep.checkpoint_epoch"  # trial run → the epoch of the weights it kept
    ARTIFACT_ERROR = "sweep.artifact_error"  # trial run → why some of its files are missing
    GROUP = "sweep.group"  # trial run → the trial numbers trained together with it
    STORAGE = "sweep.storage"  # parent run → the Optuna storage (redacted)
    STUDY_FILE = "sweep.study_file"  # parent run → the study file
    PROVENANCE = "sweep.provenance."  # parent run → prefix of the study file's provenance entries
    TRIAL = "sweep.trial"  # evaluation run → the trial number it retrains
    SEEDS = "sweep.seeds"  # evaluation run → how many seeds
    SUPERSEDED_BY = "sweep.superseded_by"  # an older evaluation run → the run that replaced it


class Role:
    """The values of :attr:`Tag.ROLE`."""

    PARENT = "parent"  # a study's parent run
    TRIAL = "trial"  # one trial
    COMPARISON = "comparison"  # a comparison's run over its sub-studies
    EVALUATION = "evaluation"  # a chosen trial retrained with several seeds


def tag_clause(key: str, value: object, op: str = "=") -> str:
    """One MLflow search condition on a tag: ``tags.`key` op 'value'``."""
    return f"tags.`{key}` {op} '{value}'"


def runs_filter(role: str, study: str | None = None) -> str:
    """The MLflow search filter for the runs of ``role`` (of study ``study``, if given)."""
    clauses = [tag_clause(Tag.ROLE, role), *([tag_clause(Tag.STUDY_NAME, study)] if study is not None else [])]
    return " and ".join(clauses)


def experiment_name(experiment: str | None, study: str) -> str:
    """The MLflow experiment a study records in: the study file's ``tracking.experiment``, else the study's name."""
    return experiment or study
