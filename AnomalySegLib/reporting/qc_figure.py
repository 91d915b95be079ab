"""The QC picture of one case: axial, coronal and sagittal views through the largest finding.

Columns: input, pseudo-healthy reconstruction, anomaly map over the input, mask contour over the input.
Views are shown in radiological convention (patient right on the image's left, superior up, anterior
up in axial views) whatever the file's orientation, with the physical aspect ratio.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

VIEWS = ("axial", "coronal", "sagittal")
COLUMNS = ("input", "reconstruction", "anomaly map", "finding")


def render_qc_figure(
    image: sitk.Image,
    recon: sitk.Image,
    score_map: sitk.Image,
    mask: sitk.Image,
    center_index: tuple[int, int, int] | None,
    title: str = "",
    threshold: float | None = None,
) -> Figure:
    """A 3×4 figure of the four volumes (same native grid) through ``center_index`` (i, j, k).

    ``center_index`` ``None`` (nothing found) centres the views on the volume. ``threshold``, when given,
    makes map values below it transparent, as in the Slicer overlay.
    """
    volumes = [_to_lps_array(v) for v in (image, recon, score_map)]
    mask_lps = _to_lps_array(mask)
    spacing = sitk.DICOMOrient(image, "LPS").GetSpacing()
    center_lps = _center_in_lps(image, center_index)
    low, high = np.percentile(volumes[0], [0.5, 99.5])

    figure = Figure(figsize=(12, 9), dpi=100, facecolor="black")
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(VIEWS), len(COLUMNS))
    for row, view in enumerate(VIEWS):
        planes = [_plane(v, view, center_lps) for v in volumes]
        mask_plane = _plane(mask_lps, view, center_lps)
        aspect = _aspect(view, spacing)
        for column, name in enumerate(COLUMNS):
            ax = axes[row, column]
            ax.set_axis_off()
            base = planes[1] if name == "reconstruction" else planes[0]
            ax.imshow(base, cmap="gray", vmin=low, vmax=high, aspect=aspect, interpolation="nearest")
            if name == "anomaly map":
                floor = threshold if threshold is not None else 0.0
                overlay = np.ma.masked_less_equal(planes[2], floor)
                ax.imshow(overlay, cmap="hot", vmin=floor, vmax=max(float(volumes[2].max()), floor + 1e-6),
                          alpha=0.7, aspect=aspect, interpolation="nearest")
            if name == "finding" and mask_plane.any():
                ax.contour(mask_plane.astype(float), levels=[0.5], colors="lime", linewidths=1.0)
            if row == 0:
                ax.set_title(name, color="white", fontsize=11)
        axes[row, 0].text(-0.05, 0.5, view, transform=axes[row, 0].transAxes, rotation=90,
                          color="white", ha="right", va="center", fontsize=11)
    if title:
        figure.suptitle(title, color="white", fontsize=12)
    figure.tight_layout()
    return figure


def save_png(figure: Figure, path: str | Path) -> None:
    """Write ``figure`` as PNG to ``path`` (the caller takes care of atomic replacement)."""
    figure.savefig(str(path), format="png", facecolor=figure.get_facecolor())


def _to_lps_array(volume: sitk.Image) -> np.ndarray:
    """Array [k, j, i] of ``volume`` reoriented (axes permuted and flipped, no interpolation) so that
    i→Left, j→Posterior, k→Superior."""
    return sitk.GetArrayFromImage(sitk.DICOMOrient(volume, "LPS")).astype(np.float32)


def _center_in_lps(image: sitk.Image, center_index: tuple[int, int, int] | None) -> tuple[int, int, int]:
    """The (i, j, k) index of the view centre in the LPS-reoriented grid."""
    oriented = sitk.DICOMOrient(image, "LPS")
    if center_index is None:
        return tuple(s // 2 for s in oriented.GetSize())
    point = image.TransformIndexToPhysicalPoint([int(c) for c in center_index])
    index = oriented.TransformPhysicalPointToIndex(point)
    return tuple(int(np.clip(c, 0, s - 1)) for c, s in zip(index, oriented.GetSize()))


def _plane(array_kji: np.ndarray, view: str, center_ijk: tuple[int, int, int]) -> np.ndarray:
    i, j, k = center_ijk
    if view == "axial":
        return array_kji[k]  # rows: anterior→posterior, columns: right→left
    if view == "coronal":
        return np.flipud(array_kji[:, j, :])  # rows: superior→inferior
    return np.flipud(array_kji[:, :, i])  # sagittal; columns: anterior→posterior


def _aspect(view: str, spacing_ijk: tuple[float, float, float]) -> float:
    """Display aspect (row spacing / column spacing) of a view, from the LPS grid's spacing."""
    si, sj, sk = spacing_ijk
    return {"axial": sj / si, "coronal": sk / si, "sagittal": sk / sj}[view]
