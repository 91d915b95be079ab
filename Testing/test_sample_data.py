"""The real-data catalogue: every file fetches and verifies; a corrupted cache file is replaced."""

from __future__ import annotations

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
