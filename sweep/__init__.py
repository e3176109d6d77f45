"""sweep: loss-weight and hyperparameter search over Optuna and MLflow (see README.md)."""

import os

# MLflow starts its telemetry client when it is imported: off unless the user turned it on.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
