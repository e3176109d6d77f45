"""The base of every config object: immutable, unknown keys rejected."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Frozen(BaseModel):
    """Base for every config object: immutable, unknown keys rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")
