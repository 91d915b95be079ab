"""The Slicer extension packages every file it needs: CMake lists, the module UI, dependencies.

The CMake lists are parsed here (no CMake or Slicer build needed), so the checks follow the
engine as it grows: a new ``.py`` under ``AnomalySegLib/`` or a new file under ``Resources/``
that is not listed makes a test fail, naming the file.
"""

from __future__ import annotations

import ast
import re
import struct
import subprocess
import textwrap
import sys
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path

import pytest

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser as a package (test extra)
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "AnomalySeg"))

from AnomalySegModuleLib import Dependencies  # noqa: E402

# Qt classes the module's .ui may use directly; Slicer/CTK widgets must be declared as custom widgets.
QT_CLASSES = {
    "QWidget", "QLabel", "QComboBox", "QPushButton", "QCheckBox", "QProgressBar", "QPlainTextEdit",
    "QLineEdit", "QSpinBox", "QDoubleSpinBox", "QGroupBox", "QToolButton", "QRadioButton", "QTextEdit",
    "QTableWidget", "QVBoxLayout", "QHBoxLayout", "QFormLayout", "QGridLayout",
}
CUSTOM_WIDGET_PATTERN = re.compile(r"^(ctk|qMRML|qSlicer)[A-Z]\w+$")


# --- a minimal reader of the CMake commands these files use ---

def _commands(cmake_file: Path) -> list[tuple[str, list[str]]]:
    """``(command, arguments)`` of each CMake command in the file (comments and quotes handled)."""
    text = cmake_file.read_text(encoding="utf-8")
    commands = []
    for match in re.finditer(r"(?m)^\s*([A-Za-z_]\w*)\s*\(((?:[^()\"]|\"(?:[^\"\\]|\\.)*\")*)\)", text):
        body = re.sub(r"(?m)#[^\n\"]*$", "", match.group(2))
        arguments = [a[1:-1] if a.startswith('"') else a for a in re.findall(r"\"(?:[^\"\\]|\\.)*\"|[^\s\"]+", body)]
        commands.append((match.group(1).lower(), arguments))
    return commands


def _variables(cmake_file: Path) -> dict[str, list[str]]:
    """Values of ``set(NAME values...)``, with ``${NAME}`` of earlier single values substituted."""
    variables: dict[str, list[str]] = {}
    for command, arguments in _commands(cmake_file):
        if command == "set" and arguments:
            values = [re.sub(r"\$\{(\w+)\}", lambda m: " ".join(variables.get(m.group(1), [m.group(0)])), v)
                      for v in arguments[1:]]
            variables[arguments[0]] = values
    return variables


def _call(cmake_file: Path, name: str) -> list[str]:
    calls = [arguments for command, arguments in _commands(cmake_file) if command == name.lower()]
    assert len(calls) == 1, f"{cmake_file}: expected one {name}(...) call, found {len(calls)}"
    return calls[0]


def _keyword_values(arguments: list[str], keyword: str, keywords: set[str],
                    variables: dict[str, list[str]]) -> list[str]:
    """The values after ``keyword`` up to the next keyword, with ``${VAR}`` lists expanded."""
    if keyword not in arguments:
        return []
    values = []
    for argument in arguments[arguments.index(keyword) + 1:]:
        if argument in keywords:
            break
        whole = re.fullmatch(r"\$\{(\w+)\}", argument)
        values += variables[whole.group(1)] if whole else [argument]
    return values


MACRO_KEYWORDS = {"NAME", "SCRIPTS", "RESOURCES", "WITH_SUBDIR", "WITH_GENERIC_TESTS", "VERBOSE"}


@dataclass(frozen=True)
class ScriptedModule:
    """The arguments of one ``slicerMacroBuildScriptedModule`` call, variables expanded."""

    name: str
    scripts: list[str]
    resources: list[str]
    options: set[str]


