"""BENCHMARKS.md names files relative to the repository, never by a machine's absolute path."""

from __future__ import annotations

import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from benchmark_report import shown_path  # noqa: E402


def test_paths_are_shown_relative_to_the_repository(tmp_path):
    assert shown_path(REPO / "Resources" / "Models" / "default") == "Resources/Models/default"
    assert shown_path(tmp_path / "my_model") == "<outside the repository>/my_model"


def test_benchmarks_md_holds_no_absolute_path():
    text = (REPO / "BENCHMARKS.md").read_text(encoding="utf-8")
    absolute = re.findall(r"(?<![\w.<>])/(?:home|root|work|tmp|Users|mnt|opt|var)/\S*", text)
    assert not absolute, absolute
