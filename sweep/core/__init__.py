"""The ground every wing stands on; imports nothing else of sweep.

Error types, exit codes and the one-line printers (``errors``), credentials masked and SQLite paths
(``urls``), SQLite stores in WAL mode (``sqlite``), SIGINT/SIGTERM/SIGHUP handling (``interrupts``), the
commands' exit (``exit``), the named instants tests stop processes at (``faultpoints``) and every key
sweep writes on Optuna and MLflow records, with the experiment-name rule (``records``).
"""
