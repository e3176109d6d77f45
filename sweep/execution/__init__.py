"""Running a study; imports every wing below it, never :mod:`sweep.commands`.

A session: preflight, open, run, finish (``runner``); one trial (``trial``), trials trained as one vectorized
group (``groups``), worker processes (``workers``), what a dead process leaves (``recovery``), time limits
(``watchdog``), running out of memory (``memory``), the one process that finishes a study (``finishing``),
whether a re-run may add trials (``comparable``), and the progress bar and summary (``console``).
"""
