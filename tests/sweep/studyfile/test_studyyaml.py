"""Reading a study file (sweep/studyfile/studyyaml.py), before the schema: the bytes (size, encodings), the
guarded YAML loader (duplicate keys, aliases, depth, tags, YAML 1.2 numbers), ``${VAR}`` expansion and the
numbers no setting can use. Whole files through the schema: tests/sweep/studyfile/test_config.py."""

from __future__ import annotations

import codecs
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sweep.core.errors import ConfigError
from sweep.core.urls import forget_secrets, mask_known
from sweep.studyfile.studyyaml import (
    MAX_DEPTH,
    MAX_FILE_BYTES,
    MAX_INT,
    MAX_NODES,
    check_numbers,
    expand_env,
    read_study_text,
    read_study_yaml,
)

F = Path("s.yaml")


@pytest.fixture(autouse=True)
def _no_known_secrets() -> Iterator[None]:
    """Each test starts and ends knowing no secret by value (expand_env remembers the values it takes)."""
    forget_secrets()
    yield
    forget_secrets()


def _file(tmp_path: Path, content: str | bytes) -> Path:
    path = tmp_path / "s.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def _refusal(call: Any, *args: Any) -> tuple[str, str]:
    with pytest.raises(ConfigError) as info:
        call(*args)
    return info.value.key, info.value.message


# ---- the bytes -------------------------------------------------------------------------------------------


def test_a_file_of_exactly_the_limit_is_read_and_a_byte_more_is_not(tmp_path: Path) -> None:
    text = "#" * (MAX_FILE_BYTES - 1) + "\n"
    assert read_study_text(_file(tmp_path, text)) == text
    key, message = _refusal(read_study_text, _file(tmp_path, text + "\n"))
    assert (key, message) == ("", "larger than 1,000,000 bytes: not a study file (a study file is a few kB)")


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        (b"", ""),
        (b"a: 1\n", "a: 1\n"),
        (codecs.BOM_UTF8 + "a: é\n".encode(), "a: é\n"),  # the BOM is not text
        (codecs.BOM_UTF16_LE + "a: ∑\n".encode("utf-16-le"), "a: ∑\n"),
        (codecs.BOM_UTF16_BE + "a: ∑\n".encode("utf-16-be"), "a: ∑\n"),
    ],
    ids=["empty", "ascii", "utf-8 with a BOM", "utf-16 le", "utf-16 be"],
)
def test_the_text_encodings_read(tmp_path: Path, raw: bytes, text: str) -> None:
    assert read_study_text(_file(tmp_path, raw)) == text


@pytest.mark.parametrize(
    ("raw", "key", "message"),
    [
        (codecs.BOM_UTF32_LE + "a".encode("utf-32-le"), "", "UTF-32 text: save the study file as UTF-8"),  # not UTF-16
        (codecs.BOM_UTF32_BE + "a".encode("utf-32-be"), "", "UTF-32 text: save the study file as UTF-8"),
        (b"a: 1\nb: \xc3x\n", "line 2, column 4", "not UTF-8 text (byte 0xc3): save the study file as UTF-8"),
        (b"\xff", "line 1, column 1", "not UTF-8 text (byte 0xff): save the study file as UTF-8"),
        (
            codecs.BOM_UTF16_LE + b"a\x00:",
            "line 1, column 5",
            "not UTF-16 text (byte 0x3a): save the study file as UTF-8",
        ),
    ],
    ids=["utf-32 le", "utf-32 be", "bad utf-8 byte", "a lone byte", "utf-16 cut short"],
)
def test_text_in_other_encodings_is_refused_where_it_goes_wrong(
    tmp_path: Path, raw: bytes, key: str, message: str
) -> None:
    assert _refusal(read_study_text, _file(tmp_path, raw)) == (key, message)


def test_a_missing_file_or_a_folder_cannot_be_read(tmp_path: Path) -> None:
    assert _refusal(read_study_text, tmp_path / "absent.yaml") == ("", "cannot read: No such file or directory")
    assert _refusal(read_study_yaml, tmp_path) == ("", "cannot read: Is a directory")


# ---- the YAML --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key", "message"),
    [
        ("a: 1\na: 2\n", "line 2, column 1", "YAML syntax error: duplicate key 'a'"),
        ("a:\n  b: 1\n  c: 2\n  b: 3\n", "line 4, column 3", "YAML syntax error: duplicate key 'b'"),
        ("? [a]\n: 1\n", "line 1, column 3", "YAML syntax error: a list or mapping cannot be a key"),
        ("a: &a [*a]\n", "line 1, column 8", "alias *a refers to the node that contains it"),
        ("a: x\x00\n", "line 1, column 5", "character '\\x00' is not allowed in YAML text"),
        ("a: [1\n", "line 2, column 1", "YAML syntax error: expected ',' or ']', but got '<stream end>'"),
        ("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), "line 1, column 65", "nested more than 64 levels deep"),
    ],
    ids=["duplicate key", "nested duplicate", "list as a key", "recursive alias", "NUL", "syntax", "too deep"],
)
def test_what_the_loader_refuses_is_named_by_line_and_column(tmp_path: Path, text: str, key: str, message: str) -> None:
    assert _refusal(read_study_yaml, _file(tmp_path, text)) == (key, message)


@pytest.mark.parametrize("tag", ["binary", "timestamp", "set", "omap", "pairs"])
def test_tags_that_build_something_other_than_plain_values_are_refused(tmp_path: Path, tag: str) -> None:
    key, message = _refusal(read_study_yaml, _file(tmp_path, f"a: !!{tag} x\n"))
    assert key == "line 1, column 4" and message.startswith(f"the tag !!{tag} is not allowed")


