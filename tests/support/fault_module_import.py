"""A user problem module whose own code fails while it is imported (named ``tests.support.fault_module_import:make``;
the import stops before any function is defined)."""

from __future__ import annotations

raise RuntimeError("cannot reach the data server\n  (a second line that stays out of the error)")
