"""Shared by the benchmark scripts: the machine's description and BENCHMARKS.md sections.

Each script owns one section of BENCHMARKS.md, delimited by ``<!-- NAME -->`` and ``<!-- /NAME -->``,
and replaces only that section (appending it the first time), atomically.
"""

from __future__ import annotations

import os
from pathlib import Path

from AnomalySegLib.device import cpu_model
from AnomalySegLib.io.atomic import atomic_write_text

REPOSITORY = Path(__file__).resolve().parent.parent
BENCHMARKS = REPOSITORY / "BENCHMARKS.md"


def machine() -> str:
    """One line naming the machine: cores, processor, load average when measured."""
    return (f"{os.cpu_count()} CPU cores (`nproc`), {cpu_model()}, load average {os.getloadavg()[0]:.1f} "
            f"at the start")


def shown_path(path: str | Path) -> str:
    """``path`` as BENCHMARKS.md shows it: relative to the repository (no machine's absolute paths);
    a path outside the repository by its name only."""
    resolved = Path(path).resolve()
    if resolved.is_relative_to(REPOSITORY):
        return resolved.relative_to(REPOSITORY).as_posix()
    return f"<outside the repository>/{resolved.name}"


def write_section(name: str, text: str, path: Path = BENCHMARKS, after: str | None = None) -> None:
    """Replace the ``name`` section of ``path`` with ``text`` (which excludes the markers).

    A new section goes right after the section ``after`` when that one exists, else at the end.
    """
    begin, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    section = f"{begin}\n{text.strip()}\n{end}"
    current = path.read_text(encoding="utf-8") if path.is_file() else "# Benchmarks\n"
    anchor = f"<!-- /{after} -->" if after else None
    if begin in current and end in current:
        before, rest = current.split(begin, 1)
        updated = before + section + rest.split(end, 1)[1]
    elif anchor and anchor in current:
        before, rest = current.split(anchor, 1)
        updated = before + anchor + "\n\n" + section + rest
    else:
        updated = current.rstrip("\n") + "\n\n" + section + "\n"
    atomic_write_text(path, updated, overwrite=True)


def publish(name: str, text: str, write: bool = True, path: Path = BENCHMARKS, after: str | None = None) -> None:
    """Print a benchmark's section and, if ``write``, store it as section ``name`` of ``path`` (a new one
    right after section ``after``, see :func:`write_section`)."""
    print(text)
    if write:
        write_section(name, text, path, after)
        print(f"written to {path}")
