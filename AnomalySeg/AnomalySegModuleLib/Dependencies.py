"""The engine's Python packages inside Slicer: what is missing, and installing it on request.

Nothing here runs at import time. The requirements are read from the engine's one list,
``AnomalySegLib/requirements.txt`` (which ``pyproject.toml`` also reads), in the format of
``slicer.packaging.load_requirements``. torch is installed through the PyTorch extension's logic (it
picks the build that fits the GPU and driver); the other requirements with pip, constrained to the
versions of the packages Slicer ships itself (:data:`SLICER_PROVIDED`) so that these are never
replaced or even listed as missing.
"""

from __future__ import annotations

import importlib.metadata
import re
import tempfile
from pathlib import Path

#: Installed through the PyTorch extension, not pip.
TORCH = "torch"
#: Shipped with Slicer; never installed or upgraded by this module (pinned while installing).
SLICER_PROVIDED = ("SimpleITK", "numpy", "requests")


def requirementsFile() -> Path:
    """``AnomalySegLib/requirements.txt``: beside the engine, in a checkout and in the extension."""
    import AnomalySegLib

    return Path(AnomalySegLib.__file__).resolve().parent / "requirements.txt"


def engineRequirements(path: Path | None = None) -> list[str]:
    """The engine's requirements (pip syntax) that the module may install: all but :data:`SLICER_PROVIDED`.

    Reads ``path`` (default :func:`requirementsFile`) as ``slicer.packaging.load_requirements``
    does: one requirement a line; blank lines, ``#`` comments and ``-`` options are skipped.
    """
    path = requirementsFile() if path is None else path
    provided = {_normalized(name) for name in SLICER_PROVIDED}
    requirements = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "-")) and _normalized(_name(line)) not in provided:
            requirements.append(line)
    return requirements


def missingRequirements(requirements: list[str] | tuple[str, ...] | None = None) -> list[str]:
    """The requirements (pip syntax; default :func:`engineRequirements`) whose distribution is absent
    or older than required."""
    from packaging.requirements import Requirement

    missing = []
    for text in engineRequirements() if requirements is None else requirements:
        requirement = Requirement(text)
        try:
            installed = importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(text)
            continue
        if not requirement.specifier.contains(installed, prereleases=True):
            missing.append(text)
    return missing


def slicerProvidedConstraints() -> str:
    """pip constraints pinning the installed versions of :data:`SLICER_PROVIDED` (one per line)."""
    lines = []
    for name in SLICER_PROVIDED:
        try:
            lines.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return "\n".join(lines) + "\n"


def installRequirements(requirements: list[str], askConfirmation: bool) -> bool:
    """Install ``requirements`` into Slicer's Python; ``False`` if the user declined.

    Runs only inside the Slicer application (uses ``slicer.util`` and the PyTorch extension).

    Raises:
        RuntimeError: torch is needed but the PyTorch extension is not installed, or it failed.
    """
    import slicer

    if not requirements:
        return True
    if askConfirmation and not slicer.util.confirmOkCancelDisplay(
            "AnomalySeg needs these Python packages, which are not installed yet:\n\n"
            + "\n".join(requirements)
            + "\n\nInstall them now? This downloads several hundred MB and may take minutes.",
            windowTitle="AnomalySeg: install dependencies"):
        return False
    torchNeeded = [r for r in requirements if _name(r) == TORCH]
    if torchNeeded:
        _installTorch(torchNeeded[0])
    others = [r for r in requirements if _name(r) != TORCH]
    if others:
        with tempfile.TemporaryDirectory(prefix="AnomalySeg-pip-") as folder:
            constraints = Path(folder) / "slicer-provided.txt"
            constraints.write_text(slicerProvidedConstraints(), encoding="utf-8")
            if hasattr(slicer, "packaging"):  # Slicer >= 5.12: progress, restart prompt if needed
                from packaging.requirements import Requirement

                slicer.packaging.pip_ensure([Requirement(r) for r in others], constraints=constraints,
                                            prompt_install=False, requester="AnomalySeg", skip_in_testing=False)
            else:
                slicer.util.pip_install(["-c", str(constraints), *others])
    still = missingRequirements(tuple(requirements))
    if still:
        raise RuntimeError(f"installing Python packages failed; still missing: {', '.join(still)}")
    return True


def _installTorch(requirement: str) -> None:
    try:
        import PyTorchUtils
    except ModuleNotFoundError as error:
        raise RuntimeError("AnomalySeg needs the PyTorch extension to install torch: "
                           "install 'PyTorch' from the Extensions Manager, restart Slicer, try again") from error
    torchLogic = PyTorchUtils.PyTorchUtilsLogic()
    specifier = requirement[len(_name(requirement)):]
    if torchLogic.installTorch(askConfirmation=False, torchVersionRequirement=specifier) is None:
        raise RuntimeError(f"the PyTorch extension could not install {requirement}")


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=!~ ;]", requirement, maxsplit=1)[0]


def _normalized(name: str) -> str:
    """PEP 503 normalised distribution name (``SimpleITK`` → ``simpleitk``)."""
    return re.sub(r"[-_.]+", "-", name).lower()
