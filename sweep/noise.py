"""``python -m sweep.noise``: the command is :mod:`sweep.commands.noise`; this module only starts it."""

from __future__ import annotations

from sweep.commands.noise import main

if __name__ == "__main__":
    from sweep.core.exit import exit_now

    exit_now(main())
