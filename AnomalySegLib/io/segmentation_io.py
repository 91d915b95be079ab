"""Write and read 3D Slicer segmentation files (``.seg.nrrd``) with slicerio.

A segmentation is stored as a label volume plus per-segment metadata (name, colour, label value,
DICOM terminology), which Slicer shows as a Segmentation node. Array orders differ: SimpleITK arrays
are ``[k, j, i]`` and slicerio's are ``[i, j, k]``; both use LPS physical coordinates (mm), so only
the axis order is converted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import slicerio
from slicerio.segmentation import terminology_entry_to_string

from AnomalySegLib.errors import InputError
from AnomalySegLib.io.atomic import atomic_output

log = logging.getLogger(__name__)

SEGMENTATION_SUFFIX = ".seg.nrrd"

Code = tuple[str, str, str]
"""A coded concept: (coding scheme designator, code value, code meaning), e.g. ``("SCT", "4147007", "Mass")``."""


@dataclass(frozen=True)
class Terminology:
    """A Slicer terminology entry (DICOM coded category, type and anatomic region of a segment)."""

    category: Code
    type: Code
    anatomic_region: Code | None = None
    type_modifier: Code | None = None
    anatomic_region_modifier: Code | None = None
    context_name: str = "Segmentation category and type - 3D Slicer General Anatomy list"
    anatomic_context_name: str = "Anatomic codes - DICOM master list"

    def to_slicerio(self) -> dict:
        """The dict form slicerio reads and writes (``contextName``, ``category``, ``type``, ...)."""
        entry: dict = {"contextName": self.context_name, "category": list(self.category), "type": list(self.type)}
        if self.type_modifier:
            entry["typeModifier"] = list(self.type_modifier)
        if self.anatomic_region:
            entry["anatomicContextName"] = self.anatomic_context_name
            entry["anatomicRegion"] = list(self.anatomic_region)
            if self.anatomic_region_modifier:
                entry["anatomicRegionModifier"] = list(self.anatomic_region_modifier)
        return entry

    @classmethod
    def from_slicerio(cls, entry: dict) -> Terminology:
        """Inverse of :meth:`to_slicerio`."""

        def code(key: str) -> Code | None:
            value = entry.get(key)
            return tuple(value) if value and any(value) else None  # type: ignore[return-value]

        context_names = {field_name: entry[key] for field_name, key in
                         (("context_name", "contextName"), ("anatomic_context_name", "anatomicContextName"))
                         if entry.get(key)}
        return cls(category=code("category") or ("", "", ""), type=code("type") or ("", "", ""),
                   anatomic_region=code("anatomicRegion"), type_modifier=code("typeModifier"),
                   anatomic_region_modifier=code("anatomicRegionModifier"), **context_names)

    def to_string(self) -> str:
        """The ``TerminologyEntry`` tag string Slicer stores (``context~category~type~...``)."""
        return terminology_entry_to_string(self.to_slicerio())


#: docs/design.md, "The engine and the Slicer module": a morphologically altered structure (mass) in the brain.
ANOMALY_TERMINOLOGY = Terminology(
    category=("SCT", "49755003", "Morphologically Altered Structure"),
    type=("SCT", "4147007", "Mass"),
    anatomic_region=("SCT", "12738006", "Brain"),
)


@dataclass(frozen=True)
class SegmentDescription:
    """How one label value of a label image appears in Slicer.

    Attributes:
        name: segment name shown in Slicer.
        color: RGB, each in [0, 1].
        label_value: voxel value of this segment in the label image (≥ 1).
        terminology: coded meaning, or ``None``.
    """

    name: str
    color: tuple[float, float, float]
    label_value: int = 1
    terminology: Terminology | None = field(default=None)


#: The default finding: one segment, label value 1, orange (unlike the usual tissue colours).
ANOMALY_SEGMENT = SegmentDescription(name="Anomaly", color=(1.0, 0.4, 0.0), label_value=1,
                                     terminology=ANOMALY_TERMINOLOGY)


def write_segmentation(labels: sitk.Image, path: str | Path,
                       segments: tuple[SegmentDescription, ...] | list[SegmentDescription] = (ANOMALY_SEGMENT,),
                       overwrite: bool = False) -> Path:
    """Write a label image as a ``.seg.nrrd`` file in the label image's geometry, atomically.

    Args:
        labels: scalar 3D image with integer values; voxels equal to a segment's ``label_value``
            belong to it, 0 is background. A binary mask (0/1) fits the default segment.
        path: output file, ending in ``.seg.nrrd``.
        segments: one description per label value (label values unique and ≥ 1). A segment may be
            empty (no voxel carries its value); Slicer then shows an empty segment.
        overwrite: replace an existing file.

    Raises:
        InputError: ``path`` does not end in ``.seg.nrrd``.
        OutputExistsError: ``path`` exists and ``overwrite`` is false.
        ValueError: ``labels`` is not a 3D integer image, or holds values no segment describes.
    """
    path = Path(path)
    if not path.name.lower().endswith(SEGMENTATION_SUFFIX):
        raise InputError(path, f"a segmentation file name must end in {SEGMENTATION_SUFFIX}")
    voxels_kji = _integer_labels(labels)
    _check_segments(voxels_kji, segments)
    dtype = np.uint8 if max(s.label_value for s in segments) <= np.iinfo(np.uint8).max else np.uint16
    voxels_ijk = voxels_kji.astype(dtype).transpose(2, 1, 0)  # F-contiguous [i, j, k]
    segmentation = slicerio.create_segmentation(voxels_ijk.shape, ijk_to_lps(labels), dtype=dtype)
    segmentation["voxels"] = voxels_ijk
    segmentation["containedRepresentationNames"] = ["Binary labelmap"]
    segmentation["masterRepresentation"] = "Binary labelmap"
    segmentation["segments"] = [_segment_metadata(description, voxels_ijk) for description in segments]
    with atomic_output(path, overwrite) as temp_path:
        slicerio.write_segmentation(str(temp_path), segmentation)
    return path


def read_segmentation(path: str | Path) -> tuple[sitk.Image, list[SegmentDescription]]:
    """Read a ``.seg.nrrd`` (Slicer or ours) as a label image and its segment descriptions.

    Segments stored in several layers (Slicer does this when segments overlap) are merged into one
    label image with label values 1, 2, ... in segment order; where segments overlap the later
    one wins (a warning is logged).

    Raises:
        InputError: the file is missing or not a readable segmentation.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "does not exist" if not path.exists() else "is not a file")
    try:
        segmentation = slicerio.read_segmentation(str(path))
    except Exception as error:  # slicerio/pynrrd raise assorted exception types for bad files
        raise InputError(path, f"is not a readable segmentation ({error})") from error
    voxels = np.asarray(segmentation["voxels"])
    segments = segmentation.get("segments", [])
    if voxels.ndim == 4:
        voxels, segments = _merge_layers(path, voxels, segments)
    elif voxels.ndim != 3:
        raise InputError(path, f"holds a {voxels.ndim}D array; a 3D segmentation is needed")
    labels = sitk.GetImageFromArray(np.ascontiguousarray(voxels.transpose(2, 1, 0)))
    _set_geometry(labels, np.asarray(segmentation["ijkToLPS"], dtype=float))
    return labels, [_segment_description(segment) for segment in segments]


