"""Running trials; imports the wings below it, never :mod:`sweep.execution` or :mod:`sweep.commands`.

One trial from its claim to its records (``trial``), trials trained as one vectorized group (``groups``),
their time limits (``watchdog``), running out of memory (``memory``), what a failed or unrecorded trial
leaves and a dead process's trials (``recovery``), and what the terminal shows of them (``console``).
"""
