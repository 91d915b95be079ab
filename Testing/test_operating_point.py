"""The operating-point rule (threshold, rim erosion, median, minimum finding size in ml) and the findings
table: hand-checked arrays, and real scan geometries of different voxel sizes."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from AnomalySegLib.reporting.findings import FINDINGS_COLUMNS, findings_csv, summarize_findings
from AnomalySegLib.scoring.operating_point import (
    RAW,
    THRESHOLD_PRESETS,
    CleanUp,
    OperatingPoint,
    apply_operating_point,
    median_window,
    operating_point_from_scoring,
    rim_eroded_region,
    voxel_size_zyx,
)


def test_raw_rule_is_the_strict_threshold():
    score = np.array([[[0.2, 0.5, 0.50001, 0.9]]], dtype=np.float32)
    assert apply_operating_point(score, (1, 1, 1), 0.5).tolist() == [[[False, False, True, True]]]


def test_min_finding_size_is_in_ml_hand_checked():
    score = np.zeros((6, 10, 10), dtype=np.float32)
    score[1:4, 1:4, 1:4] = 0.9  # 27 voxels
    score[5, 8, 8] = 0.9  # 1 voxel
    score[0, 8:10, 0] = 0.9  # 2 voxels
    # 2 mm voxels: 0.008 ml each; 27 voxels = 0.216 ml, 2 voxels = 0.016 ml, 1 voxel = 0.008 ml.
    kept = apply_operating_point(score, (2, 2, 2), 0.5, CleanUp(min_finding_ml=0.016))
    assert kept.sum() == 29 and not kept[5, 8, 8]
    assert apply_operating_point(score, (2, 2, 2), 0.5, CleanUp(min_finding_ml=0.2)).sum() == 27
    assert apply_operating_point(score, (1, 1, 1), 0.5, CleanUp(min_finding_ml=0.2)).sum() == 0  # 0.027 ml


def test_rim_erosion_is_in_mm():
    score = np.zeros((21, 21, 21), dtype=np.float32)
    score[1:20, 1:20, 1:20] = 0.2  # the scored region: a 19-voxel cube
    score[1:20, 1:20, 1:20][:, :, :3] = 0.9  # a bright slab on its rim (x = 1..3)
    score[8:13, 8:13, 8:13] = 0.9  # a finding deep inside
    rule = CleanUp(rim_erosion_mm=4.0)
    at_1mm = apply_operating_point(score, (1, 1, 1), 0.5, rule)
    assert at_1mm[8:13, 8:13, 8:13].all()
    assert not at_1mm[:, :, :4].any()  # x ≤ 3 is within 4 mm of the region's edge
    # With 2 mm voxels the same 4 mm is two voxels: the slab (x = 1..3) keeps only x = 3.
    at_2mm = apply_operating_point(score, (2, 2, 2), 0.5, rule)
    assert at_2mm[10, 10, 3] and not at_2mm[10, 10, 2]
    region = rim_eroded_region(score, (2, 2, 2), 4.0)
    assert np.array_equal(apply_operating_point(score, (2, 2, 2), 0.5, rule, region), at_2mm)


def test_rim_erosion_ignores_zero_holes_inside_the_brain():
    score = np.full((15, 15, 15), 0.9, dtype=np.float32)
    score[0], score[-1], score[:, 0], score[:, -1], score[:, :, 0], score[:, :, -1] = 0, 0, 0, 0, 0, 0
    score[7, 7, 7] = 0.0  # a saturated voxel inside: no hole for the erosion to grow from
    mask = apply_operating_point(score, (1, 1, 1), 0.5, CleanUp(rim_erosion_mm=2.0))
    assert mask[7, 7, 6] and mask[7, 6, 7]


def test_median_removes_speckle_and_keeps_blobs():
    rng = np.random.default_rng(0)
    score = (rng.random((30, 30, 30)) < 0.02).astype(np.float32)  # isolated speckle
    score[10:20, 10:20, 10:20] = 1.0
    mask = apply_operating_point(score, (1, 1, 1), 0.5, CleanUp(median_mm=3.0))
    assert mask[11:19, 11:19, 11:19].all()
    assert mask.sum() < 1000 and not mask[:8].any()
    assert median_window((1.0, 0.5, 2.0), 3.0) == (3, 5, 1)


def test_operating_point_from_the_scoring_section():
    section = {"thresholds": {"val": 0.4, "fpr1": 0.7}, "min_finding_ml": 0.5, "rim_erosion_mm": 2}
    point = operating_point_from_scoring(section)
    assert point == OperatingPoint(0.4, "val", CleanUp(rim_erosion_mm=2.0, min_finding_ml=0.5))
    assert operating_point_from_scoring(section, "0.3").source == "user"
    assert point.to_info() == {"threshold": 0.4, "source": "val", "rim_erosion_mm": 2.0, "median_mm": 0.0,
                               "min_finding_ml": 0.5}
    with pytest.raises(KeyError):
        operating_point_from_scoring(section, "fpr5")
    with pytest.raises(ValueError, match="min_finding_ml"):
        CleanUp.from_scoring({"min_component_voxels": 10})
    with pytest.raises(ValueError, match="rim_erosion_mm"):
        CleanUp(rim_erosion_mm=-1)
    assert CleanUp.from_scoring({}) == RAW and RAW.is_raw
    assert THRESHOLD_PRESETS[0] == "val"


def _ball_map(reference: sitk.Image, centres_mm: list[tuple[float, float, float]], radii_mm: list[float]) -> sitk.Image:
    """A score map on ``reference``'s grid: 0.9 inside balls (physical centres and radii), 0.2 elsewhere."""
    size = reference.GetSize()
    k, j, i = np.meshgrid(*(np.arange(n) for n in reversed(size)), indexing="ij")
    index = np.stack([i.ravel(), j.ravel(), k.ravel()], axis=1).astype(np.float64)
    direction = np.asarray(reference.GetDirection()).reshape(3, 3) @ np.diag(reference.GetSpacing())
    points = index @ direction.T + np.asarray(reference.GetOrigin())
    score = np.full(len(points), 0.2, dtype=np.float32)
    for centre, radius in zip(centres_mm, radii_mm):
        score[np.linalg.norm(points - np.asarray(centre), axis=1) <= radius] = 0.9
    image = sitk.GetImageFromArray(score.reshape(tuple(reversed(size))))
    image.CopyInformation(reference)
    return image