def ijk_to_lps(image: sitk.Image) -> np.ndarray:
    """The 4×4 matrix mapping voxel index (i, j, k) of ``image`` to LPS coordinates (mm)."""
    matrix = np.eye(4)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    matrix[:3, :3] = direction @ np.diag(image.GetSpacing())
    matrix[:3, 3] = image.GetOrigin()
    return matrix


def _set_geometry(image: sitk.Image, ijk_to_lps_matrix: np.ndarray) -> None:
    columns = ijk_to_lps_matrix[:3, :3]
    spacing = np.linalg.norm(columns, axis=0)
    image.SetSpacing(tuple(float(value) for value in spacing))
    image.SetDirection(tuple(float(value) for value in (columns / spacing).ravel()))
    image.SetOrigin(tuple(float(value) for value in ijk_to_lps_matrix[:3, 3]))


def _integer_labels(labels: sitk.Image) -> np.ndarray:
    """The voxels of ``labels`` as a ``[k, j, i]`` array view, after checking they are 3D whole numbers."""
    if labels.GetDimension() != 3 or labels.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError(f"labels must be a scalar 3D image, not {labels.GetDimension()}D with "
                         f"{labels.GetNumberOfComponentsPerPixel()} components per voxel")
    voxels = sitk.GetArrayViewFromImage(labels)
    if not np.issubdtype(voxels.dtype, np.integer) and not np.all(voxels == np.round(voxels)):
        raise ValueError("labels must hold whole numbers (label values)")
    return voxels


def _check_segments(voxels: np.ndarray, segments: tuple[SegmentDescription, ...] | list[SegmentDescription]) -> None:
    if not segments:
        raise ValueError("at least one segment description is needed")
    label_values = [segment.label_value for segment in segments]
    if len(set(label_values)) != len(label_values) or min(label_values) < 1 or max(label_values) > 65535:
        raise ValueError(f"segment label values must be unique and in 1..65535, got {label_values}")
    present = set(np.unique(voxels).tolist()) - {0}
    undescribed = sorted(present - set(label_values))
    if undescribed:
        raise ValueError(f"label image holds values {undescribed} that no segment describes")


def _segment_metadata(description: SegmentDescription, voxels_ijk: np.ndarray) -> dict:
    mask = voxels_ijk == description.label_value
    if mask.any():
        indices = np.nonzero(mask)
        extent = [int(bound) for axis in indices for bound in (axis.min(), axis.max())]
    else:
        extent = [0, -1, 0, -1, 0, -1]  # Slicer's notation for an empty segment
    metadata = {
        "id": f"Segment_{description.label_value}",
        "name": description.name,
        "color": [float(channel) for channel in description.color],
        "labelValue": description.label_value,
        "layer": 0,
        "extent": extent,
    }
    if description.terminology is not None:
        metadata["terminology"] = description.terminology.to_slicerio()
    return metadata


def _segment_description(segment: dict) -> SegmentDescription:
    terminology = segment.get("terminology")
    color = tuple(float(channel) for channel in segment.get("color", (0.5, 0.5, 0.5)))
    return SegmentDescription(name=segment.get("name", segment.get("id", "")), color=color,  # type: ignore[arg-type]
                              label_value=int(segment.get("labelValue", 1)),
                              terminology=Terminology.from_slicerio(terminology) if terminology else None)


def _merge_layers(path: Path, layers: np.ndarray, segments: list[dict]) -> tuple[np.ndarray, list[dict]]:
    """Layers ``[L, i, j, k]`` → one label array, relabelling segments 1, 2, ... in order."""
    merged = np.zeros(layers.shape[1:], dtype=np.uint16)
    relabelled = []
    for new_value, segment in enumerate(segments, start=1):
        member = layers[int(segment.get("layer", 0))] == int(segment.get("labelValue", 1))
        if np.any(merged[member]):
            log.warning("%s: segment %r overlaps earlier segments; the overlap goes to it", path,
                        segment.get("name"))
        merged[member] = new_value
        relabelled.append({**segment, "labelValue": new_value, "layer": 0})
    return merged, relabelled
