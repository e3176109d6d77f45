"""The Optuna storage; imports only :mod:`sweep.core`, and nothing of its sibling :mod:`sweep.studyfile`.

Opening and loading studies and the trial attribute keys (``storage``), storage calls retried through outages
(``resilient``), the decision to start a trial and its lock across processes (``claims``, ``claimlock``),
per-epoch values and in-process pruning (``pruning``), and whether a trial is still this process's
(``ownership``).
"""
