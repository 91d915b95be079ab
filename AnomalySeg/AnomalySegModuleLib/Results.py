"""The files ``anomalyseg segment`` writes for one case (the command's output contract)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


#: Role names of the engine's ``case_done`` ``outputs`` → attributes of :class:`ResultFiles`.
ENGINE_ROLES = {"recon": "reconstruction", "anomaly_map": "anomalyMap", "anomaly_mask": "anomalyMask",
                "segmentation": "segmentation", "qc": "qcPicture"}


@dataclass(frozen=True)
class ResultFiles:
    """Paths of one case's outputs in the output folder of ``anomalyseg segment``."""

    reconstruction: Path  # <case>_recon.nii.gz: pseudo-healthy reconstruction, native grid
    anomalyMap: Path  # <case>_anomaly_map.nii.gz: float anomaly score, native grid
    anomalyMask: Path  # <case>_anomaly_mask.nii.gz: thresholded score (0/1)
    segmentation: Path  # <case>_anomaly.seg.nrrd: the mask as a Slicer segmentation
    qcPicture: Path  # <case>_qc.png

    @classmethod
    def inFolder(cls, outputFolder: str | Path, caseId: str) -> ResultFiles:
        folder = Path(outputFolder)
        return cls(
            reconstruction=folder / f"{caseId}_recon.nii.gz",
            anomalyMap=folder / f"{caseId}_anomaly_map.nii.gz",
            anomalyMask=folder / f"{caseId}_anomaly_mask.nii.gz",
            segmentation=folder / f"{caseId}_anomaly.seg.nrrd",
            qcPicture=folder / f"{caseId}_qc.png",
        )

    @classmethod
    def fromOutputs(cls, outputs: dict[str, str], outputFolder: str | Path, caseId: str) -> ResultFiles:
        """The files the engine reported (``outputs`` of its ``case_done`` event: role → path); a role
        it did not report falls back to its name in ``outputFolder``."""
        default = cls.inFolder(outputFolder, caseId)
        reported = {attribute: Path(outputs[role]) for role, attribute in ENGINE_ROLES.items() if outputs.get(role)}
        return cls(**{name: reported.get(name, getattr(default, name)) for name in ENGINE_ROLES.values()})

    def missing(self, required: tuple[str, ...] = ("anomalyMap", "segmentation")) -> list[Path]:
        """The files among ``required`` (attribute names) that do not exist."""
        return [getattr(self, name) for name in required if not getattr(self, name).is_file()]