def _scripted_module(folder: Path) -> ScriptedModule:
    cmake_file = folder / "CMakeLists.txt"
    arguments = _call(cmake_file, "slicerMacroBuildScriptedModule")
    variables = _variables(cmake_file)
    (name,) = _keyword_values(arguments, "NAME", MACRO_KEYWORDS, variables)
    return ScriptedModule(name=name, scripts=_keyword_values(arguments, "SCRIPTS", MACRO_KEYWORDS, variables),
                          resources=_keyword_values(arguments, "RESOURCES", MACRO_KEYWORDS, variables),
                          options={a for a in arguments if a in MACRO_KEYWORDS - {"NAME", "SCRIPTS", "RESOURCES"}})


def _git_ignored(paths: list[Path]) -> set[Path]:
    """Those of ``paths`` that git ignores (build outputs, caches); empty outside a git checkout."""
    if not paths or not (REPO / ".git").exists():
        return set()
    result = subprocess.run(["git", "check-ignore", "--stdin"], cwd=REPO, capture_output=True, text=True, encoding="utf-8",
                            input="\n".join(str(p.relative_to(REPO)) for p in paths))
    return {REPO / line for line in result.stdout.splitlines()}


def _files_under(folder: Path) -> list[Path]:
    files = [p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    ignored = _git_ignored(files)
    return sorted(p for p in files if p not in ignored)


# --- the extension ---

def test_extension_metadata_and_subdirectories():
    top = REPO / "CMakeLists.txt"
    variables = _variables(top)
    assert variables["EXTENSION_CATEGORY"] == ["Segmentation"]
    for name in ("EXTENSION_HOMEPAGE", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION",
                 "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS"):
        assert variables.get(name) and all(variables[name]), f"{name} is not set"
    for name in ("EXTENSION_HOMEPAGE", "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS"):
        assert all(v.startswith("https://") for v in variables[name]), name
    assert variables["EXTENSION_ICONURL"][0].endswith("/Resources/Icons/AnomalySeg.png")
    assert "PyTorch" in " ".join(variables["EXTENSION_DEPENDS"]).split()
    subdirectories = [arguments[0] for command, arguments in _commands(top) if command == "add_subdirectory"]
    assert subdirectories == ["AnomalySegLib", "AnomalySeg"]
    includes = [arguments[0] for command, arguments in _commands(top) if command == "include"]
    assert includes == ["${Slicer_USE_FILE}", "${Slicer_EXTENSION_GENERATE_CONFIG}", "${Slicer_EXTENSION_CPACK}"]


def test_engine_is_packaged_as_a_subfolder_with_every_file():
    module = _scripted_module(REPO / "AnomalySegLib")
    assert module.name == "AnomalySegLib" and "WITH_SUBDIR" in module.options
    scripts, resources = module.scripts, module.resources
    listed = {REPO / "AnomalySegLib" / f for f in scripts + resources}
    present = set(_files_under(REPO / "AnomalySegLib")) - {REPO / "AnomalySegLib" / "CMakeLists.txt"}
    missing_files = sorted(p.relative_to(REPO) for p in listed - present)
    unlisted = sorted(p.relative_to(REPO) for p in present - listed)
    assert not missing_files, f"AnomalySegLib/CMakeLists.txt lists files that do not exist: {missing_files}"
    assert not unlisted, f"not listed in AnomalySegLib/CMakeLists.txt (would be missing from the package): {unlisted}"
    assert all(s.endswith(".py") for s in scripts) and not any(r.endswith(".py") for r in resources)


def test_module_lists_every_python_file():
    module = _scripted_module(REPO / "AnomalySeg")
    assert module.name == "AnomalySeg" and module.options == {"WITH_GENERIC_TESTS"}
    assert not module.resources  # the module's resources are the extension's top-level Resources/
    listed = {REPO / "AnomalySeg" / s for s in module.scripts}
    present = {p for p in _files_under(REPO / "AnomalySeg") if p.suffix == ".py"}
    assert listed == present, (sorted(p.relative_to(REPO) for p in listed ^ present))
    unittest = _call(REPO / "AnomalySeg" / "CMakeLists.txt", "slicer_add_python_unittest")
    assert unittest == ["SCRIPT", "${MODULE_NAME}.py"]


def test_every_resource_is_installed_and_exists():
    listed = _variables(REPO / "CMakeLists.txt")["ANOMALYSEG_RESOURCES"]
    assert all(r.startswith("Resources/") for r in listed)
    listed_paths = {REPO / r for r in listed}
    present = set(_files_under(REPO / "Resources"))
    assert not listed_paths - present, f"listed but missing: {sorted(listed_paths - present)}"
    unlisted = sorted(str(p.relative_to(REPO)) for p in present - listed_paths)
    assert not unlisted, f"not in ANOMALYSEG_RESOURCES of CMakeLists.txt (missing from the package): {unlisted}"
    foreach = [arguments for command, arguments in _commands(REPO / "CMakeLists.txt") if command == "foreach"]
    assert foreach == [["resource", "IN", "LISTS", "ANOMALYSEG_RESOURCES"]]


# --- the module's user interface ---

def _ui_tree() -> ElementTree.ElementTree:
    return ElementTree.parse(REPO / "Resources" / "UI" / "AnomalySeg.ui")


def test_ui_names_only_qt_ctk_and_slicer_widget_classes():
    root = _ui_tree().getroot()
    custom = {c.findtext("class"): c for c in root.iter("customwidget")}
    for name, declaration in custom.items():
        assert CUSTOM_WIDGET_PATTERN.match(name), f"custom widget {name} is not a CTK/Slicer class"
        assert declaration.findtext("header") == f"{name}.h"
        assert declaration.findtext("extends") in QT_CLASSES
    used = {w.get("class") for w in root.iter("widget")} | {layout.get("class") for layout in root.iter("layout")}
    unknown = used - QT_CLASSES - set(custom)
    assert not unknown, f"widget classes that are neither Qt nor declared CTK/Slicer widgets: {unknown}"
    assert root.find("widget").get("class") == "qMRMLWidget" and root.findtext("class") == "AnomalySeg"


def _module_source() -> ast.Module:
    return ast.parse((REPO / "AnomalySeg" / "AnomalySeg.py").read_text(encoding="utf-8"))


def test_widgets_the_module_uses_exist_in_the_ui_and_bind_to_real_parameters():
    root = _ui_tree().getroot()
    names = {w.get("name") for w in root.iter("widget")}
    used = {node.attr for node in ast.walk(_module_source())
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
            and node.value.attr == "ui"}
    assert used and not used - names, f"self.ui names missing from AnomalySeg.ui: {sorted(used - names)}"

    parameter_class = next(n for n in ast.walk(_module_source())
                           if isinstance(n, ast.ClassDef) and n.name == "AnomalySegParameterNode")
    parameters = {n.target.id for n in parameter_class.body if isinstance(n, ast.AnnAssign)}
    bound = {p.findtext("string") for p in root.iter("property") if p.get("name") == "SlicerParameterName"}
    assert bound and not bound - parameters, f"SlicerParameterName without a parameter: {bound - parameters}"


def test_module_classes_follow_the_scripted_module_template():
    classes = {n.name: n for n in _module_source().body if isinstance(n, ast.ClassDef)}
    for name, base in (("AnomalySeg", "ScriptedLoadableModule"),
                       ("AnomalySegWidget", "ScriptedLoadableModuleWidget"),
                       ("AnomalySegLogic", "ScriptedLoadableModuleLogic"),
                       ("AnomalySegTest", "ScriptedLoadableModuleTest")):
        assert name in classes and base in {b.id for b in classes[name].bases if isinstance(b, ast.Name)}, name
    process = next(f for f in classes["AnomalySegLogic"].body if isinstance(f, ast.FunctionDef) and f.name == "process")
    arguments = [a.arg for a in process.args.args]
    assert arguments[:3] == ["self", "inputVolume", "brainMask"]
    assert {"model", "device", "waitForCompletion"} <= set(arguments)
    for path in sorted((REPO / "AnomalySeg").rglob("*.py")):  # Slicer-only modules must at least compile
        compile(path.read_text(encoding="utf-8"), str(path), "exec")


def test_icon_is_a_128_pixel_png():
    data = (REPO / "Resources" / "Icons" / "AnomalySeg.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    assert struct.unpack(">II", data[16:24]) == (128, 128)


# --- dependencies installed inside Slicer ---

def _name(requirement: str) -> str:
    return re.split(r"[\[<>=!~ ;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_engine_requirements_have_one_source_read_by_pyproject_and_the_module(tmp_path):
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert "dependencies" not in pyproject["project"] and "dependencies" in pyproject["project"]["dynamic"]
    source = pyproject["tool"]["setuptools"]["dynamic"]["dependencies"]["file"]
    assert [REPO / name for name in source] == [Dependencies.requirementsFile()]
    lines = [line.strip() for line in Dependencies.requirementsFile().read_text(encoding="utf-8").splitlines()]
    declared = [line for line in lines if line and not line.startswith("#")]
    provided = {_name(n) for n in Dependencies.SLICER_PROVIDED}
    module = Dependencies.engineRequirements()
    assert module == [r for r in declared if _name(r) not in provided]  # same text, same version bounds
    assert "torch" in {_name(r) for r in module} and not {_name(r) for r in module} & provided
    # The format of slicer.packaging.load_requirements: comments, blank lines and pip options skipped.
    custom = tmp_path / "requirements.txt"
    custom.write_text("# comment\n\n-c constraints.txt\nnibabel>=5\nnumpy>=1.24\n", encoding="utf-8")
    assert Dependencies.engineRequirements(custom) == ["nibabel>=5"]


def test_missing_requirements_sees_versions():
    assert Dependencies.missingRequirements(("numpy>=1.0",)) == []
    assert Dependencies.missingRequirements(("numpy>=999",)) == ["numpy>=999"]
    assert Dependencies.missingRequirements(("no-such-distribution-anomalyseg>=1",)) == [
        "no-such-distribution-anomalyseg>=1"]
    constraints = Dependencies.slicerProvidedConstraints().splitlines()
    assert any(line.startswith("numpy==") for line in constraints)
    assert any(line.lower().startswith("simpleitk==") for line in constraints)


@pytest.mark.parametrize("cmake_file", ["CMakeLists.txt", "AnomalySeg/CMakeLists.txt", "AnomalySegLib/CMakeLists.txt"])
def test_cmake_files_have_balanced_parentheses(cmake_file):
    text = re.sub(r"\"(?:[^\"\\]|\\.)*\"|#[^\n]*", "", (REPO / cmake_file).read_text(encoding="utf-8"))
    depth = 0
    for character in text:
        depth += {"(": 1, ")": -1}.get(character, 0)
        assert depth >= 0
    assert depth == 0


def test_module_helpers_import_with_only_what_slicer_ships():
    """Slicer loads the module before the engine's packages are installed: its imports must not need them."""
    code = textwrap.dedent(f"""
        import importlib.abc, sys
        ENGINE_ONLY = {{"torch", "monai", "tqdm", "nibabel", "slicerio", "safetensors", "matplotlib", "einops"}}

        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ENGINE_ONLY:
                    raise ImportError(f"{{name}} is not installed in Slicer yet")

        sys.meta_path.insert(0, Block())
        sys.path.insert(0, {str(REPO / "AnomalySeg")!r})
        for name in ("AnomalySegLib.progress", "AnomalySegLib.resources", "AnomalySegModuleLib.Results",
                     "AnomalySegModuleLib.Dependencies", "AnomalySegModuleLib.InferenceProcess",
                     "AnomalySegModuleLib.Findings", "AnomalySegModuleLib.Models",
                     "AnomalySegModuleLib.SceneGlue", "AnomalySegModuleLib.SegmentationRun"):
            importlib.import_module(name)
        from AnomalySegLib.progress import parse_progress_line
        assert parse_progress_line('{{"event": "done"}}').event == "done"
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, encoding="utf-8", cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
