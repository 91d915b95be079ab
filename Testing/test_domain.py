"""The domain check (issue #11 items 1-2): real scans and clinical variants pass, non-brain input is refused.

Inputs are the fetched real scans and volumes made from them or from scratch (``domain_inputs.py``);
each goes through the real preprocessing and the check with the default model's ``"domain"`` section.
"""

from __future__ import annotations

import csv
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import SimpleITK as sitk

import domain_inputs
from AnomalySegLib.errors import InputError, ModelBundleError
from AnomalySegLib.io.volume_io import read_volume
from AnomalySegLib.pipeline import AnomalySegmenter, default_model_path
from AnomalySegLib.preprocessing.pipeline import preprocess_image
from AnomalySegLib.preprocessing.spec import PreprocessingSpec
from AnomalySegLib.quality.catalogue import MEASURES
from AnomalySegLib.quality.domain import DomainCheck, DomainReport
from AnomalySegLib.reporting.results_table import COLUMNS

REPOSITORY = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def default_description() -> dict:
    return json.loads((default_model_path() / "model.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def check(default_description) -> DomainCheck:
    """The default model's check, read from its committed ``"domain"`` section."""
    return DomainCheck.from_section(default_description["domain"], default_model_path())


def run_check(check: DomainCheck, image: sitk.Image, name: str) -> DomainReport:
    """The whole check as the engine runs it: header measures, real preprocessing, model-space measures."""
    report = check.before_preprocessing(image, name)
    case = preprocess_image(image, spec=PreprocessingSpec(), image_path=name)
    return check.after_preprocessing(case, report, name)


# --- accepted: the real scans (healthy and tumour), unflagged or flagged but never refused ---------

@pytest.mark.slow  # real preprocessing
@pytest.mark.parametrize("name", ["mrhead", "mrbraintumor1", "mrbraintumor2", "itk_kmeans_t1", "colin27_t1",
                                  "sri24_t1_brain", "papaya_sample_t1", "myconnectome_t1", "ds000240_t1"])
def test_real_brain_scans_pass(check, real_data, name):
    report = run_check(check, read_volume(real_data(name)), name)
    assert set(report.measures) == set(MEASURES)
    assert not any("slice thickness" in warning for warning in report.warnings)


@pytest.fixture(scope="module")
def segmenter() -> AnomalySegmenter:
    return AnomalySegmenter(device="cpu")


@pytest.mark.slow  # real preprocessing and the default model
@pytest.mark.parametrize("name, thickness_mm, flagged", [("mrbraintumor1", 5.0, False), ("mrhead", 7.5, True)])
def test_thick_slice_versions_pass_flagged_beyond_what_the_model_trained_on(segmenter, check, real_data, caplog,
                                                                           name, thickness_mm, flagged):
    """Through the engine entry point: processed; flagged (and the warning logged, so it reaches stderr) only
    beyond the thickest slices of the model's training variants (about 7 mm for the default model)."""
    assert (thickness_mm > check.limits["slice_thickness_mm"].warn[1]) == flagged
    image = domain_inputs.thick_slices(read_volume(real_data(name)), thickness_mm)
    assert max(image.GetSpacing()) == pytest.approx(thickness_mm)
    with caplog.at_level(logging.WARNING):
        prepared = segmenter.prepare(image, image_path=f"{name}_{thickness_mm}mm.nii.gz")
    report = prepared.domain
    assert report.measures["slice_thickness_mm"] == pytest.approx(thickness_mm)
    warnings = [warning for warning in report.warnings if warning.startswith(f"slice thickness {thickness_mm:.1f} mm")]
    assert len(warnings) == int(flagged)
    if flagged:
        assert any(warnings[0] in record.getMessage() for record in caplog.records if record.levelno == logging.WARNING)
        result = segmenter.finish(prepared, segmenter.resolve_threshold("val"))  # the warnings reach the result
        assert result.info.qc_warnings == report.warnings
        assert result.info.domain == report.measures


# --- refused: not a brain MRI, or not usable as one -----------------------------------------------

def test_noise_refused_before_preprocessing(check):
    with pytest.raises(InputError, match="noise.*correlation of neighbouring voxels"):
        check.before_preprocessing(domain_inputs.white_noise(), "noise.nii.gz")


def test_ct_refused_before_preprocessing(check, real_data):
    ct = domain_inputs.ct_like_head(read_volume(real_data("icbm2009c_t1")), read_volume(real_data("icbm2009c_mask")))
    with pytest.raises(InputError, match="looks like a CT"):
        check.before_preprocessing(ct, "ct.nii.gz")


def test_twenty_mm_slices_refused_before_preprocessing(check, real_data):
    """Issue #11: a healthy head at 1x1x20 mm was accepted and reported 129 ml of anomaly."""
    image = domain_inputs.thick_slices(read_volume(real_data("mrhead")), 20.0)
    with pytest.raises(InputError, match="slices too thick.*slice thickness 20.0 mm"):
        check.before_preprocessing(image, "thick.nii.gz")


@pytest.mark.slow  # real preprocessing
@pytest.mark.parametrize("kind, expected", [
    ("sphere", "does not look like a brain MRI"),
    ("blob_body", "does not look like a brain MRI"),
    ("upside_down", "head orientation implausible|does not look like a brain MRI"),
    ("slab", "too little of the brain in the field of view"),
])
def test_non_brain_input_refused(check, real_data, kind, expected):
    if kind == "sphere":
        image = domain_inputs.sphere()
    elif kind == "blob_body":
        image = domain_inputs.blob_body_mri()
    elif kind == "upside_down":
        image = domain_inputs.upside_down(read_volume(real_data("mrhead")))
    else:
        # 64 mm: past the reader's 60 mm minimum field of view, so the domain check itself must refuse it.
        image = domain_inputs.axial_slab(read_volume(real_data("mrhead")), 64.0)
    with pytest.raises(InputError, match=expected) as refusal:
        run_check(check, image, f"{kind}.nii.gz")
    assert "\n" not in str(refusal.value)


@pytest.mark.slow  # real preprocessing
def test_t2_brain_refused_as_another_contrast_not_as_non_brain(check, real_data):
    """A real T2 brain (the ICBM 2009c T2 template) is a brain MRI of the wrong contrast: the refusal says so
    (inverted against the T1 template), and does not call it "not a brain MRI"."""
    with pytest.raises(InputError, match=r"another contrast .*T2, PD or FLAIR.*T1-weighted.*template after "
                                         r"registration -0\.\d+") as refusal:
        run_check(check, read_volume(real_data("icbm2009c_t2")), "t2.nii")
    assert "does not look like" not in str(refusal.value)


@pytest.mark.slow  # real preprocessing
def test_real_brain_whose_header_orientation_is_wrong_is_refused_with_a_hint(check, real_data):
    """almi5 (npm cornerstone-nifti-image-loader) is a healthy head whose header says LIA while its voxels run
    otherwise: registration cannot find the brain, and the refusal names the header as a possible cause."""
    with pytest.raises(InputError, match="or its header's orientation does not match the image") as refusal:
        run_check(check, read_volume(real_data("almi5_t1")), "almi5.nii.gz")
    assert "\n" not in str(refusal.value)


# --- the bundle section ---------------------------------------------------------------------------

def test_default_bundle_section_is_complete(default_description):
    section = default_description["domain"]
    assert set(section["limits"]) == set(MEASURES)
    assert set(section["observed"]) == set(section["scans"]["training"]) | set(section["scans"]["validation"])
    for name, limits in section["limits"].items():  # the refuse range holds the warn range
        (refuse_low, refuse_high), (warn_low, warn_high) = limits["refuse"], limits["warn"]
        if refuse_low is not None and warn_low is not None:
            assert refuse_low <= warn_low, name
        if refuse_high is not None and warn_high is not None:
            assert refuse_high >= warn_high, name


def test_bundle_without_section_uses_builtin_refusals(real_data):
    check = DomainCheck.from_section(None, "old-bundle")
    assert check.reference_histogram is None
    with pytest.raises(InputError, match="noise"):
        check.before_preprocessing(domain_inputs.white_noise(), "noise.nii.gz")


@pytest.mark.parametrize("section", [
    {"version": 2, "limits": {}},
    {"version": 1, "limits": {"no_such_measure": {"refuse": [0, 1]}}},
    {"version": 1, "limits": {"brain_volume_ml": {"refuse": ["a", 1]}}},
    {"version": 1, "limits": {}, "intensity_histogram": [1.0, 2.0]},
])
def test_malformed_section_is_a_bundle_error(section):
    with pytest.raises(ModelBundleError, match="domain"):
        DomainCheck.from_section(section, "bundle")


def test_results_table_has_a_column_per_measure():
    assert COLUMNS[-len(MEASURES):] == tuple(f"domain_{name}" for name in MEASURES)


# --- through the real CLI --------------------------------------------------------------------------

def test_cli_refuses_noise_with_one_line(tmp_path):
    """Issue #11 item 1: 128³ uniform noise finished with status ok and 230 ml of "anomaly"."""
    noise = tmp_path / "noise.nii.gz"
    sitk.WriteImage(domain_inputs.white_noise(), str(noise))
    out = tmp_path / "out"
    completed = subprocess.run([sys.executable, "-m", "AnomalySegLib", "segment", str(noise), "-o", str(out)],
                               capture_output=True, text=True, encoding="utf-8", cwd=REPOSITORY, timeout=600)
    assert completed.returncode == 1, completed.stderr
    refusals = [line for line in completed.stderr.splitlines() if "does not look like an image of anatomy" in line]
    assert len(refusals) == 1, completed.stderr
    assert "noise.nii.gz" in refusals[0]
    with open(out / "results.csv", encoding="utf-8", newline="") as table:
        rows = list(csv.DictReader(table))
    assert [row["status"] for row in rows] == ["failed"]
    assert "correlation of neighbouring voxels" in rows[0]["error"]
    assert not list(out.glob("*anomaly_mask*"))


def test_broken_volume_gets_the_validation_message_not_a_refusal(check, real_data):
    """The check validates first: a constant volume is reported as such, not as "noise"."""
    constant = sitk.Image(80, 80, 80, sitk.sitkFloat32) + 5.0  # 80 mm: large enough to be a head
    with pytest.raises(InputError, match="same intensity"):
        check.before_preprocessing(constant, "constant.nii.gz")