@pytest.mark.parametrize("scan", ["mrbraintumor1", "itk_kmeans_t1"])
def test_min_size_is_honoured_in_ml_on_scans_of_different_voxel_size(scan, real_data):
    """Balls of 0.3 ml and 2.1 ml on two real scan grids (about 1 mm and 2×2×3 mm voxels): a 1 ml minimum
    drops the small one and keeps the large one on both (a voxel-count minimum could not do both)."""
    reference = sitk.ReadImage(str(real_data(scan)))
    centre = np.asarray(reference.TransformContinuousIndexToPhysicalPoint([s / 2 for s in reference.GetSize()]))
    small_r, large_r = (3 * 0.3e3 / (4 * np.pi)) ** (1 / 3), (3 * 2.1e3 / (4 * np.pi)) ** (1 / 3)  # mm
    score_map = _ball_map(reference, [tuple(centre - [30, 0, 0]), tuple(centre + [30, 0, 0])], [small_r, large_r])
    spacing = voxel_size_zyx(reference.GetSpacing())
    mask = apply_operating_point(sitk.GetArrayViewFromImage(score_map), spacing, 0.5, CleanUp(min_finding_ml=1.0))
    mask_image = sitk.GetImageFromArray(mask.astype(np.uint8))
    mask_image.CopyInformation(reference)
    findings = summarize_findings(mask_image, score_map)
    assert findings.components == 1
    assert findings.volume_ml == pytest.approx(2.1, rel=0.25)
    raw = apply_operating_point(sitk.GetArrayViewFromImage(score_map), spacing, 0.5, RAW)
    assert raw.sum() > mask.sum()


