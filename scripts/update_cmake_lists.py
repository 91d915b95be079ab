"""Rewrite the file lists of the extension's CMakeLists from the files in the checkout.

Slicer's packaging needs every file listed explicitly (``Testing/test_packaging.py`` checks it).
Run after adding or removing engine, module or resource files::

    python scripts/update_cmake_lists.py

Files come from git (tracked, plus untracked ones it does not ignore), so caches are never listed.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# (CMakeLists file, variable, folder the paths are relative to, which files)
LISTS = [
    ("AnomalySegLib/CMakeLists.txt", "MODULE_PYTHON_SCRIPTS", "AnomalySegLib", lambda p: p.suffix == ".py"),
    ("AnomalySegLib/CMakeLists.txt", "MODULE_PYTHON_RESOURCES", "AnomalySegLib",
     lambda p: p.suffix != ".py" and p.name != "CMakeLists.txt"),
    ("AnomalySeg/CMakeLists.txt", "MODULE_PYTHON_SCRIPTS", "AnomalySeg", lambda p: p.suffix == ".py"),
    ("CMakeLists.txt", "ANOMALYSEG_RESOURCES", "", lambda p: p.parts[0] == "Resources"),
]


def checkout_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, encoding="utf-8", check=True).stdout.splitlines()
    return [Path(name) for name in listed if (ROOT / name).is_file()]


def main() -> None:
    files = checkout_files()
    for cmake_file, variable, base, wanted in LISTS:
        base_path = Path(base)
        entries = sorted(
            str(path.relative_to(base_path)) if base else str(path)
            for path in files
            if (not base or base_path in path.parents) and wanted(path.relative_to(base_path) if base else path)
        )
        path = ROOT / cmake_file
        text = path.read_text(encoding="utf-8")
        pattern = re.compile(rf"(set\({variable}\n)(.*?)(\n\s*\))", re.DOTALL)
        if not pattern.search(text):
            raise SystemExit(f"{cmake_file}: no set({variable} ...) block")
        body = "\n".join(f"  {entry}" for entry in entries)
        text = pattern.sub(lambda match: match.group(1) + body + match.group(3), text, count=1)
        path.write_text(text, encoding="utf-8")
        print(f"{cmake_file}: {variable}: {len(entries)} files")


if __name__ == "__main__":
    main()
