"""URL helpers: no password is ever printed or recorded."""

from __future__ import annotations

import pytest

from sweep.urls import redact


@pytest.mark.parametrize(
    "url", ["postgresql://sweep:pa/ss@db:5432/optuna", "postgresql://u:p:q/r@h/db", "mysql+pymysql://root:a/b@h/d"]
)
def test_redact_passwords_with_slashes(url: str) -> None:
    """Passwords with '/' or ':' are masked too (SQLAlchemy accepts them)."""
    out = redact(url)
    assert ":***@" in out and "pa/ss" not in out and "p:q/r" not in out and "a/b" not in out
