"""``python -m sweep.run``: the command is :mod:`sweep.commands.run`; this module only starts it."""

from __future__ import annotations

import sys

from sweep.commands.run import main
from sweep.core.errors import EXIT_INTERRUPTED, to_stderr

if __name__ == "__main__":
    from sweep.core.exit import exit_now

    try:
        exit_now(main())
    except KeyboardInterrupt:  # before main() installed its handler (interpreter start-up)
        to_stderr("Interrupted before the study started: nothing was run.")
        sys.exit(EXIT_INTERRUPTED)
