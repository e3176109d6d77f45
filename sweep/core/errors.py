"""The errors every command reports as one line, their exit codes, the one-line format and its printers.

A command prints ``error: <one line>`` on stderr and exits with the code of the error's kind; no
traceback reaches the user for a mistake in their file or for a storage that cannot be reached.
"""

from __future__ import annotations

import datetime
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sweep.core.urls import redact

EXIT_OK = 0
EXIT_RUNTIME = 1  # storage or tracking unreachable, a study that cannot finish
EXIT_CONFIG = 2  # an invalid study file (or command line)
EXIT_INTERRUPTED = 130  # Ctrl-C / SIGTERM: re-run the same command to resume


def to_stderr(line: str) -> None:
    """Write one line on stderr in a single write: the processes of ``--workers`` share the terminal, and
    under ``PYTHONUNBUFFERED`` (common in containers) ``print`` writes a line and its newline separately,
    so two processes' lines could run into each other. Credentials in it are masked
    (:func:`~sweep.core.urls.redact`)."""
    sys.stderr.write(f"{redact(line)}\n")
    sys.stderr.flush()


def print_error(message: object) -> None:
    """The one-line error every command prints before a non-zero exit."""
    to_stderr(f"error: {message}")


def warn(message: str) -> None:
    """A one-line warning: something went wrong that the run goes on without."""
    to_stderr(f"warning: {message}")


class ConfigError(Exception):
    """A study file is invalid. ``str()`` is one line: ``FILE: KEY: what is wrong``.

    The message may quote what the file wrote (``unknown device '...'``): credentials in it are masked
    (:func:`~sweep.core.urls.redact`), so a password in a mistyped value is not printed either.
    """

    def __init__(self, file: str | Path, key: str, message: str) -> None:
        self.file, self.key, self.message = str(file), redact(key), redact(" ".join(message.splitlines()))
        super().__init__(f"{self.file}: {self.key}: {self.message}" if key else f"{self.file}: {self.message}")


class SweepError(Exception):
    """A run-time problem reported as one line (storage unreachable, study mismatch...)."""


def one_line(e: BaseException, with_type: bool = True) -> str:
    """The first line of an exception's message (with its type), passwords in URLs masked.

    (``objectives.helpers.first_line`` without the masking: this module stays free of torch, which every
    command imports it, ``--help`` included, before deciding whether it needs torch.)"""
    text = str(e).strip().splitlines()
    if not text:
        return type(e).__name__
    return redact(f"{type(e).__name__}: {text[0]}" if with_type else text[0])


def reason(e: BaseException) -> str:
    """Why a trial failed: the exception's type and its whole message (every line), passwords masked."""
    text = str(e).strip()
    return redact(f"{type(e).__name__}: {text}" if text else type(e).__name__)


def pydantic_message(err: Mapping[str, Any]) -> str:
    """One pydantic error (an item of ``ValidationError.errors()``) in the words a study file's author reads."""
    if err["type"] == "union_tag_invalid":
        return f"unknown value {err['ctx']['tag']!r}; expected one of {err['ctx']['expected_tags']}"
    if err["type"] == "extra_forbidden":
        return "unknown key"
    if err["type"] == "missing":
        return "required key is missing"
    found = err.get("input")
    if err["type"] == "string_type" and isinstance(found, bool):
        return "expected text, but YAML read a boolean (it reads yes/no/on/off/true/false so): quote it"
    if err["type"] == "string_type" and isinstance(found, int | float | datetime.date):
        what, written = ("a date", found.isoformat()) if isinstance(found, datetime.date) else ("a number", found)
        return f"expected text, but YAML read {written} as {what}: quote it ('{written}')"
    return str(err["msg"]).removeprefix("Value error, ")
