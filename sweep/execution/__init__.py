"""Running a study; imports every wing below it, never :mod:`sweep.commands`.

A session: preflight, open, run, finish (``runner``), worker processes (``workers``), the one process that
finishes a study (``finishing``), and whether a re-run may add trials (``comparable``). The trials themselves
run in :mod:`sweep.trials`.
"""
