"""How a study searches; imports :mod:`sweep.studyfile` (and the ground), never the wings above it.

Optuna's samplers and pruners made from the study file (``builders``), and what a study gets where its file
names none: the sampler chosen by the search space, equal loss weights first (``defaults``, from the
evidence of ``python -m benchmarks.efficiency``).
"""
