"""The ``anomalyseg`` entry point: every subcommand is listed and helps, whatever the terminal's encoding."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

COMMANDS = ("calibrate", "evaluate", "fetch-data", "make-draem-test-set", "prepare-dataset", "preprocess",
            "restore", "segment", "train-recon", "train-seg")

# Prints the help of every subcommand from one process (importing torch once, not per command).
PRINT_ALL_HELP = textwrap.dedent(f"""
    from AnomalySegLib.cli import main
    for command in {COMMANDS!r}:
        try:
            main([command, "--help"])
        except SystemExit as exit_:
            assert exit_.code == 0, (command, exit_.code)
""")


def ascii_locale() -> dict[str, str]:
    """An environment whose locale encoding is ASCII (as on some CI runners and minimal containers)."""
    environment = {key: value for key, value in os.environ.items()
                   if not key.startswith(("LC_", "LANG", "PYTHONIOENCODING", "PYTHONUTF8"))}
    return {**environment, "LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}


def test_top_level_help_lists_every_subcommand():
    result = subprocess.run([sys.executable, "-m", "AnomalySegLib", "--help"], cwd=REPO, capture_output=True,
                            text=True, encoding="utf-8", timeout=300)
    assert result.returncode == 0, result.stderr
    for command in COMMANDS:
        assert command in result.stdout


def test_help_prints_on_an_ascii_terminal():
    """Help texts use "±" and "≥"; an ASCII locale gets escapes, not a UnicodeEncodeError."""
    result = subprocess.run([sys.executable, "-c", PRINT_ALL_HELP], cwd=REPO, env=ascii_locale(),
                            capture_output=True, timeout=300)
    stdout = result.stdout.decode("ascii")  # nothing but ASCII reached the terminal
    assert result.returncode == 0, result.stderr.decode("ascii", errors="replace")[-2000:]
    assert stdout.count("usage: anomalyseg") == len(COMMANDS)
    assert "mean \\xb1 std" in stdout  # evaluate's help, escaped


# Builds the parser of every command (what any --help does) and reports the heavy modules it loaded.
LOADED_BY_HELP = textwrap.dedent(f"""
    import sys
    from AnomalySegLib.cli import main
    for arguments in [["--help"], *[[command, "--help"] for command in {COMMANDS!r}]]:
        try:
            main(arguments)
        except SystemExit:
            pass
    print("LOADED", sorted(m for m in ("torch", "monai", "SimpleITK", "nibabel") if m in sys.modules))
""")


def test_help_does_not_load_torch_or_the_imaging_libraries():
    """Commands import their engine modules inside ``run``: any --help stays under a second."""
    result = subprocess.run([sys.executable, "-c", LOADED_BY_HELP], cwd=REPO, capture_output=True, text=True,
                            encoding="utf-8", timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "LOADED []"


def test_no_command_imports_another_command():
    for module in (REPO / "AnomalySegLib" / "commands").glob("*.py"):
        assert "AnomalySegLib.commands" not in module.read_text(encoding="utf-8"), module.name


def test_errors_that_are_not_about_a_file_name_none(tmp_path):
    """train-seg without --healthy/--labels: the message is the problem, not "<in-memory image>: ..."."""
    result = subprocess.run([sys.executable, "-m", "AnomalySegLib", "train-seg", "--recon", str(tmp_path),
                             "--out", str(tmp_path / "out")], cwd=REPO, capture_output=True, text=True,
                            encoding="utf-8", timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip() == ("anomalyseg train-seg: error: give --healthy (synthetic anomalies), "
                                     "--labels (labelled cases), or both")
