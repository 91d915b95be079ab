"""GPU paths (marker ``gpu``: skipped without CUDA) and the CPU dry run of ``scripts/gpu_check.py``.

The ``gpu`` tests run on the GPU machine through ``scripts/gpu_check.py`` with ``--noconftest`` (the
shared conftest imports the SimpleITK preprocessing, which that machine lacks), so they use no shared
fixture: the model-space sample comes from the check folder (``$ANOMALYSEG_GPU_SAMPLE``) or, where
SimpleITK is installed, from the real preprocessing of MRBrainTumor1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from AnomalySegLib.bundle import load_bundle
from AnomalySegLib.device import autocast_dtype, choose_device
from AnomalySegLib.diffusion.reconstruction import (
    _BYTES_PER_PIXEL_CHANNEL_FP32,
    Reconstructor,
    build_network,
    load_reconstructor,
    reconstruct_volume,
)
from AnomalySegLib.diffusion.spec import ReconSpec
from AnomalySegLib.resources import resources_dir
from AnomalySegLib.scoring.volume import AnomalyScorer, score_halving_on_oom
from AnomalySegLib.training.config import load_config

REPO = Path(__file__).resolve().parent.parent
SAMPLE_ENV = "ANOMALYSEG_GPU_SAMPLE"
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def gpu(test):
    return pytest.mark.gpu(needs_cuda(test))


@pytest.fixture(scope="module")
def sample() -> dict[str, np.ndarray]:
    """MRBrainTumor1 in model space: ``image`` ``[Z, 96, 96]`` float32 in [0, 1] and ``mask`` bool."""
    stored = os.environ.get(SAMPLE_ENV)
    if stored:
        with np.load(stored, allow_pickle=False) as arrays:
            return {"image": arrays["image"], "mask": arrays["mask"]}
    pytest.importorskip("SimpleITK", reason=f"no ${SAMPLE_ENV} and no SimpleITK to preprocess the sample")
    from AnomalySegLib import sample_data
    from AnomalySegLib.preprocessing.pipeline import preprocess_file

    image, mask, _ = preprocess_file(sample_data.fetch("mrbraintumor1")).arrays()
    return {"image": image, "mask": mask}


@pytest.fixture(scope="module")
def bundle():
    return load_bundle(resources_dir() / "Models" / "default")


@gpu
def test_device_auto_picks_the_gpu_and_bf16(bundle):
    scorer = AnomalyScorer.from_bundle(bundle, device="auto")
    assert choose_device("auto").type == "cuda"
    assert scorer.device.type == "cuda"
    expected = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    assert scorer.reconstructor.autocast_dtype == expected


@gpu
def test_fp32_reconstruction_on_gpu_matches_the_cpu(bundle, sample):
    """Same seed, same noise (drawn on the CPU): GPU fp32 (TF32 off) within 1e-3 of the CPU."""
    volume = sample["image"][20:28]
    previous = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        on_gpu = reconstruct_volume(load_reconstructor(bundle, "cuda", "fp32"), volume, seed=3)
    finally:
        torch.backends.cudnn.allow_tf32 = previous
    on_cpu = reconstruct_volume(load_reconstructor(bundle, "cpu", "fp32"), volume, seed=3)
    assert np.abs(on_gpu.per_level - on_cpu.per_level).max() < 1e-3


@gpu
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_autocast_reconstruction_is_close_to_fp32(bundle, sample, precision):
    """16-bit autocast changes the reconstruction only by rounding: mean |Δ| < 5e-3, max < 0.1."""
    volume = sample["image"][20:28]
    reference = reconstruct_volume(load_reconstructor(bundle, "cuda", "fp32"), volume, seed=1).mean
    reconstructor = load_reconstructor(bundle, "cuda", precision)
    assert reconstructor.autocast_dtype == {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    result = reconstruct_volume(reconstructor, volume, seed=1).mean
    difference = np.abs(result - reference)
    assert np.isfinite(result).all()
    assert difference.mean() < 5e-3 and difference.max() < 0.1, (difference.mean(), difference.max())


@gpu
def test_fixed_seed_is_deterministic_on_gpu_and_another_seed_differs(bundle, sample):
    scorer = AnomalyScorer.from_bundle(bundle, device="cuda", precision="bf16")
    first = scorer.score(sample["image"], sample["mask"], seed=5)
    again = scorer.score(sample["image"], sample["mask"], seed=5)
    other = scorer.score(sample["image"], sample["mask"], seed=6)
    assert np.abs(first.anomaly_score - again.anomaly_score).max() < 1e-5
    assert np.abs(first.reconstruction - other.reconstruction).max() > 1e-3


@gpu
def test_out_of_memory_halves_the_chunk_and_gives_the_same_scores(sample):
    """A real over-large chunk: all rows of a volume ~3× too large for the GPU in one pass of the
    paper-size network must raise CUDA's out-of-memory error, be retried with halved chunks, and give
    the reconstruction that a safe chunk size gives (same seed, same noise)."""
    spec = ReconSpec.from_dict(load_config("recon_paper")["model"])
    torch.manual_seed(0)
    reconstructor = Reconstructor(spec, build_network(spec), "cuda", precision="bf16")
    total_bytes = torch.cuda.mem_get_info()[1]
    per_row = _BYTES_PER_PIXEL_CHANNEL_FP32 * 96 * 96 * spec.denoiser.unet.channels[0] // 2  # bf16 estimate
    levels = len(reconstructor.noise_levels)
    depth = int(-(-3 * total_bytes // per_row // levels))
    repeats = -(-depth // sample["image"].shape[0])
    image = np.tile(sample["image"], (repeats, 1, 1))[:depth]
    mask = np.tile(sample["mask"], (repeats, 1, 1))[:depth]
    scorer = AnomalyScorer(reconstructor, None)
    too_large = depth * levels

    scores, worked = score_halving_on_oom(scorer, image, mask, seed=0, chunk_size=too_large)

    assert worked is not None and worked < too_large
    assert scores.anomaly_score.shape == image.shape
    safe = reconstruct_volume(reconstructor, image, seed=0, chunk_size=256)
    assert np.abs(safe.mean - scores.reconstruction).max() < 2e-2


@gpu
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_training_steps_on_gpu(sample, tmp_path, precision):
    """Stage I training under autocast (fp16 with the gradient scaler): finite losses, weights move."""
    from AnomalySegLib.preprocessing.case_folder import ModelSpaceCase
    from AnomalySegLib.training.recon_training import train_recon

    cases = [ModelSpaceCase(f"case{i}", sample["image"], sample["mask"], None) for i in range(2)]
    config = load_config("recon_tiny")
    config["training"].update(max_steps=4, checkpoint_every=4, validate_every=4, precision=precision,
                              validation_cases=0)
    bundle, outcome = train_recon(cases, config, tmp_path / "work", device="cuda", progress=False)
    assert outcome.step == 4
    assert all(np.isfinite(record["train/loss"]) for record in outcome.history if "train/loss" in record)
    assert autocast_dtype(torch.device("cuda"), precision) is not None
    torch.manual_seed(config["training"]["seed"])  # the initial weights train_recon starts from
    initial = build_network(ReconSpec.from_dict(config["model"]))
    moved = [not torch.equal(a.cpu(), b) for a, b in zip(outcome.model.state_dict().values(),
                                                         initial.state_dict().values()) if a.is_floating_point()]
    assert any(moved)


@gpu
def test_prefetcher_on_gpu_gives_the_results_of_sequential_cases(tmp_path):
    """Two cases through ``anomalyseg segment --device cuda`` (prefetching the second while the
    first runs) give the same volumes as each case segmented alone."""
    pytest.importorskip("SimpleITK", reason="the prefetcher preprocesses with SimpleITK")
    import shutil

    from AnomalySegLib import sample_data

    source = sample_data.fetch("mrbraintumor1")
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a", "b"):
        shutil.copy(source, folder / f"{name}.nii.gz")
    command = [sys.executable, "-m", "AnomalySegLib", "-q", "segment"]
    subprocess.run([*command, str(folder), "-o", str(tmp_path / "batch"), "--device", "cuda"], check=True)
    subprocess.run([*command, str(folder / "b.nii.gz"), "-o", str(tmp_path / "alone"), "--device", "cuda"], check=True)
    batch = json.loads((tmp_path / "batch" / "results.json").read_text(encoding="utf-8"))["cases"]
    alone = json.loads((tmp_path / "alone" / "results.json").read_text(encoding="utf-8"))["cases"]
    by_case = {row["case"]: row for row in batch}
    assert set(by_case) == {"a", "b"} and all(row["status"] == "ok" for row in batch)
    assert by_case["b"]["volume_ml"] == pytest.approx(alone[0]["volume_ml"], rel=1e-3)


@pytest.mark.slow  # preprocesses MRBrainTumor1 and runs the default model on it
def test_speed_options_leave_the_scores_unchanged_on_the_cpu(bundle, sample):
    """The options the GPU check measures change only speed: SegUnet rows of all noise levels in one
    pass vs one row per pass, and channels-last weights and inputs, give the same scores (CPU fp32)."""
    middle = slice(max(0, sample["image"].shape[0] // 2 - 3), sample["image"].shape[0] // 2 + 3)
    image, mask = sample["image"][middle], sample["mask"][middle]
    one_row = AnomalyScorer.from_bundle(bundle, device="cpu", precision="fp32")
    one_row.seg_chunk_size = 1
    reference = one_row.score(image, mask, seed=2)
    loaded = AnomalyScorer.from_bundle(bundle, device="cpu", precision="fp32")
    plain = loaded.reconstructor
    channels_last = Reconstructor(plain.spec, plain.network, "cpu", "fp32", plain.noise_levels, channels_last=True)
    batched = AnomalyScorer(channels_last, loaded.seg_network, loaded.config, seg_chunk_size=1024)
    result = batched.score(image, mask, seed=2)
    assert next(channels_last.network.parameters()).ndim < 4 or any(
        p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
        for p in channels_last.network.parameters() if p.ndim == 4)
    assert np.abs(result.reconstruction - reference.reconstruction).max() < 1e-4
    assert np.abs(result.segmentation_probability - reference.segmentation_probability).max() < 1e-4
    assert np.abs(result.anomaly_score - reference.anomaly_score).max() < 1e-4


@pytest.mark.slow
def test_gpu_check_dry_run_passes_on_the_cpu(tmp_path):
    """``scripts/gpu_check.py`` prepare + run --dry-run, end to end on the CPU (SimpleITK, nibabel and
    slicerio blocked in the run, as on the GPU machine)."""
    script = [sys.executable, str(REPO / "scripts" / "gpu_check.py")]
    folder, out = tmp_path / "check", tmp_path / "out"
    subprocess.run([*script, "prepare", "--dry-run", "--dir", str(folder)], check=True, cwd=REPO)
    assert any(path.name.endswith("-py3-none-any.whl") for path in (folder / "wheels").iterdir())
    completed = subprocess.run([*script, "run", "--dry-run", "--dir", str(folder), "--out", str(out)],
                               cwd=REPO, capture_output=True, text=True, encoding="utf-8")
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-4000:]
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["dry_run"] and summary["device"] == "cpu"
    assert set(summary["steps"]) == {"environment", "cuda_tests", "recon_benchmark", "networks_end_to_end",
                                     "training_throughput", "torchrun"}
    assert all(step["ok"] for step in summary["steps"].values())
    assert summary["steps"]["torchrun"]["backend"] == "gloo"
    assert "gpu-site" in summary["steps"]["environment"]["monai_from"]  # MONAI from the carried wheel
    assert "Dry run on the CPU" in (out / "gpu_check.md").read_text(encoding="utf-8")
    refused = subprocess.run([*script, "publish", str(out)], cwd=REPO, capture_output=True, text=True,
                             encoding="utf-8")
    assert refused.returncode != 0 and "measure nothing" in refused.stderr
