"""Findings summary and QC picture on the real MRBrainTumor1 tumour label."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from PIL import Image

from AnomalySegLib.reporting.findings import summarize_findings
from AnomalySegLib.reporting.qc_figure import render_qc_figure, save_png


def _tumour(real_data) -> tuple[sitk.Image, sitk.Image]:
    image = sitk.ReadImage(str(real_data("mrbraintumor1")))
    tumour = sitk.ReadImage(str(real_data("mrbraintumor1_labels"))) == 9
    return image, tumour


def test_findings_of_tumour_plus_a_small_second_component(real_data):
    image, tumour = _tumour(real_data)
    mask = sitk.Image(tumour)
    mask[10:13, 10:13, 10:12] = 1  # 18 voxels far from the tumour: a second finding
    score_map = sitk.Cast(mask, sitk.sitkFloat32) * 0.8
    findings = summarize_findings(mask, score_map)

    voxel_ml = 0.9375 * 0.9375 * 1.4 / 1000
    tumour_voxels = int(sitk.GetArrayViewFromImage(tumour).sum())
    assert findings.components == 2
    assert np.isclose(findings.volume_ml, (tumour_voxels + 18) * voxel_ml, rtol=1e-3)
    assert np.isclose(findings.largest_component_ml, tumour_voxels * voxel_ml, rtol=1e-3)
    assert np.isclose(findings.max_score, 0.8) and np.isclose(findings.mean_score_in_finding, 0.8)
    # the centre lies inside the tumour
    assert tumour[findings.largest_center_index] == 1


def test_nothing_found_gives_zero_findings(real_data):
    image, tumour = _tumour(real_data)
    empty = tumour * 0
    findings = summarize_findings(empty, sitk.Cast(empty, sitk.sitkFloat32))
    assert findings.components == 0 and findings.volume_ml == 0 and findings.largest_center_index is None


def test_qc_picture_is_a_real_image_showing_the_finding(real_data, tmp_path):
    image, tumour = _tumour(real_data)
    score_map = sitk.SmoothingRecursiveGaussian(sitk.Cast(tumour, sitk.sitkFloat32), 2.0)
    center = summarize_findings(tumour, score_map).largest_center_index
    figure = render_qc_figure(image, image, score_map, tumour, center, title="MRBrainTumor1", threshold=0.2)
    path = tmp_path / "qc.png"
    save_png(figure, path)
    with Image.open(path) as png:
        assert png.format == "PNG" and png.size == (1200, 900)
        pixels = np.asarray(png.convert("RGB")).astype(int)
    hot = (pixels[..., 0] > 200) & (pixels[..., 2] < 80)  # the map's colour
    lime = (pixels[..., 1] > 200) & (pixels[..., 0] < 100) & (pixels[..., 2] < 100)  # the contour
    assert hot.sum() > 200 and lime.sum() > 50
