"""sweep: loss-weight and hyperparameter search over Optuna and MLflow (see README.md).

Its packages ("wings"), lowest first; a module imports its own wing and lower ones only (tests/test_layout.py):
:mod:`sweep.core`; :mod:`sweep.studyfile` and :mod:`sweep.storage` (siblings: neither imports the other);
:mod:`sweep.tracking` and :mod:`sweep.results` (siblings); :mod:`sweep.execution`; :mod:`sweep.commands`.
The modules here, ``sweep/run.py``, ``export.py``, ``report.py``, ``ui.py`` and ``evaluate.py``, only start the
commands (``python -m sweep.run``).
"""

import os

# MLflow starts its telemetry client when it is imported: off unless the user turned it on.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
