"""Every example in README.md and docs/*.md is checked against the real CLI and engine, so it cannot go stale.

Shell examples that call ``anomalyseg`` (or ``python -m AnomalySegLib`` / ``torchrun ... -m
AnomalySegLib``) are parsed by the real argument parser: a concrete command line must parse as
written; a synopsis (``[--option ...]``, upper-case placeholders) must name an existing subcommand and
only options it has. The cheap ones (``--help``, ``fetch-data --list``) are run for real. Python
examples must compile, and every ``from AnomalySegLib... import name`` in them must import.
"""

from __future__ import annotations

import argparse
import ast
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from AnomalySegLib.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
ENGINE_CALL = re.compile(r"^(?:anomalyseg|python3? -m AnomalySegLib|torchrun .*?-m AnomalySegLib)\s+(.*)$")
#: Documented calls cheap enough to run for real.
CHEAP = (("fetch-data", "--list"), ("train-seg", "--help"))


def fenced_blocks(kinds: tuple[str, ...]) -> list[tuple[str, str]]:
    """(``document:line``, code) of every fenced block of one of ``kinds`` in the documents."""
    blocks = []
    for document in DOCUMENTS:
        text = document.read_text(encoding="utf-8")
        for match in FENCE.finditer(text):
            if match.group(1) in kinds:
                line = text[: match.start()].count("\n") + 1
                blocks.append((f"{document.relative_to(REPO)}:{line}", match.group(2)))
    return blocks


INLINE = re.compile(r"`((?:anomalyseg|python3? -m AnomalySegLib) [^`]+)`")


def shell_commands() -> list[tuple[str, str]]:
    """(where, the arguments after the engine's name) of every engine call in the shell examples
    and in inline code of the prose (``anomalyseg fetch-data --list``)."""
    commands = []
    for document in DOCUMENTS:
        prose = FENCE.sub("", document.read_text(encoding="utf-8"))
        for inline in INLINE.findall(prose):
            if match := ENGINE_CALL.match(inline.strip()):
                commands.append((f"{document.relative_to(REPO)} (inline)", match.group(1)))
    for where, code in fenced_blocks(("bash", "sh", "shell", "console")):
        code = re.sub(r"<<'?(\w+)'?\n.*?^\1$", "", code, flags=re.MULTILINE | re.DOTALL)  # heredocs
        for line in code.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#.*$", "", line.strip().removeprefix("$ "))
            if match := ENGINE_CALL.match(line):
                commands.append((where, match.group(1)))
    return commands


def subparsers_of(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def is_synopsis(arguments: str) -> bool:
    return "[" in arguments or "|" in arguments or bool(re.search(r"(^|\s)[A-Z][A-Z_]+(\s|$)", arguments))


def test_the_documents_have_engine_examples():
    assert len(shell_commands()) >= 15 and len(fenced_blocks(("python",))) >= 2


@pytest.mark.parametrize("where, arguments", shell_commands(), ids=lambda value: str(value)[:60])
def test_shell_example_fits_the_real_parser(where, arguments):
    parser = build_parser()
    tokens = shlex.split(arguments)
    if tokens[0].startswith("-"):  # top-level options only (--help, --version)
        assert all(t in parser._option_string_actions for t in tokens), where
        return
    commands = subparsers_of(parser)
    assert tokens[0] in commands, f"{where}: no subcommand {tokens[0]!r}"
    if len(tokens) == 1:  # prose naming a command ("see `anomalyseg calibrate`")
        return
    if is_synopsis(arguments):
        known = commands[tokens[0]]._option_string_actions
        options = {t.split("=")[0] for t in re.findall(r"(?<![\w-])--?[a-zA-Z][\w-]*", arguments)}
        assert options <= set(known), f"{where}: {tokens[0]} has no option(s) {sorted(options - set(known))}"
        return
    try:
        parser.parse_args(tokens)
    except SystemExit as exit_:
        assert exit_.code == 0, f"{where}: 'anomalyseg {arguments}' does not parse"


@pytest.mark.parametrize("arguments", CHEAP)
def test_cheap_examples_run(arguments):
    documented = {tuple(shlex.split(a)) for _, a in shell_commands()}
    assert arguments in documented
    completed = subprocess.run([sys.executable, "-m", "AnomalySegLib", *arguments], capture_output=True,
                               text=True, encoding="utf-8", timeout=300, cwd=REPO)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.strip()


@pytest.mark.parametrize("where, code", fenced_blocks(("python",)), ids=lambda value: str(value)[:40])
def test_python_example_compiles_and_its_engine_imports_exist(where, code):
    tree = ast.parse(code, filename=where)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("AnomalySegLib"):
            module = __import__(node.module, fromlist=[alias.name for alias in node.names])
            for alias in node.names:
                assert hasattr(module, alias.name), f"{where}: {node.module} has no {alias.name}"


def test_no_document_names_a_command_that_does_not_exist():
    commands = set(subparsers_of(build_parser()))
    sources = [*DOCUMENTS, REPO / "Resources" / "UI" / "AnomalySeg.ui"]
    for source in sources:
        text = source.read_text(encoding="utf-8")
        for name in re.findall(r"anomalyseg ([a-z][a-z-]+)\b", text):
            assert name in commands, f"{source.relative_to(REPO)}: 'anomalyseg {name}' is not a command"


def test_help_texts_print_no_doubled_percent_signs():
    for name, subparser in subparsers_of(build_parser()).items():
        assert "%%" not in subparser.format_help(), name
