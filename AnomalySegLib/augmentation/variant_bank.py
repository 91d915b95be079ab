"""The variant bank: simulated acquisitions of the healthy sources, preprocessed into model space (issue #13).

Built by ``scripts/build_variant_bank.py``; read by the default model's recipe and the generalization
benchmark. One bank per preprocessing spec::

    <bank>/<spec key>-a<version>/spec.json
    <bank>/<spec key>-a<version>/<source>/<source>_v000/   the scan as it is (a case folder, :mod:`~..preprocessing.case_folder`)
    <bank>/<spec key>-a<version>/<source>/<source>_v003/   a simulated re-acquisition (parameters in preprocessing.json)

The spec key is :func:`AnomalySegLib.preprocessing.model_space_cache.spec_key` and the version is
:data:`SIMULATION_VERSION`: a bank of another grid, other preprocessing settings or another simulation
never mixes with this one.
"""

from __future__ import annotations

import dataclasses
import functools
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import SimpleITK as sitk

from AnomalySegLib import sample_data
from AnomalySegLib.augmentation.acquisition import sample_acquisition, simulate_acquisition
from AnomalySegLib.augmentation.dura import native_dural_map
from AnomalySegLib.preprocessing.case_folder import IMAGE_FILE, ModelSpaceCase, load_case
from AnomalySegLib.preprocessing.model_space_cache import spec_key
from AnomalySegLib.preprocessing.pipeline import preprocess_image
from AnomalySegLib.preprocessing.spec import MODEL_GRIDS, PreprocessingSpec

#: Healthy sources: bank name → (sample_data image, sample_data brain mask or None). The mask only
#: weights the simulated contrast enhancement; preprocessing never sees it (as for a user's skull-on scan).
#: (nibabel_anatomical is not a source: its 50 mm field of view is below what the reader accepts; nor is almi5_t1,
#: whose header orientation does not match its voxels, so that registration cannot find the brain.)
SOURCES: dict[str, tuple[str, str | None]] = {
    "mrhead": ("mrhead", None),
    "itk_kmeans_t1": ("itk_kmeans_t1", "itk_kmeans_brain_labels"),
    "someones_anatomy": ("someones_anatomy", None),
    "robex_atlas_t1": ("robex_atlas_t1", "robex_atlas_mask"),
    "colin27_t1": ("colin27_t1", "colin27_t1_brain"),
    "papaya_sample_t1": ("papaya_sample_t1", None),
    "myconnectome_t1": ("myconnectome_t1", None),
    "ds000240_t1": ("ds000240_t1", None),
    "icbm2009c_t1": ("icbm2009c_t1", "icbm2009c_mask"),
    "sri24_t1_brain": ("sri24_t1_brain", None),
    "icbm2009a_t1_brain": ("icbm2009a_t1_brain", None),
}
#: Population averages (smooth, perfectly aligned): a minority of the bank.
TEMPLATES = ("icbm2009c_t1", "sri24_t1_brain", "icbm2009a_t1_brain")
DEFAULT_BANK = Path.home() / ".cache" / "anomalyseg" / "variant_bank"
#: Simulated acquisitions per single-subject source, and the base seed, of the default model's bank.
VARIANTS_PER_SCAN = 8
BASE_SEED = 0
#: Version of the simulation the bank's variants were made with (part of the bank's folder name); raise it
#: whenever :mod:`.acquisition` or :mod:`.dura` change what a variant looks like.
#: 2: the contrast-enhanced look also enhances the dura and the venous sinuses.
SIMULATION_VERSION = 2


