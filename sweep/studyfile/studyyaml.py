"""Reading a study file: its bytes to a YAML tree, guarded (size, encoding, aliases, depth, duplicate
keys), and ``${VAR}`` references expanded; :mod:`sweep.studyfile.config` validates the tree.

Every refusal is a :class:`~sweep.core.errors.ConfigError` naming the file (and the line or key).
"""

from __future__ import annotations

import codecs
import math
import os
import re
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import yaml

from sweep.core.errors import ConfigError
from sweep.core.urls import remember_secret

MAX_FILE_BYTES = 1_000_000  # a study file is a few kB; anything near this is the wrong file
MAX_NODES = 100_000  # values in the document with every alias expanded (an alias bomb is refused early)
MAX_DEPTH = 64  # nesting of mappings and lists (a study file needs fewer than 10)
MAX_INT = 2**63 - 1  # integers beyond 64 bits are no seed, size or count any library takes

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _setting_like(value: str) -> bool:
    """A number or a YAML boolean/null (``${N_TRIALS}`` → ``"20"``): a setting, never masked by value (masking
    every "20" would garble every number printed)."""
    try:
        float(value)
    except ValueError:
        return value.strip().lower() in ("true", "false", "yes", "no", "on", "off", "null", "none", "~")
    return True


def expand_env(node: Any, file: Path, key: str = "") -> Any:
    """Replace ``${NAME}`` in strings with the environment variable (for credentials in URLs). Each value
    taken (numbers and booleans excepted) is a secret from then on: masked wherever sweep prints or records
    it, stored in the Optuna database as its reference (:func:`sweep.core.urls.remember_secret`)."""
    if isinstance(node, dict):
        return {k: expand_env(v, file, f"{key}.{k}" if key else str(k)) for k, v in node.items()}
    if isinstance(node, list):
        return [expand_env(v, file, f"{key}.{i}") for i, v in enumerate(node)]
    if isinstance(node, str):

        def value(m: re.Match[str]) -> str:
            if m.group(1) not in os.environ:
                raise ConfigError(file, key, f"environment variable {m.group(1)} is not set")
            found = os.environ[m.group(1)]
            if not _setting_like(found):
                remember_secret(found, m.group(0))
            return found

        return _ENV.sub(value, node)
    return node


