"""What a study file says; imports only :mod:`sweep.core`, and nothing of its sibling :mod:`sweep.storage`.

The file's bytes read as a guarded YAML tree (``studyyaml``), the checked, frozen ``StudyFile``
(``config``), the search space and its load-time checks (``space``, ``search_checks``), samplers and pruners
(``samplers``), what a study may optimise (``targets``) and the sub-studies of a comparison (``compare``).
"""