def test_nesting_up_to_the_limit_loads(tmp_path: Path) -> None:
    doc = read_study_yaml(_file(tmp_path, "[" * MAX_DEPTH + "]" * MAX_DEPTH))
    for _ in range(MAX_DEPTH - 1):
        (doc,) = doc
    assert doc == []


def test_merge_keys_load_and_may_be_overridden_beside_the_merge(tmp_path: Path) -> None:
    text = "base: &b {x: 1, y: 2}\nuse:\n  <<: *b\n  y: 3\n"
    assert read_study_yaml(_file(tmp_path, text)) == {"base": {"x": 1, "y": 2}, "use": {"x": 1, "y": 3}}


def test_aliases_count_once_expanded(tmp_path: Path) -> None:
    """A document whose aliases expand to just under :data:`MAX_NODES` values loads; a few more do not."""
    per_alias = 1 + 999  # the list and its 999 items
    aliases = (MAX_NODES - 2000) // per_alias  # room left for the mapping, its keys and the anchor itself
    text = "a: &a [" + ", ".join(["0"] * 999) + "]\n" + "".join(f"k{i}: *a\n" for i in range(aliases))
    assert len(read_study_yaml(_file(tmp_path, text))) == aliases + 1
    bomb = text + "".join(f"m{i}: *a\n" for i in range(5))
    key, message = _refusal(read_study_yaml, _file(tmp_path, bomb))
    assert int(key.split(",")[0].removeprefix("line ")) > aliases + 1  # at one of the aliases added
    assert message == "the document has more than 100,000 values (aliases expanded); a study file is small"


def test_yaml_1_2_numbers_and_marked_base_60_ones(tmp_path: Path) -> None:
    """``1e-3`` is a number (YAML 1.1 reads it as text), ``e5`` text; base-60 and too-long integers are kept
    for :func:`check_numbers` to refuse by their key."""
    text = "a: 1e-3\nb: 1E5\nc: .5e1\nd: e5\ne: 1:30\nf: 1:30.5\ng: " + "9" * 5000 + "\nh: -2e+2\n"
    doc = read_study_yaml(_file(tmp_path, text))
    assert doc == {"a": 0.001, "b": 100000.0, "c": 5.0, "d": "e5", "e": 90, "f": 90.5, "g": 5000, "h": -200.0}
    assert [type(doc[k]).__name__ for k in "abcd"] == ["float", "float", "float", "str"]
    assert (doc["e"].written, doc["f"].written) == ("1:30", "1:30.5")
    assert _refusal(check_numbers, doc, F) == (
        "e",
        "1:30 is a base-60 number in YAML 1.1 (read as 90): write the number itself, "
        "or quote '1:30' where text belongs",
    )
    assert _refusal(check_numbers, {"g": doc["g"]}, F) == (
        "g",
        "an integer of 5000 digits is out of range (at most 2**63 - 1)",
    )


def test_an_empty_document_is_none(tmp_path: Path) -> None:
    assert read_study_yaml(_file(tmp_path, "")) is None
    assert read_study_yaml(_file(tmp_path, "# only a comment\n")) is None


# ---- ${VAR} and numbers ----------------------------------------------------------------------------------


def test_expand_env_replaces_each_reference_and_remembers_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only ``${NAME}`` is a reference (not ``$NAME``, nor a name starting with a digit); a value taken is masked
    from then on, a number is not (it is a setting); keys and non-strings stay as written."""
    monkeypatch.setenv("SWEEP_T_PW", "hunter2")
    monkeypatch.setenv("SWEEP_T_N", "123456789")
    doc = {
        "uri": "postgresql://u:${SWEEP_T_PW}@h/db",
        "${SWEEP_T_N}": ["$SWEEP_T_N", "${SWEEP_T_N}${SWEEP_T_N}", "${1X}", 5, None],
    }
    assert expand_env(doc, F) == {
        "uri": "postgresql://u:hunter2@h/db",
        "${SWEEP_T_N}": ["$SWEEP_T_N", "123456789123456789", "${1X}", 5, None],
    }
    assert mask_known("said hunter2 and 123456789") == "said *** and 123456789"


@pytest.mark.parametrize(
    ("doc", "key"), [({"a": {"b": "${SWEEP_T_UNSET}"}}, "a.b"), ({"a": ["x", "${SWEEP_T_UNSET}"]}, "a.1")]
)
def test_an_unset_variable_is_named_with_its_key(monkeypatch: pytest.MonkeyPatch, doc: dict, key: str) -> None:
    monkeypatch.delenv("SWEEP_T_UNSET", raising=False)
    assert _refusal(expand_env, doc, F) == (key, "environment variable SWEEP_T_UNSET is not set")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (math.nan, "nan is not a usable number: give a finite value"),
        (math.inf, "inf is not a usable number: give a finite value"),
        (-math.inf, "-inf is not a usable number: give a finite value"),
        (MAX_INT + 1, "an integer of 19 digits is out of range (at most 2**63 - 1)"),
        (-(MAX_INT + 2), "an integer of 19 digits is out of range (at most 2**63 - 1)"),
    ],
)
def test_numbers_no_setting_can_use_are_refused_by_their_key(value: float, message: str) -> None:
    assert _refusal(check_numbers, {"a": [{"b": value}]}, F) == ("a.0.b", message)


@pytest.mark.parametrize("value", [MAX_INT, -MAX_INT, -MAX_INT - 1, 0, 1e308, -1e-308, True, "nan", None])
def test_numbers_at_the_limits_pass(value: object) -> None:
    check_numbers({"a": [value]}, F)
