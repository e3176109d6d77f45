"""One record vocabulary (sweep.core.records): no ``"sweep.…"`` key written elsewhere in sweep/, the
experiment-name rule written once, and the rule and the search filters as the stores expect them."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from sweep.core.records import Role, Tag, experiment_name, runs_filter, tag_clause

ROOT = Path(__file__).resolve().parents[3]
RECORDS = ROOT / "sweep" / "core" / "records.py"
# A record key: "sweep.<name>" or "sweep:<name>" at the start of a literal, or a tag named in an MLflow filter
# (tags.`sweep.role`).
KEY = re.compile(r"(?:^|`)sweep([.:])(\w+)")
# Not keys: the command starters run as ``python -m sweep.<command>`` (sweep/<command>.py), named alone, at
# the start of a command line in a message ("sweep.evaluate {file} shows its table") or in backticks in a
# field's description ("`sweep.run` retrains").
COMMANDS = {p.stem for p in (ROOT / "sweep").glob("*.py") if p.stem != "__init__"}


def _docstrings(tree: ast.AST) -> set[int]:
    """Ids of the string statements (docstrings, bare strings): prose, not records."""
    return {
        id(n.value)
        for n in ast.walk(tree)
        if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) and isinstance(n.value.value, str)
    }


def _names_a_key(text: str) -> bool:
    """Whether ``text`` names a record key: ``sweep.<name>`` or ``sweep:<name>`` at its start or after a
    backtick, where ``<name>`` is not one of the commands."""
    return any(sep == ":" or name not in COMMANDS for sep, name in KEY.findall(text))


def record_literals(root: Path) -> list[str]:
    """``path:line: literal`` for each string literal under ``root/sweep`` (f-string parts included) that
    names a record key outside ``sweep/core/records.py``."""
    found = []
    for path in sorted((root / "sweep").rglob("*.py")):
        if path.relative_to(root) == RECORDS.relative_to(ROOT):
            continue
        tree = ast.parse(path.read_text())
        prose = _docstrings(tree)
        for node in sorted(ast.walk(tree), key=lambda n: getattr(n, "lineno", 0)):
            if not (isinstance(node, ast.Constant) and isinstance(node.value, str)) or id(node) in prose:
                continue
            if _names_a_key(node.value):
                found.append(f"{path.relative_to(root)}:{node.lineno}: {node.value!r}")
    return found


def experiment_rules(root: Path) -> list[str]:
    """Where a module under ``root/sweep`` computes ``<...>.experiment or <study name>`` (the rule's tell-tale)
    or defines a function ``experiment_name``."""
    found = []
    for path in sorted((root / "sweep").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            first = node.values[0] if isinstance(node, ast.BoolOp) and isinstance(node.op, ast.Or) else None
            named = first.attr if isinstance(first, ast.Attribute) else getattr(first, "id", None)
            if named == "experiment" or (isinstance(node, ast.FunctionDef) and node.name == "experiment_name"):
                found.append(f"{path.relative_to(root)}:{node.lineno}")
    return found


def test_no_record_key_outside_records() -> None:
    assert record_literals(ROOT) == []


def test_scan_sees_keys_and_skips_commands(tmp_path: Path) -> None:
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "evaluate.py").write_text("")
    (tmp_path / "sweep" / "m.py").write_text(
        '"""Module prose naming ``sweep.role`` and sweep.evaluate."""\n'
        "import sweep.core\n"
        'A = {"sweep.role": "trial"}\n'
        "B = f\"tags.`sweep.study_name` = '{A}'\"\n"
        'C = f"sweep.provenance.{A}"\n'
        'D = "sweep:finished_by"\n'
        'E = ["-m", "sweep.evaluate", f"sweep.evaluate {A} shows its table"]\n'
        'F = "sweep: a lock holder"\n'
        'G = Field(description="`sweep.run` retrains the `top` trials")\n'
        'H = "`sweep.trial_number` of the run"\n'
    )
    assert [line.split(": ", 1)[0] for line in record_literals(tmp_path)] == [
        "sweep/m.py:3",
        "sweep/m.py:4",
        "sweep/m.py:5",
        "sweep/m.py:6",
        "sweep/m.py:10",
    ]


def test_experiment_name_rule_written_once() -> None:
    rules = experiment_rules(ROOT)
    assert len(rules) == 2, rules  # the function and its one expression
    assert {r.split(":")[0] for r in rules} == {"sweep/core/records.py"}


def test_experiment_name_rule() -> None:
    assert experiment_name("shared", "s.lr=0.1") == "shared"
    assert experiment_name(None, "s") == "s"
    assert experiment_name("", "s") == "s"  # an empty name is no name


def test_filters_as_the_stores_expect() -> None:
    assert runs_filter(Role.TRIAL, "s") == "tags.`sweep.role` = 'trial' and tags.`sweep.study_name` = 's'"
    assert runs_filter(Role.EVALUATION) == "tags.`sweep.role` = 'evaluation'"
    assert tag_clause(Tag.ROLE, Role.EVALUATION, "!=") == "tags.`sweep.role` != 'evaluation'"
    assert tag_clause(Tag.TRIAL, 3) == "tags.`sweep.trial` = '3'"
