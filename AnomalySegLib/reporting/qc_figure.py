"""The QC picture of one case: axial, coronal and sagittal views through the largest finding.

Columns: input, pseudo-healthy reconstruction, anomaly map over the input, mask contour over the input.
The largest findings are numbered as in the findings table (where a view cuts them), the region that
was scored (the model grid's box) is outlined dashed, and the domain warnings are printed below.
Views are shown in radiological convention (patient right on the image's left, superior up, anterior
up in axial views) whatever the file's orientation, with the physical aspect ratio.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from AnomalySegLib.reporting.findings import Finding

VIEWS = ("axial", "coronal", "sagittal")
COLUMNS = ("input", "reconstruction", "anomaly map", "finding")
#: Findings numbered on the picture (the largest ones; the findings table lists all).
NUMBERED_FINDINGS = 5
#: Patient axis (0 = L/R, 1 = P/A, 2 = S) normal to each view.
_VIEW_NORMAL = {"axial": 2, "coronal": 1, "sagittal": 0}


def render_qc_figure(
    image: sitk.Image,
    recon: sitk.Image,
    score_map: sitk.Image,
    mask: sitk.Image,
    center_index: tuple[int, int, int] | None,
    title: str = "",
    threshold: float | None = None,
    warnings: Sequence[str] = (),
    findings: Sequence[Finding] = (),
    scored_region: sitk.Image | None = None,
) -> Figure:
    """A 3×4 figure of the four volumes (same native grid) through ``center_index`` (i, j, k).

    ``center_index`` ``None`` (nothing found) centres the views on the volume. ``threshold``, when given,
    makes map values below it transparent, as in the Slicer overlay. ``warnings`` (the domain check's,
    in its words) are printed under the views; the first :data:`NUMBERED_FINDINGS` of ``findings`` (the
    findings table) are numbered where a view cuts them; ``scored_region`` (0/1, same grid) is outlined.
    """
    volumes = [_to_lps_array(v) for v in (image, recon, score_map)]
    mask_lps = _to_lps_array(mask)
    region_lps = None if scored_region is None else _to_lps_array(scored_region)
    oriented = sitk.DICOMOrient(image, "LPS")
    spacing = oriented.GetSpacing()
    center_lps = _center_in_lps(image, center_index)
    low, high = np.percentile(volumes[0], [0.5, 99.5])

    figure = Figure(figsize=(12, 9 + 0.25 * len(warnings)), dpi=100, facecolor="black")
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
            if name in ("anomaly map", "finding") and region_lps is not None:
                region_plane = _plane(region_lps, view, center_lps)
                if region_plane.any() and not region_plane.all():
                    ax.contour(region_plane, levels=[0.5], colors="deepskyblue", linewidths=0.8,
                               linestyles="dashed")
            if name == "finding":
                _number_findings(ax, findings[:NUMBERED_FINDINGS], oriented, view, center_lps)
            if row == 0:
                ax.set_title(name, color="white", fontsize=11)
        axes[row, 0].text(-0.05, 0.5, view, transform=axes[row, 0].transAxes, rotation=90,
                          color="white", ha="right", va="center", fontsize=11)
    if title:
        figure.suptitle(title, color="white", fontsize=12)
    bottom = 0.0
    if warnings:
        lines = [line for warning in warnings for line in textwrap.wrap(f"⚠ {warning}", 150)]
        bottom = min(0.4, (0.3 + 0.22 * len(lines)) / figure.get_figheight())
        figure.text(0.01, 0.01, "\n".join(lines), color="orange", fontsize=10, va="bottom", ha="left")
    top = 0.9 if title and "\n" in title else 0.95 if title else 1.0
    figure.tight_layout(rect=(0.0, bottom, 1.0, top))
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


def _number_findings(ax, findings: Sequence[Finding], oriented: sitk.Image, view: str,
                     center_ijk: tuple[int, int, int]) -> None:
    """Write each finding's rank at its centre on a view, if the view's plane cuts its extent."""
    normal = _VIEW_NORMAL[view]
    plane_point = oriented.TransformIndexToPhysicalPoint([int(c) for c in center_ijk])  # LPS
    size = oriented.GetSize()
    for finding in findings:
        r, a, s = finding.centroid_ras_mm
        centre_lps = (-r, -a, s)
        if abs(centre_lps[normal] - plane_point[normal]) > finding.extent_mm[normal] / 2:
            continue
        index = oriented.TransformPhysicalPointToContinuousIndex(centre_lps)
        i, j, k = index
        # Display coordinates of _plane's image (column, row).
        if view == "axial":
            x, y = i, j
        elif view == "coronal":
            x, y = i, size[2] - 1 - k
        else:
            x, y = j, size[2] - 1 - k
        ax.text(x, y, str(finding.rank), color="yellow", fontsize=10, fontweight="bold", ha="center",
                va="center")


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
