"""The shape of the code base: no import cycle, small files in sweep/, its wings imported downward only,
objectives/ free of optuna and mlflow."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("sweep", "objectives")
# The wings of sweep/ (its packages), lowest first. A module imports its own wing and the wings of lower
# rows only; the wings of one row are siblings that do not know each other. "" is sweep/ itself: the package
# and the modules that start the commands (python -m sweep.run, export, report, ui, evaluate).
WINGS: list[tuple[str, ...]] = [
    ("core",),  # errors and exit codes, URLs and secrets, signals, the commands' exit: imports nothing else
    ("studyfile", "storage"),  # what a study file says | the Optuna storage
    ("tracking", "results"),  # MLflow | what a study found, read back
    ("execution",),  # running a study: sessions, trials, workers, recovery
    ("commands",),  # the commands
    ("",),  # sweep/__init__.py and sweep/<command>.py
]
TOP_LEVEL_MODULES = 10  # files directly in sweep/: the package and the command starters, not the code


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _imports(path: Path, modules: dict[str, Path], typing: bool = False) -> set[str]:
    """Project modules ``path`` imports anywhere (functions included); under ``TYPE_CHECKING`` only if ``typing``.

    A relative import counts as the module it names."""
    tree = ast.parse(path.read_text())
    skip: set[int] = set()
    for node in ast.walk(tree):
        if not typing and isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for n in ast.walk(node))
    name = _module_name(path).split(".")
    package = name if path.name == "__init__.py" else name[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in modules)
        elif isinstance(node, ast.ImportFrom):
            parts = package[: len(package) + 1 - node.level] if node.level else []
            module = ".".join([*parts, *([node.module] if node.module else [])])
            for alias in node.names:
                sub = f"{module}.{alias.name}"
                found.add(sub if sub in modules else module)
    return {m for m in found if m in modules}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycle() -> None:
    """No module of sweep/ or objectives/ imports itself back through others, lazily or not."""
    modules = _modules()
    graph = {name: _imports(path, modules) - {name} for name, path in modules.items()}
    assert _cycle(graph) is None, " → ".join(_cycle(graph) or [])


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize(
    "path", sorted((ROOT / "sweep").rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT / "sweep"))
)
def test_sweep_files_stay_small(path: Path) -> None:
    """Each file in sweep/ holds one concern, small enough to read at once (~350 lines)."""
    assert len(path.read_text().splitlines()) <= 350


def test_the_report_and_export_commands_do_not_import_the_runner() -> None:
    """Reading commands load studies through sweep.storage, not the module that runs them."""
    modules = _modules()
    for name in ("sweep.commands.report", "sweep.commands.export"):
        assert "sweep.execution.runner" not in _imports(modules[name], modules, typing=True)


def _wing(path: Path) -> str:
    """The wing of a file of sweep/: the folder it is in under sweep/ ("" for sweep/ itself)."""
    parts = path.relative_to(ROOT / "sweep").parts
    return parts[0] if len(parts) > 1 else ""


def _against_the_wings(graph: dict[str, set[str]], wing_of: dict[str, str]) -> list[str]:
    """Each import from a wing to a higher one or to a sibling, as ``importer (wing) → imported (wing)``."""
    row = {wing: i for i, wings in enumerate(WINGS) for wing in wings}
    return [
        f"{a} ({wing_of[a] or 'sweep/'}) → {b} ({wing_of[b] or 'sweep/'})"
        for a in sorted(graph)
        for b in sorted(graph[a])
        if wing_of[a] != wing_of[b] and row[wing_of[b]] >= row[wing_of[a]]
    ]


def test_every_module_of_sweep_is_in_a_wing() -> None:
    """A new folder in sweep/ takes its place in WINGS (and its __init__.py says its role)."""
    named = {wing for wings in WINGS for wing in wings}
    folders = {_wing(p) for p in (ROOT / "sweep").rglob("*.py")}
    assert folders <= named, f"not in WINGS: {sorted(folders - named)}"
    assert all((ROOT / "sweep" / wing / "__init__.py").exists() for wing in named - {""})


def test_sweep_imports_go_down_its_wings() -> None:
    """No module of sweep/ imports a higher wing or a sibling, lazily, under TYPE_CHECKING or not."""
    modules = _modules()
    ours = {name: path for name, path in modules.items() if name.split(".")[0] == "sweep"}
    graph = {name: _imports(path, ours, typing=True) for name, path in ours.items()}
    wrong = _against_the_wings(graph, {name: _wing(path) for name, path in ours.items()})
    assert not wrong, "imports against the wing order (tests/test_layout.py:WINGS):\n" + "\n".join(wrong)


def test_the_wing_check_finds_imports_up_and_across() -> None:
    wing_of = {"c": "core", "f": "studyfile", "s": "storage", "t": "tracking", "e": "execution"}
    assert _against_the_wings({"c": {"s"}}, wing_of) == ["c (core) → s (storage)"]  # up
    assert _against_the_wings({"s": {"f"}, "f": {"s"}}, wing_of) == [
        "f (studyfile) → s (storage)",
        "s (storage) → f (studyfile)",
    ]  # across
    assert _against_the_wings({"e": {"c", "f", "s", "t"}, "t": {"f", "s"}, "c": {"c"}}, wing_of) == []


def test_few_modules_directly_in_sweep() -> None:
    """sweep/ holds the package and the command starters; the code lives in its wings."""
    top = sorted(p.name for p in (ROOT / "sweep").glob("*.py"))
    assert len(top) <= TOP_LEVEL_MODULES, top
