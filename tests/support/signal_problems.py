"""A problem whose build blocks in the process that sets ``SWEEP_TEST_BLOCK`` (named
``tests.support.signal_problems:blocks``): it writes that file (so that a test knows the build is under way), then
blocks. Elsewhere it is the built-in ``linear_pair`` (test split included), so a study of it runs."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from objectives.problems import BUILTINS, Problem


def blocks(seed: int, **options: Any) -> Problem:
    marker = os.environ.get("SWEEP_TEST_BLOCK")
    if marker:
        Path(marker).write_text(str(os.getpid()))
        time.sleep(3600)
    builtin = BUILTINS["linear_pair"]
    return builtin.build(builtin.options.model_validate(options), seed)  # type: ignore[return-value]
