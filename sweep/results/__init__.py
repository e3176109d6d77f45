"""What a study found, read back; imports :mod:`sweep.core`, :mod:`sweep.studyfile` and :mod:`sweep.storage`,
not its sibling :mod:`sweep.tracking` (an MLflow client is handed in where one is read).

The trials table, top-k table and plots (``report``), the evaluated trials and the comparison table
(``results``), a trial's score and kept epoch (``scoring``), and retraining a configuration on fresh seeds
scored on the test split (``evaluation``).
"""
