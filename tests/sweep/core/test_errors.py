"""The one-line errors every command reports (sweep/core/errors.py): their exit codes, the line's format,
passwords masked in it, and the words a study file's author reads for a schema error."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Literal

import pydantic
import pytest

from sweep.core.errors import (
    EXIT_CONFIG,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_RUNTIME,
    ConfigError,
    SweepError,
    one_line,
    print_error,
    pydantic_message,
    reason,
    to_stderr,
    warn,
)

URL = "postgresql://u:hunter2@h/db"


def test_the_exit_codes_are_distinct_and_the_usual_ones() -> None:
    """0 ok, 1 a run-time problem, 2 a bad file or command line (as argparse), 130 Ctrl-C (128 + SIGINT)."""
    assert (EXIT_OK, EXIT_RUNTIME, EXIT_CONFIG, EXIT_INTERRUPTED) == (0, 1, 2, 130)


class _Writes:
    """A stderr that records each write."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def write(self, text: str) -> int:
        self.calls.append(text)
        return len(text)

    def flush(self) -> None:
        self.calls.append("<flush>")


def test_each_line_is_one_write_then_a_flush_with_passwords_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    screen = _Writes()
    monkeypatch.setattr(sys, "stderr", screen)
    to_stderr(f"cannot reach {URL}")
    print_error(SweepError("storage down"))
    warn("")
    assert screen.calls == [
        "cannot reach postgresql://u:***@h/db\n",
        "<flush>",
        "error: storage down\n",
        "<flush>",
        "warning: \n",
        "<flush>",
    ]


@pytest.mark.parametrize(
    ("args", "text"),
    [
        (("s.yaml", "study.n_trials", "must be positive"), "s.yaml: study.n_trials: must be positive"),
        (("s.yaml", "", "cannot read: No such file"), "s.yaml: cannot read: No such file"),  # no key
        (("s.yaml", "line 3, column 1", "first\nsecond\n"), "s.yaml: line 3, column 1: first second"),  # one line
        (
            ("s.yaml", "tracking.uri", f"cannot reach {URL}"),
            "s.yaml: tracking.uri: cannot reach postgresql://u:***@h/db",
        ),
        (("s.yaml", "k", ""), "s.yaml: k: "),
    ],
    ids=["key", "no key", "several lines", "password", "empty message"],
)
def test_config_error_is_one_line_file_key_message(args: tuple[str, str, str], text: str) -> None:
    error = ConfigError(*args)
    assert str(error) == text and "\n" not in str(error)
    assert error.file == args[0] and "hunter2" not in error.message


def test_config_error_takes_a_path_and_masks_a_password_in_the_key() -> None:
    error = ConfigError(Path("dir") / "s.yaml", f"search.params.{URL}", "unknown key")
    assert error.file == "dir/s.yaml" and error.key == "search.params.postgresql://u:***@h/db"
    assert "hunter2" not in str(error)


@pytest.mark.parametrize(
    ("error", "with_type", "line"),
    [
        (ValueError("bad value\nTraceback details"), True, "ValueError: bad value"),
        (ValueError("bad value\nTraceback details"), False, "bad value"),
        (ValueError("  \n padded \n"), True, "ValueError: padded"),
        (KeyboardInterrupt(), True, "KeyboardInterrupt"),  # no message: the type alone
        (RuntimeError(""), False, "RuntimeError"),  # even without the type asked for
        (
            ConnectionError(f"cannot connect to {URL}"),
            True,
            "ConnectionError: cannot connect to postgresql://u:***@h/db",
        ),
    ],
)
def test_one_line_is_the_first_line_with_passwords_masked(error: BaseException, with_type: bool, line: str) -> None:
    assert one_line(error, with_type) == line


def test_reason_keeps_every_line_of_the_message() -> None:
    assert reason(ValueError(f"loss is nan\nat epoch 3\n{URL}")) == (
        "ValueError: loss is nan\nat epoch 3\npostgresql://u:***@h/db"
    )
    assert reason(MemoryError()) == "MemoryError"
    assert reason(ValueError("   ")) == "ValueError"


class _Loop(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    kind: Literal["a"] = "a"


class _Other(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    kind: Literal["b"] = "b"


class _File(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    epochs: int
    loop: _Loop | _Other = pydantic.Field(default=_Loop(), discriminator="kind")

    @pydantic.field_validator("epochs")
    @classmethod
    def _positive(cls, value: int) -> int:
        if value <= 0:
            raise ValueError("must be positive")
        return value


def _first_error(data: dict[str, Any]) -> dict[str, Any]:
    with pytest.raises(pydantic.ValidationError) as info:
        _File.model_validate(data)
    return info.value.errors()[0]  # type: ignore[return-value]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"epochs": 1, "loop": {"kind": "c"}}, "unknown value 'c'; expected one of 'a', 'b'"),
        ({"epochs": 1, "epoch": 2}, "unknown key"),
        ({}, "required key is missing"),
        ({"epochs": 0}, "must be positive"),  # a validator's ValueError, without pydantic's prefix
        ({"epochs": "many"}, "Input should be a valid integer, unable to parse string as an integer"),
    ],
    ids=["union tag", "extra key", "missing", "value error", "other"],
)
def test_pydantic_message_in_the_authors_words(data: dict[str, Any], message: str) -> None:
    assert pydantic_message(_first_error(data)) == message