def variant_count(source: str, variants: int) -> int:
    """Simulated variants of ``source``: all for single-subject scans, a third for templates (at least 1)."""
    return max(1, variants // 3) if source in TEMPLATES else variants


def variant_seed(source: str, index: int, base_seed: int) -> int:
    """A stable seed per (source, variant): independent of which other sources are built."""
    return (zlib.crc32(source.encode("utf-8")) + 7919 * index + 104729 * base_seed) % (2**31)


#: The default model's grid (a key of MODEL_GRIDS): the whole brain, vertex to cerebellum.
RECIPE_GRID = "whole_brain"


def recipe_spec(grid: str = RECIPE_GRID) -> PreprocessingSpec:
    """The preprocessing of the default model's recipe: today's :class:`PreprocessingSpec` defaults on the
    model grid ``grid`` (a key of :data:`MODEL_GRIDS`). The bank is built with it and the trained bundle
    records it, so training and inference preprocess alike."""
    return dataclasses.replace(PreprocessingSpec(), grid=MODEL_GRIDS[grid])


def simulated_variant(source: str, index: int, base_seed: int = BASE_SEED) -> tuple[sitk.Image, dict[str, Any]]:
    """Variant ``index`` of ``source`` in native space, before preprocessing: the scan as it is (``index``
    0) or a simulated re-acquisition (:func:`~.acquisition.simulate_acquisition` with parameters drawn from
    :func:`variant_seed`), and its record (``{"identity": True}`` or ``{"identity": False, "seed", "params"}``).
    The same arguments give the same volume, bit for bit."""
    image_name, mask_name = SOURCES[source]
    image = sitk.ReadImage(str(sample_data.fetch(image_name)), sitk.sitkFloat32)
    if index == 0:
        return image, {"identity": True}
    seed = variant_seed(source, index, base_seed)
    params = sample_acquisition(seed)
    mask = None
    if mask_name is not None:
        mask = sitk.ReadImage(str(sample_data.fetch(mask_name))) > 0
        mask.CopyInformation(image)
    dura = None
    if params.enhancement > 0:
        spec = recipe_spec()
        dura = native_dural_map(image, source_transform(source), spec.template)
    acquired = simulate_acquisition(image, params, seed=seed, brain_mask=mask, dura=dura).image
    return acquired, {"identity": False, "seed": seed, "params": params.to_dict()}


@functools.lru_cache(maxsize=None)
def source_transform(source: str) -> sitk.Transform:
    """The preprocessing transform (template → native points) of ``source`` as it is: the registration that
    ``segment`` would find for it (computed once per process), which places the dural map in the scan."""
    image = sitk.ReadImage(str(sample_data.fetch(SOURCES[source][0])), sitk.sitkFloat32)
    return preprocess_image(image, spec=recipe_spec(), image_path=f"{source} (registration for the dural map)").transform


def variant_names(sources: Iterable[str], variants: int = VARIANTS_PER_SCAN) -> list[tuple[str, int]]:
    """``(source, index)`` of every variant the bank holds for ``sources`` (index 0 included)."""
    return [(source, index) for source in sources for index in range(variant_count(source, variants) + 1)]


def bank_root(bank: str | Path, spec: PreprocessingSpec) -> Path:
    """The folder of ``spec``'s bank, made by today's simulation (:data:`SIMULATION_VERSION`), inside ``bank``."""
    return Path(bank) / f"{spec_key(spec)}-a{SIMULATION_VERSION}"


def bank_simulation_version(folder_name: str) -> int:
    """The :data:`SIMULATION_VERSION` a bank folder name (:func:`bank_root`) was made with; a name without the
    ``-a<version>`` suffix is a bank of version 1, from before the suffix."""
    _, separator, version = folder_name.rpartition("-a")
    return int(version) if separator and version.isdigit() else 1


def variant_id(source: str, index: int) -> str:
    """``("mrhead", 3)`` → ``"mrhead_v003"``: the case id of a variant."""
    return f"{source}_v{index:03d}"


def variant_folder(root: Path, source: str, index: int) -> Path:
    """The case folder of variant ``index`` of ``source`` (``index`` 0: the scan as it is)."""
    return root / source / variant_id(source, index)


def parse_variant_id(case_id: str) -> tuple[str, int] | None:
    """``"mrhead_v003"`` → ``("mrhead", 3)``: the inverse of :func:`variant_id`; ``None`` for a name that is
    not a variant of a bank source (e.g. a fetch-data name such as ``"mrhead"``)."""
    source, _, index = case_id.rpartition("_v")
    return (source, int(index)) if source in SOURCES and index.isdigit() else None


def load_variants(root: Path, sources: Iterable[str], indices: range | None = None) -> list[ModelSpaceCase]:
    """The finished variants of ``sources`` in the bank ``root`` (those with an image; ``indices``: only
    these variant numbers), ordered by source then variant.

    Raises:
        ValueError: a source is unknown, or none of its variants is in the bank.
    """
    cases = []
    for source in sources:
        if source not in SOURCES:
            raise ValueError(f"unknown bank source {source!r}; known: {', '.join(SOURCES)}")
        folders = sorted(p for p in (root / source).glob(f"{source}_v*") if (p / IMAGE_FILE).is_file())
        folders = [p for p in folders if indices is None or parse_variant_id(p.name)[1] in indices]
        if not folders:
            raise ValueError(f"the bank {root} holds no variant of {source}; run scripts/build_variant_bank.py")
        cases.extend(load_case(folder) for folder in folders)
    return cases
