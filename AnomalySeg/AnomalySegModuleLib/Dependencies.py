"""The engine's Python packages inside Slicer: what is missing, and installing it on request.

Nothing here runs at import time. torch is installed through the PyTorch extension's logic (it
picks the build that fits the GPU and driver); the other requirements with pip, constrained to the
versions of the packages Slicer ships itself (SimpleITK, numpy, requests) so that these are never
replaced. The lists below mirror ``[project.dependencies]`` of ``pyproject.toml``
(``Testing/test_packaging.py`` checks that they agree).
"""

from __future__ import annotations

import importlib.metadata
import re
import tempfile
from pathlib import Path

TORCH_REQUIREMENT = "torch>=2.4"
#: Installed with pip when missing or too old.
ENGINE_REQUIREMENTS = (
    "monai[einops]>=1.5",
    "nibabel>=5",
    "scipy>=1.10",
    "scikit-learn>=1.3",
    "slicerio>=1.1",
    "safetensors>=0.4",
    "tqdm>=4.60",
    "matplotlib>=3.7",
)
#: Shipped with Slicer; never installed or upgraded by this module (pinned while installing).
SLICER_PROVIDED = ("SimpleITK", "numpy", "requests")


def missingRequirements(requirements: tuple[str, ...] = (TORCH_REQUIREMENT,) + ENGINE_REQUIREMENTS) -> list[str]:
    """The requirements (pip syntax) whose distribution is absent or older than required."""
    from packaging.requirements import Requirement

    missing = []
    for text in requirements:
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
    torchNeeded = [r for r in requirements if _name(r) == "torch"]
    if torchNeeded:
        _installTorch(torchNeeded[0])
    others = [r for r in requirements if _name(r) != "torch"]
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