def check_numbers(node: Any, file: Path, key: str = "") -> None:
    """Refuse numbers no setting can use: NaN and infinite floats (``.nan``, ``1e400``), integers beyond
    64 bits, and YAML 1.1's base-60 numbers (``timeout: 1:30`` reads as 90). Named by their key, before
    the schema sees them."""
    if isinstance(node, dict):
        for k, v in node.items():
            check_numbers(v, file, f"{key}.{k}" if key else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            check_numbers(v, file, f"{key}.{i}")
    elif isinstance(node, _BaseSixtyInt | _BaseSixtyFloat):
        raise ConfigError(
            file,
            key,
            f"{node.written} is a base-60 number in YAML 1.1 (read as {node!r}): write the number itself, "
            f"or quote '{node.written}' where text belongs",
        )
    elif isinstance(node, float) and not math.isfinite(node):
        raise ConfigError(file, key, f"{node} is not a usable number: give a finite value")
    elif isinstance(node, _LongInteger):
        raise ConfigError(file, key, f"an integer of {int(node)} digits is out of range (at most 2**63 - 1)")
    elif isinstance(node, int) and not isinstance(node, bool) and not -MAX_INT - 1 <= node <= MAX_INT:  # int64
        raise ConfigError(file, key, f"an integer of {len(str(abs(node)))} digits is out of range (at most 2**63 - 1)")


_MERGE_TAG = "tag:yaml.org,2002:merge"


class _LongInteger(int):
    """An integer literal too long for Python to read; its value is its number of digits, and
    :func:`check_numbers` refuses it by its key."""


class _BaseSixtyInt(int):
    """A base-60 integer (``1:30``, which YAML 1.1 reads as 90); ``written`` is the text.
    :func:`check_numbers` refuses it by its key: no setting means a clock time as a number."""

    written: str


class _BaseSixtyFloat(float):
    """A base-60 float (``1:30.5``, read as 90.5); see :class:`_BaseSixtyInt`."""

    written: str


# Tags the safe loader would build into something other than text, numbers, booleans, lists and
# mappings (bytes, dates, sets, ordered pairs): a study file has no use for them, and a str setting
# would take ``!!binary`` bytes decoded.
_NOT_PLAIN = {f"tag:yaml.org,2002:{t}": f"!!{t}" for t in ("binary", "timestamp", "set", "omap", "pairs")}
# YAML 1.2 floats that YAML 1.1 reads as strings (``1e-3``, ``1E5``: no dot, or no exponent sign).
_EXPONENT_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$")


class _Refused(yaml.MarkedYAMLError):
    """A document the loader will not build (too large, too deep, a recursive alias...), with its position."""


class _StudyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, guarded for study files.

    It refuses duplicate keys (PyYAML would silently keep the last one) while accepting YAML merge keys
    (``<<: *shared``, where a key given beside the merge overrides the merged one), and refuses before
    building anything: more than :data:`MAX_NODES` values once aliases are expanded (a "billion laughs"
    document needs only a few lines), nesting deeper than :data:`MAX_DEPTH` (no ``RecursionError``),
    and an alias inside its own anchor. It refuses the tags of :data:`_NOT_PLAIN`, reads ``1e-3`` as a
    number (as YAML 1.2 does; YAML 1.1 makes it a string), and marks base-60 numbers for
    :func:`check_numbers`.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._nodes = 0
        self._depth = 0
        self._open: set[str] = set()  # anchors of the nodes being composed (an alias to one is recursive)
        self._sizes: dict[int, tuple[int, int]] = {}  # node -> (values, depth) with aliases expanded

    def _expanded(self, node: yaml.Node) -> tuple[int, int]:
        """How many values and how many levels ``node`` stands for once every alias in it is expanded."""
        if id(node) not in self._sizes:
            children: list[yaml.Node] = []
            if isinstance(node, yaml.SequenceNode):
                children = list(node.value)
            elif isinstance(node, yaml.MappingNode):
                children = [n for pair in node.value for n in pair]
            sizes = [self._expanded(child) for child in children]
            self._sizes[id(node)] = (1 + sum(n for n, _ in sizes), 1 + max((d for _, d in sizes), default=0))
        return self._sizes[id(node)]

    def _count(self, values: int, depth: int, mark: yaml.Mark | None) -> None:
        self._nodes += values
        if self._nodes > MAX_NODES:
            raise _Refused(
                None,
                None,
                f"the document has more than {MAX_NODES:,} values (aliases expanded); a study file is small",
                mark,
            )
        if self._depth + depth > MAX_DEPTH:
            raise _Refused(None, None, f"nested more than {MAX_DEPTH} levels deep", mark)

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:  # type: ignore[override]
        if self.check_event(yaml.AliasEvent):  # type: ignore[no-untyped-call]
            event = self.peek_event()  # type: ignore[no-untyped-call]
            target = self.anchors.get(event.anchor)
            if target is not None:
                if event.anchor in self._open:
                    raise _Refused(
                        None, None, f"alias *{event.anchor} refers to the node that contains it", event.start_mark
                    )
                self._count(*self._expanded(target), event.start_mark)
            return super().compose_node(parent, index)  # type: ignore[no-untyped-call,no-any-return]
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if getattr(event, "tag", None) in _NOT_PLAIN:
            raise _Refused(
                None,
                None,
                f"the tag {_NOT_PLAIN[event.tag]} is not allowed: a study file holds plain text, numbers, "
                "booleans, lists and mappings",
                event.start_mark,
            )
        self._count(1, 1, event.start_mark)
        self._depth += 1
        if event.anchor is not None:  # registered when it starts: until it ends, an alias to it is recursive
            self._open.add(event.anchor)
        try:
            return super().compose_node(parent, index)  # type: ignore[no-untyped-call,no-any-return]
        finally:
            self._depth -= 1
            self._open.discard(event.anchor)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:
                continue  # merged keys may be overridden beside the merge: that is what merging is for
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            if not isinstance(key, Hashable):
                raise yaml.constructor.ConstructorError(
                    None, None, "a list or mapping cannot be a key", key_node.start_mark
                )
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)

    def _construct_int(self, node: yaml.ScalarNode) -> int:
        try:
            return super().construct_yaml_int(node)  # type: ignore[no-untyped-call,no-any-return]
        except ValueError:  # Python refuses to read integers of more than 4300 digits
            return _LongInteger(sum(c.isdigit() for c in str(node.value)))

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        value = self._construct_int(node)
        if ":" not in str(node.value) or isinstance(value, _LongInteger):
            return value
        marked = _BaseSixtyInt(value)
        marked.written = str(node.value)
        return marked

    def construct_yaml_float(self, node: yaml.ScalarNode) -> float:
        value: float = super().construct_yaml_float(node)  # type: ignore[no-untyped-call]
        if ":" not in str(node.value):
            return value
        marked = _BaseSixtyFloat(value)
        marked.written = str(node.value)
        return marked


_StudyLoader.add_constructor("tag:yaml.org,2002:int", _StudyLoader.construct_yaml_int)
_StudyLoader.add_constructor("tag:yaml.org,2002:float", _StudyLoader.construct_yaml_float)
_StudyLoader.add_implicit_resolver("tag:yaml.org,2002:float", _EXPONENT_FLOAT, list("-+0123456789."))


def read_study_text(path: str | Path) -> str:
    """The text of a study file: UTF-8 (with or without a BOM) or UTF-16 with a BOM, at most 1 MB.

    Raises:
        ConfigError: the file cannot be read, is too large, or is not text in those encodings.
    """
    path = Path(path)
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        raise ConfigError(path, "", f"cannot read: {e.strerror}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError(
            path, "", f"larger than {MAX_FILE_BYTES:,} bytes: not a study file (a study file is a few kB)"
        )
    if raw.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        raise ConfigError(path, "", "UTF-32 text: save the study file as UTF-8")
    encoding = "utf-16" if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) else "utf-8-sig"
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        column = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        what = "UTF-16 text" if encoding == "utf-16" else "UTF-8 text"
        byte = raw[e.start : e.start + 1].hex()
        raise ConfigError(
            path, f"line {line}, column {column}", f"not {what} (byte 0x{byte}): save the study file as UTF-8"
        ) from None


def read_study_yaml(path: str | Path) -> Any:
    """The YAML document of a study file, parsed by the guarded loader (not yet validated).

    Raises:
        ConfigError: unreadable, not text, not YAML, or refused by the loader (named by line and column).
    """
    path = Path(path)
    text = read_study_text(path)
    try:
        return yaml.load(text, Loader=_StudyLoader)  # a SafeLoader subclass
    except yaml.reader.ReaderError as e:  # a character YAML does not allow (a NUL, a control code)
        line = text.count("\n", 0, e.position) + 1
        column = e.position - (text.rfind("\n", 0, e.position) + 1) + 1
        where, message = f"line {line}, column {column}", f"character {chr(e.character)!r} is not allowed in YAML text"
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "yaml"
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        message = problem if isinstance(e, _Refused) else f"YAML syntax error: {problem}"
    raise ConfigError(path, where, message) from None
