"""Stage I training on real healthy brains: it learns, it heals lesions, it resumes exactly, CLI, DDP."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from scipy import ndimage

from AnomalySegLib import cli
from AnomalySegLib.bundle import load_bundle
from AnomalySegLib.diffusion.reconstruction import (
    Reconstructor,
    build_network,
    load_reconstructor,
    reconstruct_volume,
)
from AnomalySegLib.diffusion.spec import ReconSpec
from AnomalySegLib.errors import InputError
from AnomalySegLib.preprocessing.case_folder import IMAGE_FILE, MASK_FILE, ModelSpaceCase
from AnomalySegLib.training.checkpoint import CHECKPOINT_FILE
from AnomalySegLib.training.config import load_config
from AnomalySegLib.distributed import DistributedContext
from AnomalySegLib.training.loop import METRICS_FILE, TENSORBOARD_DIR, LoopSpec, Trainer
from AnomalySegLib.training.recon_training import ReconObjective, train_recon
from AnomalySegLib.training.slices import SliceSampler

HELD_OUT = "sri24_t1_brain"  # last case id: the held-out validation volume of split_cases
CPU = DistributedContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


def _brain_l1(reconstruction: np.ndarray, case: ModelSpaceCase) -> float:
    return float(np.abs(reconstruction - case.image)[case.mask].mean())


def _held_out(cases: list[ModelSpaceCase]) -> ModelSpaceCase:
    return next(case for case in cases if case.case_id == HELD_OUT)


def _small_config(steps: int, **training) -> dict:
    config = load_config("recon_tiny")
    config["training"].update(
        max_steps=steps, batch_size=2, checkpoint_every=2, log_every=1, validation_cases=0, **training
    )
    return config


@pytest.fixture(scope="module")
def trained(healthy_cases, tmp_path_factory):
    """The tiny cDDPM trained on three real healthy brains (~45 s on 2 cores), SRI24 held out."""
    work = tmp_path_factory.mktemp("train_recon") / "work"
    bundle, outcome = train_recon(healthy_cases, load_config("recon_tiny"), work, device="cpu", progress=False)
    return bundle, outcome, work


@pytest.mark.slow
def test_training_holds_out_a_volume_and_logs(trained) -> None:
    bundle, outcome, work = trained
    provenance = bundle.description["provenance"]["stage1"]
    assert provenance["validation_cases"] == [HELD_OUT]
    assert HELD_OUT not in provenance["training_cases"] and len(provenance["training_cases"]) == 3
    assert provenance["steps"] == outcome.step == 200
    records = [json.loads(line) for line in (work / METRICS_FILE).read_text(encoding="utf-8").splitlines()]
    validation = [r["val/recon_l1_brain"] for r in records if "val/recon_l1_brain" in r]
    losses = [r["train/loss"] for r in records if "train/loss" in r]
    assert len(validation) == 2 and validation[-1] < validation[0]
    assert sum("val/loss" in r for r in records) == 2
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    assert list((work / TENSORBOARD_DIR).glob("events.out.tfevents.*")), "TensorBoard log missing"
    assert (work / CHECKPOINT_FILE).is_file()
    assert bundle.description["metrics"]["stage1_validation"]["recon_l1_brain"] == pytest.approx(validation[-1])


@pytest.mark.slow
def test_trained_model_reconstructs_held_out_healthy_brain_better(trained, healthy_cases) -> None:
    bundle, _, _ = trained
    held_out = _held_out(healthy_cases)
    spec = ReconSpec.from_dict(bundle.component("recon").architecture)
    torch.manual_seed(0)
    untrained = Reconstructor(spec, build_network(spec), "cpu")
    before = _brain_l1(reconstruct_volume(untrained, held_out.image, seed=0).mean, held_out)
    after = _brain_l1(reconstruct_volume(load_reconstructor(bundle, "cpu"), held_out.image, seed=0).mean, held_out)
    print(f"held-out brain L1: untrained {before:.3f}, trained {after:.3f}")
    assert after < 0.75 * before


def _white_matter_centre(case: ModelSpaceCase, radius: int) -> tuple[int, int, int]:
    """The brain voxel whose neighbourhood is brightest and most uniform (deep white matter)."""
    size = (3, 2 * radius + 1, 2 * radius + 1)
    mean = ndimage.uniform_filter(case.image, size=size)
    spread = np.sqrt(np.maximum(ndimage.uniform_filter(case.image**2, size=size) - mean**2, 0))
    score = np.where(ndimage.binary_erosion(case.mask, iterations=radius + 2), mean - 2 * spread, -np.inf)
    return tuple(int(v) for v in np.unravel_index(np.argmax(score), score.shape))


@pytest.mark.slow
def test_inserted_lesion_is_reconstructed_as_healthy_tissue(trained, healthy_cases) -> None:
    """A hypointense lesion (T1, like necrosis or a stroke) in the held-out brain's white matter
    is 'healed' by the reconstruction: its error is at least twice that of the tissue around it."""
    bundle, _, _ = trained
    held_out = _held_out(healthy_cases)
    radius = 5
    centre = _white_matter_centre(held_out, radius)
    z, y, x = np.mgrid[: held_out.image.shape[0], : held_out.image.shape[1], : held_out.image.shape[2]]
    distance2 = 4 * (z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2  # 2 mm slices
    lesion = (distance2 <= radius**2) & held_out.mask
    surroundings = (distance2 > (radius + 2) ** 2) & (distance2 <= (radius + 6) ** 2) & held_out.mask
    image = held_out.image.copy()
    image[lesion] = 0.2
    reconstruction = reconstruct_volume(load_reconstructor(bundle, "cpu"), image, seed=0).mean
    error = np.abs(reconstruction - image)
    lesion_error, surrounding_error = float(error[lesion].mean()), float(error[surroundings].mean())
    print(f"lesion error {lesion_error:.3f}, surrounding tissue {surrounding_error:.3f}")
    assert held_out.image[lesion].mean() - 0.2 > 0.5  # the lesion is a real change of intensity
    assert lesion_error >= 2 * surrounding_error


def _weights(bundle) -> dict[str, torch.Tensor]:
    return bundle.component("recon").state_dict


def test_resumed_training_equals_uninterrupted_training(healthy_cases, tmp_path: Path) -> None:
    cases = healthy_cases[:2]
    straight, outcome = train_recon(cases, _small_config(4), tmp_path / "straight", device="cpu", progress=False)
    train_recon(cases, _small_config(2), tmp_path / "resumed", device="cpu", progress=False)
    resumed, resumed_outcome = train_recon(
        cases, _small_config(4), tmp_path / "resumed", resume=True, device="cpu", progress=False
    )
    assert resumed_outcome.step == 4
    for key, tensor in _weights(straight).items():
        assert torch.equal(_weights(resumed)[key], tensor), key
    for key, tensor in outcome.model.state_dict().items():
        assert torch.equal(resumed_outcome.model.state_dict()[key], tensor), key
    assert any(not torch.equal(_weights(straight)[k], v) for k, v in
               build_network(ReconSpec.from_dict(_small_config(1)["model"])).state_dict().items()), "it trained"


def test_interrupted_run_saves_a_checkpoint_and_resumes_exactly(healthy_cases, tmp_path: Path) -> None:
    config = _small_config(4)
    spec = ReconSpec.from_dict(config["model"])
    sampler = SliceSampler(healthy_cases[:2])
    interrupt_at = {"step": 2}

    def batch_fn(step: int, generator: torch.Generator) -> torch.Tensor:
        if step == interrupt_at["step"]:
            interrupt_at["step"] = None
            raise KeyboardInterrupt
        return sampler.sample(2, generator).images

    def run(work: Path, resume: bool = False):
        torch.manual_seed(0)
        trainer = Trainer(
            build_network(spec), lambda p: torch.optim.AdamW(p, lr=1e-3),
            LoopSpec(max_steps=4, checkpoint_every=100, progress=False), CPU, work,
            batch_fn=batch_fn, loss_fn=ReconObjective(spec, CPU.device), resume=resume,
        )
        return trainer.fit()

    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "interrupted")
    assert torch.load(tmp_path / "interrupted" / CHECKPOINT_FILE, weights_only=True)["step"] == 2
    resumed = run(tmp_path / "interrupted", resume=True)
    straight = run(tmp_path / "straight")
    assert resumed.step == straight.step == 4
    for key, tensor in straight.ema_model.state_dict().items():
        assert torch.equal(resumed.ema_model.state_dict()[key], tensor), key


def _write_case_folders(cases: list[ModelSpaceCase], root: Path) -> Path:
    for case in cases:
        folder = root / case.case_id
        folder.mkdir(parents=True)
        sitk.WriteImage(sitk.GetImageFromArray(case.image.astype(np.float32)), str(folder / IMAGE_FILE))
        sitk.WriteImage(sitk.GetImageFromArray(case.mask.astype(np.uint8)), str(folder / MASK_FILE))
    return root


def test_train_recon_command(healthy_cases, tmp_path: Path, capsys) -> None:
    data = _write_case_folders(healthy_cases[:2], tmp_path / "data")
    out = tmp_path / "model"
    common = ["train-recon", "--data", str(data), "--out", str(out), "--config", "recon_tiny",
              "--batch-size", "2", "--device", "cpu", "--threads", str(torch.get_num_threads()), "--no-progress"]
    assert cli.main([*common, "--max-steps", "2"]) == 0
    bundle = load_bundle(out)
    assert bundle.description["provenance"]["stage1"]["steps"] == 2
    assert bundle.description["noise_levels"] == [250, 500, 750]
    assert (tmp_path / "model.training" / CHECKPOINT_FILE).is_file()

    assert cli.main([*common, "--max-steps", "2"]) == 2
    assert "exists already" in capsys.readouterr().err
    assert cli.main([*common, "--max-steps", "3", "--overwrite"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert cli.main([*common, "--max-steps", "3", "--overwrite", "--resume"]) == 0
    assert load_bundle(out).description["provenance"]["stage1"]["steps"] == 3
    assert cli.main(["train-recon", "--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "m2")]) == 2


@pytest.mark.slow
def test_torchrun_two_processes_on_cpu(healthy_cases, tmp_path: Path) -> None:
    data = _write_case_folders(healthy_cases[:2], tmp_path / "data")
    out = tmp_path / "model"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "-m", "AnomalySegLib", "train-recon", "--data", str(data), "--out", str(out), "--config", "recon_tiny",
        "--max-steps", "2", "--batch-size", "2", "--device", "cpu", "--threads", "1", "--no-progress",
    ]
    finished = subprocess.run(command, capture_output=True, text=True, encoding="utf-8", timeout=300)
    assert finished.returncode == 0, finished.stderr[-3000:]
    provenance = load_bundle(out).description["provenance"]["stage1"]
    assert provenance["processes"] == 2 and provenance["steps"] == 2


def test_bf16_autocast_training_on_cpu(healthy_cases, tmp_path: Path) -> None:
    config = _small_config(2, precision="bf16")
    bundle, outcome = train_recon(healthy_cases[:2], config, tmp_path / "work", device="cpu", progress=False)
    losses = [record["train/loss"] for record in outcome.history if "train/loss" in record]
    assert len(losses) == 2 and all(np.isfinite(losses))
    assert all(tensor.dtype != torch.bfloat16 for tensor in _weights(bundle).values()), "weights stay fp32"


def test_resuming_with_another_model_is_refused(healthy_cases, tmp_path: Path) -> None:
    train_recon(healthy_cases[:2], _small_config(1), tmp_path / "work", device="cpu", progress=False)
    other = _small_config(2)
    other["model"]["denoiser"]["cond_dim"] = 32
    with pytest.raises(InputError, match="another model or configuration"):
        train_recon(healthy_cases[:2], other, tmp_path / "work", resume=True, device="cpu", progress=False)


@pytest.mark.slow
def test_bf16_reconstruction_matches_fp32_with_trained_weights(trained, healthy_cases) -> None:
    bundle, _, _ = trained
    held_out = _held_out(healthy_cases)
    fp32 = reconstruct_volume(load_reconstructor(bundle, "cpu", precision="fp32"), held_out.image, seed=0).mean
    bf16 = reconstruct_volume(load_reconstructor(bundle, "cpu", precision="bf16"), held_out.image, seed=0).mean
    difference = np.abs(bf16 - fp32)[held_out.mask]
    print(f"bf16 vs fp32 in the brain: mean {difference.mean():.4f}, max {difference.max():.4f}")
    assert difference.mean() < 0.01


def test_training_can_start_from_an_earlier_models_weights(trained, healthy_cases, tmp_path: Path) -> None:
    """Fine-tuning: with ``initial_weights`` the run starts from them (one step at a tiny learning rate
    stays next to them), not from the seeded initialisation."""
    start = _weights(trained[0])
    bundle, _ = train_recon(healthy_cases, _small_config(1, learning_rate=1e-9, ema_decay=0.0),
                            tmp_path / "tuned", device="cpu", progress=False, initial_weights=start)
    fresh, _ = train_recon(healthy_cases, _small_config(1, learning_rate=1e-9, ema_decay=0.0),
                           tmp_path / "fresh", device="cpu", progress=False)
    tuned, scratch = _weights(bundle), _weights(fresh)
    # learned parameters only: batch-norm statistics and counters move with any forward pass in training
    learned = [name for name, _ in build_network(ReconSpec.from_dict(_small_config(1)["model"])).named_parameters()]
    assert max(float((tuned[k] - start[k]).abs().max()) for k in learned) < 1e-4
    assert max(float((scratch[k] - start[k]).abs().max()) for k in learned) > 1e-2
