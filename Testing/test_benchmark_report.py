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


def test_a_section_is_replaced_in_place_and_a_new_one_goes_after_its_anchor(tmp_path):
    from benchmark_report import write_section

    path = tmp_path / "BENCHMARKS.md"
    path.write_text("# Benchmarks\n\n<!-- a -->\nA\n<!-- /a -->\n\n<!-- c -->\nC\n<!-- /c -->\n", encoding="utf-8")
    write_section("b", "B1", path, after="a")  # new: right after a, before c
    write_section("a", "A2", path)  # existing: in place
    write_section("d", "D", path, after="missing")  # anchor absent: at the end
    write_section("b", "B2", path, after="c")  # existing: stays where it is
    text = path.read_text(encoding="utf-8")
    assert [line for line in text.splitlines() if line and not line.startswith("<!--")] == [
        "# Benchmarks", "A2", "B2", "C", "D"]
    assert text.count("<!-- b -->") == 1 and text.count("<!-- /b -->") == 1
