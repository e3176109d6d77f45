"""MLflow; imports :mod:`sweep.core`, :mod:`sweep.studyfile` and :mod:`sweep.storage`, not its sibling
:mod:`sweep.results`.

The experiment, the parent run and the trial runs (``tracking``), MLflow calls retried within a budget
(``trackingretry``), the artifact location (``artifacts``), new SQLite stores (``mlflowdb``), the printed UI
link (``views``), kept weights and the model registry (``weights``), and how a study's runs stand beside other
studies' runs: comparisons and replays (``lineage``).
"""
