"""The code runs on the oldest Python that ``pyproject.toml`` declares (``requires-python``).

Tests run on one interpreter only, so the constructs a newer Python added are found statically: every
Python file of the repository must parse with the grammar of the oldest version, and must not use the
names and modules that appeared after it (``datetime.UTC``, ``tomllib`` without a fallback, ...).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FOLDERS = ("AnomalySegLib", "AnomalySeg", "Testing", "scripts", "benchmarks")

# Names added to the standard library after Python 3.10: (module, name) → version that added it.
NEWER_NAMES = {
    ("datetime", "UTC"): (3, 11),
    ("typing", "Self"): (3, 11),
    ("typing", "LiteralString"): (3, 11),
    ("typing", "Never"): (3, 11),
    ("typing", "assert_never"): (3, 11),
    ("typing", "reveal_type"): (3, 11),
    ("enum", "StrEnum"): (3, 11),
    ("itertools", "batched"): (3, 12),
    ("typing", "override"): (3, 12),
}
NEWER_MODULES = {"tomllib": (3, 11)}


def _oldest_python() -> tuple[int, int]:
    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    match = re.search(r'^requires-python\s*=\s*">=\s*(\d+)\.(\d+)"', text, re.MULTILINE)
    assert match, "pyproject.toml declares no requires-python = \">=X.Y\""
    return int(match[1]), int(match[2])


def _python_files() -> list[Path]:
    return sorted(path for folder in FOLDERS for path in (REPO / folder).rglob("*.py")
                  if "__pycache__" not in path.parts)


def _guarded_imports(tree: ast.AST) -> set[int]:
    """Line numbers of imports inside ``try:`` blocks that catch ImportError/ModuleNotFoundError."""
    guarded = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(
                isinstance(handler.type, ast.Name) and handler.type.id in ("ImportError", "ModuleNotFoundError")
                for handler in node.handlers):
            guarded |= {inner.lineno for statement in node.body for inner in ast.walk(statement)
                        if isinstance(inner, (ast.Import, ast.ImportFrom))}
    return guarded


def newer_constructs(source: str, oldest: tuple[int, int]) -> list[str]:
    """Problems of ``source`` on Python ``oldest``, as ``"line N: ..."``; empty when it runs there."""
    try:
        tree = ast.parse(source, feature_version=oldest)
    except SyntaxError as error:
        return [f"line {error.lineno}: syntax of a newer Python ({error.msg})"]
    guarded = _guarded_imports(tree)
    problems = []
    for node in ast.walk(tree):
        found = None
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            found = (node.value.id, node.attr)
        if isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                if NEWER_NAMES.get((node.module, alias.name), oldest) > oldest:
                    problems.append(f"line {node.lineno}: {node.module}.{alias.name} needs Python "
                                    f"{'.'.join(map(str, NEWER_NAMES[node.module, alias.name]))}")
            found = (node.module.split(".")[0], None)
        if isinstance(node, ast.Import):
            for alias in node.names:
                module = alias.name.split(".")[0]
                if NEWER_MODULES.get(module, oldest) > oldest and node.lineno not in guarded:
                    problems.append(f"line {node.lineno}: module {module} needs Python "
                                    f"{'.'.join(map(str, NEWER_MODULES[module]))} (import it in a try/except "
                                    f"ImportError with a fallback)")
        if found and found[1] is not None and NEWER_NAMES.get(found, oldest) > oldest:
            problems.append(f"line {node.lineno}: {found[0]}.{found[1]} needs Python "
                            f"{'.'.join(map(str, NEWER_NAMES[found]))}")
        if (found and found[1] is None and NEWER_MODULES.get(found[0], oldest) > oldest
                and node.lineno not in guarded):
            problems.append(f"line {node.lineno}: module {found[0]} needs Python "
                            f"{'.'.join(map(str, NEWER_MODULES[found[0]]))}")
    return problems


def test_every_file_runs_on_the_oldest_declared_python():
    oldest = _oldest_python()
    problems = [f"{path.relative_to(REPO)} {problem}" for path in _python_files()
                for problem in newer_constructs(path.read_text(encoding="utf-8"), oldest)]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("source", [
    "import datetime\nnow = datetime.datetime.now(datetime.UTC)\n",
    "from datetime import UTC\n",
    "import tomllib\n",
    "from typing import Self\n",
    "try:\n    pass\nexcept* ValueError:\n    pass\n",
    "type Alias = int\n",
])
def test_the_check_finds_newer_constructs(source):
    assert newer_constructs(source, (3, 10))


@pytest.mark.parametrize("source", [
    "import datetime\nnow = datetime.datetime.now(datetime.timezone.utc)\n",
    "try:\n    import tomllib\nexcept ModuleNotFoundError:\n    import tomli as tomllib\n",
    "match x:\n    case 1:\n        pass\n",
])
def test_the_check_accepts_what_runs_on_the_oldest_python(source):
    assert newer_constructs(source, (3, 10)) == []
