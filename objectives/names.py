"""Task names: they become metric names (``val_<task>_loss``), weight keys and study-file keys."""

from __future__ import annotations

import re
from collections.abc import Sequence

TASK_NAME = re.compile(r"[a-z][a-z0-9]*(_[a-z0-9]+)*")
RESERVED_TASK_NAMES = ("total", "weighted", "consistency")  # val_total_loss, train_weighted_loss, the third loss


def check_task_names(names: Sequence[str]) -> None:
    """Task names become metric names (``val_<task>_loss``) and weight keys: at least two, lowercase
    identifiers, none reserved, no name followed by ``_`` starting another (``val_a_b_loss`` would be
    ambiguous between tasks ``a`` and ``a_b``).

    Raises:
        ValueError: a name breaks one of these rules (the message names it).
    """
    if len(names) < 2:
        raise ValueError(f"a problem needs at least two tasks, got {list(names)}")
    if len(set(names)) != len(names):
        raise ValueError(f"task names must differ: {list(names)} names one twice")
    for name in names:
        if not isinstance(name, str) or not TASK_NAME.fullmatch(name):
            raise ValueError(f"task name {name!r}: use lowercase letters, digits and single underscores (e.g. seg)")
        if name in RESERVED_TASK_NAMES:
            raise ValueError(f"task name {name!r} is reserved (val_total_loss, train_weighted_loss…); rename it")
    for name in names:
        for other in names:
            if other != name and other.startswith(name + "_"):
                raise ValueError(f"task names {name!r} and {other!r}: metric names would be ambiguous; rename one")
