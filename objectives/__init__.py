"""Training loops and the problems they train.

Nothing in this package imports optuna or mlflow: a loop takes a fully resolved config and a
reporter callback and returns its final metrics. ``sweep`` binds loops to Optuna and MLflow.
"""