def test_findings_table_matches_the_mask(real_data):
    """Two balls on a real (oblique-free, anisotropic) scan grid: the table's volumes, centres (RAS) and
    slice ranges agree with the mask and with the balls' geometry."""
    reference = sitk.ReadImage(str(real_data("itk_kmeans_t1")))  # 2×2×3 mm
    centre = np.asarray(reference.TransformContinuousIndexToPhysicalPoint([s / 2 for s in reference.GetSize()]))
    big, small = tuple(centre + [20, 10, 0]), tuple(centre - [25, 0, 6])
    score_map = _ball_map(reference, [big, small], [14.0, 8.0])
    mask = sitk.Cast(score_map > 0.5, sitk.sitkUInt8)
    findings = summarize_findings(mask, score_map)
    array = sitk.GetArrayFromImage(mask) > 0
    voxel_ml = np.prod(reference.GetSpacing()) / 1000
    assert findings.components == len(findings.table) == 2
    assert [f.rank for f in findings.table] == [1, 2]
    assert sum(f.volume_ml for f in findings.table) == pytest.approx(array.sum() * voxel_ml)
    first, second = findings.table
    assert first.volume_ml > second.volume_ml
    assert first.volume_ml == pytest.approx(4 / 3 * np.pi * 14.0**3 / 1000, rel=0.15)
    lps_to_ras = np.array([-1, -1, 1])
    np.testing.assert_allclose(first.centroid_ras_mm, np.asarray(big) * lps_to_ras, atol=1.5)
    np.testing.assert_allclose(second.centroid_ras_mm, np.asarray(small) * lps_to_ras, atol=1.5)
    assert first.extent_mm[0] == pytest.approx(28.0, abs=4.0)
    assert first.max_score == pytest.approx(0.9) and first.mean_score == pytest.approx(0.9)
    slices = np.nonzero(array.any(axis=(1, 2)))[0]
    assert min(f.slice_range[0] for f in findings.table) == slices.min()
    assert max(f.slice_range[1] for f in findings.table) == slices.max()
    records = findings.records()
    assert list(records[0]) == list(FINDINGS_COLUMNS)
    lines = findings_csv(findings).splitlines()
    assert lines[0] == ",".join(FINDINGS_COLUMNS) and len(lines) == 3
    assert "table" not in findings.as_row()


def test_search_takes_the_best_dice_within_the_healthy_limit():
    """Lesion maps score their lesion 0.8 plus scattered single-voxel speckle at 0.9; the healthy map has
    the same speckle (0.9) and nothing else. With 1 mm voxels and a 0.02 ml healthy limit, only a
    minimum finding size above one voxel keeps the speckle out; the best Dice among those is the clean
    lesion."""
    from AnomalySegLib.operating_point_search import SearchRule, search_operating_point

    rng = np.random.default_rng(1)
    shape = (20, 20, 20)
    speckle = np.zeros(shape, dtype=bool)
    speckle[tuple(rng.integers(2, 18, size=(2, 40))) + (rng.integers(13, 19, size=40),)] = True  # away from lesions
    lesion_scores, lesion_labels = [], []
    for offset in (3, 9):
        truth = np.zeros(shape, dtype=bool)
        truth[offset:offset + 5, 5:10, 5:10] = True
        score = np.full(shape, 0.1, dtype=np.float32)
        score[truth] = 0.8
        score[speckle & ~truth] = 0.9
        lesion_scores.append(score)
        lesion_labels.append(truth)
    healthy = np.full(shape, 0.1, dtype=np.float32)
    healthy[speckle] = 0.9
    rule = SearchRule(max_healthy_ml=0.02, max_healthy_findings=5, rim_erosion_mm=(0.0,), median_mm=(0.0,),
                      min_finding_ml=(0.0, 0.005, 0.05))
    result = search_operating_point(lesion_scores, lesion_labels, {"healthy": healthy}, (1, 1, 1), rule)
    assert result.limit_met
    assert result.clean_up == CleanUp(min_finding_ml=0.005) or result.clean_up == CleanUp(min_finding_ml=0.05)
    assert result.mean_dice == pytest.approx(1.0)
    assert result.healthy["healthy"] == {"flagged_ml": 0.0, "findings": 0}
    assert 0.1 <= result.threshold < 0.8
