"""A user problem module whose import takes for ever (a data download that hangs), named
``tests.support.sleeps_on_import:make``: it writes the file ``SWEEP_TEST_MARKER`` names (so that a test knows the
import is under way), then blocks."""

from __future__ import annotations

import os
import time
from pathlib import Path

Path(os.environ["SWEEP_TEST_MARKER"]).write_text(str(os.getpid()))
time.sleep(3600)


def make(seed: int) -> None:  # never reached
    raise AssertionError("the import returned")
