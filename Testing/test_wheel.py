"""A wheel built from ``pyproject.toml`` works on its own: it carries every engine module, the preset
configs, the atlas template and the default model, and the installed engine finds them.

The wheel is built offline from a copy of the source (``pip wheel --no-deps --no-build-isolation``, the
build backend of this environment) and unpacked into a folder that is put first on ``PYTHONPATH`` in a
fresh interpreter started outside the checkout: that is what ``pip install`` of the wheel lays out,
without installing into the test environment.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "AnomalySegLib", "Resources")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    source = tmp_path_factory.mktemp("source")
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(REPO / name, source / name)
    dist = tmp_path_factory.mktemp("dist")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "-w", str(dist), str(source)],
        capture_output=True, text=True, encoding="utf-8", timeout=300)
    assert build.returncode == 0, build.stdout + build.stderr
    assert "deprecat" not in (build.stdout + build.stderr).lower(), build.stdout + build.stderr
    wheels = list(dist.glob("anomalyseg-*.whl"))
    assert len(wheels) == 1
    return wheels[0]


def test_wheel_holds_every_module_preset_and_resource(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    expected = {path.relative_to(REPO).as_posix() for path in (REPO / "AnomalySegLib").rglob("*")
                if path.suffix in (".py", ".json") and "__pycache__" not in path.parts}
    expected |= {"AnomalySegLib/" + path.relative_to(REPO).as_posix()
                 for path in (REPO / "Resources").rglob("*") if path.is_file()}
    assert not expected - names, f"missing from the wheel: {sorted(expected - names)}"


def test_installed_wheel_finds_templates_and_default_model(wheel, tmp_path):
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    probe = (
        "from AnomalySegLib.bundle import load_bundle\n"
        "from AnomalySegLib.pipeline import default_model_path\n"
        "from AnomalySegLib.preprocessing.template import load_template\n"
        "from AnomalySegLib.resources import resources_dir\n"
        "bundle = load_bundle(default_model_path())\n"
        "print(resources_dir())\n"
        "print(sorted(bundle.components), load_template().t1.GetSize())\n"
    )
    environment = {**os.environ, "PYTHONPATH": str(site)}
    environment.pop("ANOMALYSEG_RESOURCES", None)
    run = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=environment,
                         capture_output=True, text=True, encoding="utf-8", timeout=300)
    assert run.returncode == 0, run.stderr
    found, check = run.stdout.splitlines()[-2:]
    assert Path(found) == site / "AnomalySegLib" / "Resources"
    assert check == "['recon', 'seg'] (193, 221, 186)"
