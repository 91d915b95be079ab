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
