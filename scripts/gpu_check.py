#!/usr/bin/env python3
"""The GPU check (issue #15): one prepared command that proves and measures every GPU path.

The GPU machine this is made for reaches no network and has python3 3.12 with torch (CUDA), numpy,
scipy, scikit-image, scikit-learn, safetensors, tqdm, matplotlib and einops, but no MONAI, SimpleITK,
nibabel or slicerio, and everything that travels to it (repository included) must fit in 64 MiB. So
the work is split in two:

``prepare`` (CPU side, full environment; ``make gpu-check-prepare``) fills ``.gpu-check/`` (ignored by
git): ``wheels/`` with the pure-Python wheels the GPU run imports (MONAI only: SimpleITK's wheel alone
is ~53 MB, and nibabel/slicerio are only used next to it), ``sample.npz`` with MRBrainTumor1 brought
into model space on the CPU (the preprocessing needs SimpleITK) together with the default model's
CPU reference scores, and ``manifest.json``.

``run`` (GPU side; ``make gpu-check``) installs the wheels into a temporary folder, then runs, each
step timed and checked, within ``--budget-s`` seconds:

1. the CUDA tests (``pytest -m gpu Testing/test_gpu.py``);
2. ``benchmarks/recon.py`` rows for ``recon_cpu`` and ``recon_paper`` (fp32/bf16/fp16), plus the
   speed options channels-last and ``torch.compile`` (cold start reported separately);
3. the default model's networks end to end on the preprocessed sample (per-stage times, agreement
   with the CPU reference);
4. paper-size Stage I and Stage II training throughput (iterations/s, peak memory, projected time of
   the paper's schedule);
5. ``torchrun`` with one process: an NCCL process group, all-reduce, one DDP training step.

It writes ``summary.json`` and ``gpu_check.md`` (the BENCHMARKS.md section) into ``--out`` and prints
a summary; ``publish`` puts that section into BENCHMARKS.md afterwards, on the machine that keeps the
repository. ``--dry-run`` runs everything on the CPU with tiny sizes, with SimpleITK, nibabel and
slicerio made unimportable as on the GPU machine; ``Testing/test_gpu.py`` runs it in the normal suite.

    python scripts/gpu_check.py prepare [--dry-run]
    python scripts/gpu_check.py run --out DIR [--dry-run]
    python scripts/gpu_check.py publish DIR
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import zipfile
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]

DEFAULT_DIR = REPO / ".gpu-check"
WHEELS = ("monai",)
#: What the GPU machine's python3 already has; a carried wheel may only require these (or each other).
GPU_MACHINE_PACKAGES = ("torch", "numpy", "scipy", "scikit-image", "scikit-learn", "safetensors", "tqdm",
                        "matplotlib", "einops", "packaging", "typing-extensions", "pytest")
#: Not installed on the GPU machine; the dry run makes them unimportable to prove the run needs none.
ABSENT_ON_GPU = ("SimpleITK", "nibabel", "slicerio")
BLOCK_ENV = "ANOMALYSEG_GPU_CHECK_BLOCK"
TRAVEL_LIMIT_BYTES = 64 * 2**20
SAMPLE_CASE = "mrbraintumor1"
SAMPLE_FILE = "sample.npz"
MANIFEST_FILE = "manifest.json"
SECTION = "gpu_check"
DRY_RUN_SLICES = slice(23, 27)  # 4 mid-brain slices: the dry run's volume
#: Stated tolerances of the GPU run against the CPU reference (intensities and scores in [0, 1]).
#: fp32 on a GPU differs by convolution algorithms and TF32 (on by default for cuDNN convolutions).
TOLERANCE_MAX_ABS = {"fp32": 0.02, "bf16": 0.1}
TOLERANCE_MEAN_ABS = {"fp32": 2e-3, "bf16": 1e-2}


# ---------------------------------------------------------------------------------------------- prepare


def prepare(folder: Path, dry_run: bool) -> dict[str, Any]:
    """Fill ``folder`` with the wheels, the preprocessed sample and its CPU reference scores."""
    folder.mkdir(parents=True, exist_ok=True)
    wheels = [download_wheel(name, folder / "wheels") for name in WHEELS]
    sample = prepare_sample(folder / SAMPLE_FILE, dry_run)
    manifest = {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "dry_run": dry_run,
        "wheels": wheels,
        "sample": sample,
        "cpu_torch": _torch_version(),
    }
    travel = _tracked_bytes() + sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    manifest["travelling_bytes"] = travel
    if travel > TRAVEL_LIMIT_BYTES:
        raise SystemExit(f"{folder}: repository + check folder = {travel / 2**20:.1f} MiB, over the "
                         f"{TRAVEL_LIMIT_BYTES / 2**20:.0f} MiB that may travel to the GPU machine")
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    print(f"prepared {_relative(folder)}: {', '.join(w['file'] for w in wheels)}; sample {sample['shape']}; "
          f"{travel / 2**20:.1f} MiB travel with the repository (limit {TRAVEL_LIMIT_BYTES / 2**20:.0f} MiB)")
    return manifest


def download_wheel(name: str, target: Path) -> dict[str, Any]:
    """The pure-Python wheel of the installed version of ``name`` for CPython 3.12, in ``target``.

    Raises:
        SystemExit: the wheel is not pure Python, or it needs a package the GPU machine lacks.
    """
    version = importlib.metadata.version(name)
    target.mkdir(parents=True, exist_ok=True)
    found = sorted(target.glob(f"{name}-{version}-*.whl"))
    cache = _cache_dir() / "wheels"
    if not found:
        for stale in target.glob(f"{name}-*.whl"):
            stale.unlink()
        for cached in sorted(cache.glob(f"{name}-{version}-*.whl")):  # downloaded earlier: no network needed
            shutil.copy(cached, target / cached.name)
        found = sorted(target.glob(f"{name}-{version}-*.whl"))
    if not found:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                        "--python-version", "3.12", "--implementation", "py", "--abi", "none",
                        "--platform", "any", "-d", str(target), f"{name}=={version}"], check=True)
        found = sorted(target.glob(f"{name}-{version}-*.whl"))
        cache.mkdir(parents=True, exist_ok=True)
        shutil.copy(found[0], cache / found[0].name)
    wheel = found[0]
    if not wheel.name.endswith("-py3-none-any.whl"):
        raise SystemExit(f"{wheel}: not a pure-Python wheel; it cannot be carried to the GPU machine")
    requirements = _requirements(wheel)
    missing = [r for r in requirements if r not in GPU_MACHINE_PACKAGES and r not in WHEELS]
    if missing:
        raise SystemExit(f"{wheel.name} requires {missing}, which the GPU machine lacks: add them to WHEELS")
    return {"file": wheel.name, "bytes": wheel.stat().st_size, "requires": requirements}


def _requirements(wheel: Path) -> list[str]:
    """Names of the unconditional requirements in a wheel's METADATA (extras skipped)."""
    with zipfile.ZipFile(wheel) as archive:
        metadata = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        lines = archive.read(metadata).decode("utf-8").splitlines()
    names = []
    for line in lines:
        if line.startswith("Requires-Dist:") and "extra ==" not in line:
            spec = line.split(":", 1)[1].split(";")[0].strip()
            name = spec.replace("(", " ").replace(">", " ").replace("<", " ").replace("=", " ").replace("!", " ")
            names.append(name.replace("[", " ").split()[0].lower().replace("_", "-"))
    return names


def prepare_sample(path: Path, dry_run: bool) -> dict[str, Any]:
    """MRBrainTumor1 in model space (the default model's preprocessing spec) and its CPU scores.

    The preprocessed volume is cached in the data cache, keyed by the spec and the preprocessing
    sources; the reference scores (fp32, CPU, seed 0) are recomputed for the slices the run uses.
    """
    import numpy as np

    from AnomalySegLib import sample_data
    from AnomalySegLib.bundle import load_bundle
    from AnomalySegLib.preprocessing.model_space_cache import cached_case
    from AnomalySegLib.preprocessing.spec import PreprocessingSpec
    from AnomalySegLib.resources import resources_dir
    from AnomalySegLib.scoring.volume import AnomalyScorer

    bundle = load_bundle(resources_dir() / "Models" / "default")
    spec = PreprocessingSpec.from_dict(bundle.description.get("preprocessing", {}))
    case = cached_case(SAMPLE_CASE, sample_data.fetch(SAMPLE_CASE), _cache_dir() / "model_space", spec)
    image, mask = case.image, case.mask
    if dry_run:
        image, mask = image[DRY_RUN_SLICES], mask[DRY_RUN_SLICES]
    scorer = AnomalyScorer.from_bundle(bundle, device="cpu", precision="fp32")
    started = time.perf_counter()
    scores = scorer.score(image, mask, seed=0)
    cpu_seconds = time.perf_counter() - started
    partial = path.with_name(f".{path.name}.partial.npz")
    np.savez_compressed(partial, image=image, mask=mask, reference_reconstruction=scores.reconstruction,
                        reference_score=scores.anomaly_score)
    partial.replace(path)
    return {"case": SAMPLE_CASE, "shape": list(image.shape), "cpu_scoring_s": round(cpu_seconds, 2),
            "cpu_threads": _torch_threads()}


def _cache_dir() -> Path:
    """Where downloaded wheels and the preprocessed sample are kept between runs (the data cache)."""
    from AnomalySegLib import sample_data

    return sample_data.cache_dir() / "gpu_check"


def _tracked_bytes() -> int:
    """Bytes of the files git tracks (what travels besides the check folder)."""
    try:
        names = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return 0
    return sum((REPO / n).stat().st_size for n in names.decode("utf-8").split("\0") if n and (REPO / n).is_file())


# -------------------------------------------------------------------------------------------------- run


class Steps:
    """Runs named steps within a time budget, recording each one's result, time and error."""

    def __init__(self, budget_s: float) -> None:
        self.deadline = time.monotonic() + budget_s
        self.results: dict[str, dict[str, Any]] = {}

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def run(self, name: str, function: Callable[[], dict[str, Any]], needs_s: float = 0.0) -> None:
        if self.remaining() < needs_s:
            self.results[name] = {"ok": False, "error": f"skipped: {self.remaining():.0f} s left, needs {needs_s:.0f} s"}
            print(f"[{name}] SKIPPED (time budget)", flush=True)
            return
        print(f"[{name}] ...", flush=True)
        started = time.perf_counter()
        try:
            result = {"ok": True, **function()}
        except Exception as error:  # a failing step is reported; the others still run
            result = {"ok": False, "error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()}
        result["seconds"] = round(time.perf_counter() - started, 1)
        self.results[name] = result
        status = "ok" if result["ok"] else f"FAILED: {result['error']}"
        print(f"[{name}] {status} ({result['seconds']} s)", flush=True)


def run(folder: Path, out: Path, dry_run: bool, budget_s: float, only: list[str] | None = None) -> int:
    """The GPU check (``only``: these steps; default all); returns the exit status (0: every step passed)."""
    started = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    manifest = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
    if manifest["dry_run"] != dry_run:
        raise SystemExit(f"{folder} was prepared {'with' if manifest['dry_run'] else 'without'} --dry-run; "
                         "prepare it again for this run")
    site = Path(tempfile.mkdtemp(prefix="anomalyseg-gpu-site-"))
    try:
        install_wheels(folder / "wheels", site, block=ABSENT_ON_GPU if dry_run else ())
        import torch

        if not torch.cuda.is_available() and not dry_run:
            raise SystemExit("no CUDA device: the GPU check needs one (use --dry-run on a CPU machine)")
        device = "cuda" if torch.cuda.is_available() and not dry_run else "cpu"
        # a dry run checks that every step works, however slow the CPU: it ignores the budget
        steps = Steps(float("inf") if dry_run else budget_s - (time.monotonic() - started))
        context = {"device": device, "dry_run": dry_run, "folder": folder, "out": out}
        plan = {
            "environment": (lambda: environment(device), 0),
            "cuda_tests": (lambda: cuda_tests(folder, out, dry_run), 30),
            "recon_benchmark": (lambda: recon_benchmark(context, steps), 30),
            "networks_end_to_end": (lambda: networks_end_to_end(context), 20),
            "training_throughput": (lambda: training_throughput(context, steps), 60),
            "torchrun": (lambda: torchrun_check(device), 20),
        }
        for name in only or plan:
            function, needs_s = plan[name]
            steps.run(name, function, needs_s)
    finally:
        shutil.rmtree(site, ignore_errors=True)
    summary = {"dry_run": dry_run, "device": device, "total_s": round(time.monotonic() - started, 1),
               "steps": steps.results, "manifest": manifest}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
    text = markdown(summary)
    (out / "gpu_check.md").write_text(text + "\n", encoding="utf-8")
    print(text)
    failed = [name for name, result in steps.results.items() if not result["ok"]]
    print(f"\ngpu check {'PASSED' if not failed else 'FAILED: ' + ', '.join(failed)} in {summary['total_s']} s "
          f"({'dry run on the CPU' if dry_run else device}); results in {out}")
    return 0 if not failed else 1


def install_wheels(wheels: Path, site: Path, block: tuple[str, ...]) -> None:
    """Install the carried wheels into ``site`` (no index, no dependencies) and put it first on the
    path of this process and its children; ``block`` names modules made unimportable (dry run)."""
    files = sorted(str(p) for p in wheels.glob("*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--no-compile",
                    "--disable-pip-version-check", "--target", str(site), *files], check=True)
    if block:
        # the children (pytest, torchrun) import this at start-up, as Python does with any sitecustomize
        (site / "sitecustomize.py").write_text(
            "import os, sys\n"
            f"for _name in os.environ.get({BLOCK_ENV!r}, '').split(','):\n"
            "    if _name:\n"
            "        sys.modules[_name] = None  # import raises ImportError, as where it is not installed\n",
            encoding="utf-8")
        os.environ[BLOCK_ENV] = ",".join(block)
        for name in block:
            sys.modules[name] = None  # type: ignore[assignment]
    path = [str(site), str(REPO), str(REPO / "benchmarks")]
    os.environ["PYTHONPATH"] = os.pathsep.join(path + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    sys.path[:0] = [str(site)]


def environment(device: str) -> dict[str, Any]:
    import monai
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "monai": monai.__version__, "monai_from": _relative(Path(monai.__file__).parent.parent),
            "cpu_cores": os.cpu_count()}
    if device == "cuda":
        properties = torch.cuda.get_device_properties(0)
        info.update(gpu=properties.name, gpu_memory_gib=round(properties.total_memory / 2**30, 1),
                    bf16=torch.cuda.is_bf16_supported(), cudnn=torch.backends.cudnn.version())
    return info


def cuda_tests(folder: Path, out: Path, dry_run: bool) -> dict[str, Any]:
    """``pytest -m gpu`` without the shared conftest (it imports the SimpleITK preprocessing)."""
    report = out / "gpu_tests.xml"
    os.environ["ANOMALYSEG_GPU_SAMPLE"] = str(folder / SAMPLE_FILE)  # read by Testing/test_gpu.py
    completed = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "--noconftest", "-p", "no:cacheprovider",
         f"--junitxml={report}", str(REPO / "Testing" / "test_gpu.py")],
        cwd=REPO, capture_output=True, text=True, encoding="utf-8", timeout=300)
    counts = _junit_counts(report)
    tail = (completed.stdout + completed.stderr)[-3000:]
    (out / "gpu_tests.log").write_text(completed.stdout + completed.stderr, encoding="utf-8")
    passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    # skips there: only tests that need SimpleITK (the prefetcher, which preprocesses), listed in the log
    ok = completed.returncode == 0 and (dry_run or passed > 0)
    if not ok:
        raise RuntimeError(f"pytest exit {completed.returncode}, {counts}: {tail}")
    return {**counts, "passed": passed}


def _junit_counts(report: Path) -> dict[str, int]:
    import xml.etree.ElementTree as ElementTree

    if not report.is_file():
        return {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    root = ElementTree.parse(report).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    return {key: int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped")}


def recon_benchmark(context: dict[str, Any], steps: Steps) -> dict[str, Any]:
    """``benchmarks/recon.py`` rows on the device, then channels-last and torch.compile (bf16)."""
    import numpy as np
    import recon
    import torch

    from AnomalySegLib.diffusion.reconstruction import Reconstructor
    from AnomalySegLib.diffusion.spec import ReconSpec
    from AnomalySegLib.training.config import load_config

    device, dry_run = context["device"], context["dry_run"]
    torch.backends.cudnn.benchmark = True
    configs = ["recon_tiny"] if dry_run else ["recon_cpu", "recon_paper"]
    rows = recon.run(configs, [device], cpu_slices=2, repeats=1 if dry_run else 3, chunk=None)
    # the speed options, each against the plain bf16 row of the largest config
    name = configs[-1]
    spec = ReconSpec.from_dict(load_config(name)["model"])
    network = recon.random_network(spec)
    slices = 2 if dry_run else recon.VOLUME_SLICES
    volume = np.random.default_rng(0).random((slices, 96, 96), dtype=np.float32)
    options = []
    # (option, its settings, seconds that must remain: compiling a paper-size U-Net can take minutes,
    # and the later steps must keep their time)
    variants = [("channels_last", {"channels_last": True}, 150),
                ("torch.compile", {"compile_backend": "eager" if dry_run else "inductor"}, 240)]
    for label, kwargs, needs_s in variants:
        if steps.remaining() < needs_s:
            options.append({"option": label, "error": "skipped (time budget)"})
            continue
        try:
            reconstructor = Reconstructor(spec, network, device, precision="bf16", **kwargs)
            cold = _timed_call(lambda: recon.reconstruct_volume(reconstructor, volume, seed=0), device)
            seconds, _ = recon.time_volume(reconstructor, volume, None, 1 if dry_run else 3)
            options.append({"option": label, "config": name, "precision": "bf16",
                            "seconds": seconds * recon.VOLUME_SLICES / slices, "cold_start_s": cold})
        except Exception as error:  # an option that fails here is reported, not fatal
            options.append({"option": label, "error": f"{type(error).__name__}: {error}"})
    return {"rows": rows, "options": options}


def networks_end_to_end(context: dict[str, Any]) -> dict[str, Any]:
    """The default model scores the preprocessed sample on the device; per-stage times (best of 3,
    after a cold first pass) and the difference from the CPU reference of ``prepare``."""
    import numpy as np
    import torch

    from AnomalySegLib.bundle import load_bundle
    from AnomalySegLib.resources import resources_dir
    from AnomalySegLib.scoring.volume import AnomalyScorer

    device = context["device"]
    with np.load(context["folder"] / SAMPLE_FILE, allow_pickle=False) as stored:
        sample = {key: stored[key] for key in stored.files}
    bundle = load_bundle(resources_dir() / "Models" / "default")
    rows = []
    # the dry run keeps one precision (16-bit autocast on a CPU is emulated and slow) and one timed call
    variants = (("fp32", 16), ("fp32", 1024)) if context["dry_run"] else (("fp32", 16), ("bf16", 16), ("bf16", 1024))
    for precision, seg_chunk in variants:
        scorer = AnomalyScorer.from_bundle(bundle, device=device, precision=precision)
        scorer.seg_chunk_size = seg_chunk
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        cold = 0.0
        if not context["dry_run"]:
            cold = _timed_call(lambda: scorer.score(sample["image"], sample["mask"], seed=0), device)
        runs = []
        for _ in range(1 if context["dry_run"] else 3):
            total = _timed_call(lambda: runs.append(scorer.score(sample["image"], sample["mask"], seed=0)), device)
            runs[-1].timings_s["total"] = total
        best = min(runs, key=lambda scores: scores.timings_s["total"])
        tolerance_key = "fp32" if precision == "fp32" else "bf16"
        difference = np.abs(best.anomaly_score - sample["reference_score"])
        recon_difference = np.abs(best.reconstruction - sample["reference_reconstruction"])
        row = {"precision": precision, "seg_chunk": seg_chunk, "cold_s": round(cold, 3),
               **{f"{stage}_s": round(seconds, 4) for stage, seconds in best.timings_s.items()},
               "score_max_abs_diff": float(difference.max()), "score_mean_abs_diff": float(difference.mean()),
               "recon_max_abs_diff": float(recon_difference.max()),
               "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None}
        row["within_tolerance"] = (row["recon_max_abs_diff"] <= TOLERANCE_MAX_ABS[tolerance_key]
                                   and row["score_mean_abs_diff"] <= TOLERANCE_MEAN_ABS[tolerance_key])
        rows.append(row)
    bad = [row for row in rows if not row["within_tolerance"]]
    if bad:
        raise RuntimeError(f"device scores differ from the CPU reference beyond the tolerance: {bad}")
    return {"slices": int(sample["image"].shape[0]), "rows": rows}


def training_throughput(context: dict[str, Any], steps: Steps) -> dict[str, Any]:
    """Paper-size Stage I then Stage II training on copies of the sample: steps/s from the difference
    of a short and a longer run (which cancels set-up, checkpoint and final-validation costs)."""
    device, dry_run = context["device"], context["dry_run"]
    import numpy as np

    from AnomalySegLib.preprocessing.case_folder import ModelSpaceCase
    from AnomalySegLib.training.config import load_config
    from AnomalySegLib.training.recon_training import train_recon
    from AnomalySegLib.training.seg_training import train_seg

    with np.load(context["folder"] / SAMPLE_FILE, allow_pickle=False) as stored:
        cases = [ModelSpaceCase(f"sample{i}", stored["image"], stored["mask"], None) for i in range(4)]
    # seconds of the longer run's extra steps per stage: about a minute per stage in all
    stage_budget = 0.0 if dry_run else min(40.0, max(15.0, (steps.remaining() - 60) / 2 - 20))
    results = {}
    recon_bundle = None
    for stage, config_name in (("stage1", "recon_tiny" if dry_run else "recon_paper"),
                               ("stage2", "seg_tiny" if dry_run else "seg_paper")):
        config = load_config(config_name)
        paper_steps = load_config("recon_paper" if stage == "stage1" else "seg_paper")["training"]["max_steps"]

        def train(steps_to_run: int, work: Path, config=config, stage=stage):
            config["training"].update(max_steps=steps_to_run, checkpoint_every=10**9, validate_every=10**9,
                                      log_every=10**9)
            if dry_run:
                config["training"]["validation_max_slices"] = 4
            if stage == "stage1":
                return train_recon(cases, config, work, device=device, progress=False)[0]
            return train_seg(recon_bundle, cases, [], config, work, device=device, progress=False)[0]

        with tempfile.TemporaryDirectory() as scratch:
            warmup = 2 if dry_run else 10
            short_s = _timed_call(lambda: train(warmup, Path(scratch) / "short"), device)
            measured = 3 if dry_run else int(min(5000, max(20, stage_budget / (short_s / warmup))))
            _reset_peak(device)
            bundle = {}
            long_s = _timed_call(lambda: bundle.setdefault("b", train(warmup + measured, Path(scratch) / "long")),
                                 device)
        if long_s <= short_s:  # the CPU was busy with something else: no throughput can be read off
            if not dry_run:
                raise RuntimeError(f"{stage}: {warmup + measured} steps took {long_s:.1f} s, {warmup} took {short_s:.1f} s")
            per_second = float("nan")
        else:
            per_second = measured / (long_s - short_s)
        results[stage] = {"config": config_name, "batch_size": config["training"]["batch_size"],
                          "precision": config["training"].get("precision", "auto"), "steps_timed": measured,
                          "steps_per_s": round(per_second, 3),
                          "slices_per_s": round(per_second * config["training"]["batch_size"], 1),
                          "peak_gib": _peak_gib(device), "paper_steps": paper_steps,
                          "projected_paper_schedule_h": round(paper_steps / per_second / 3600, 2)}
        if stage == "stage1":
            recon_bundle = bundle["b"]
    return results


def torchrun_check(device: str) -> dict[str, Any]:
    """``torchrun --nproc-per-node 1`` of :func:`ddp_worker`: NCCL (gloo on the CPU) for real."""
    with tempfile.TemporaryDirectory() as scratch:
        result_file = Path(scratch) / "ddp.json"
        completed = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1",
             str(Path(__file__).resolve()), "ddp-worker", "--device", device, "--result", str(result_file)],
            cwd=REPO, capture_output=True, text=True, encoding="utf-8", timeout=240)
        if completed.returncode != 0 or not result_file.is_file():
            raise RuntimeError(f"torchrun exit {completed.returncode}: {(completed.stdout + completed.stderr)[-3000:]}")
        return json.loads(result_file.read_text(encoding="utf-8"))


def ddp_worker(device_name: str, result_file: Path) -> None:
    """Inside torchrun: join the process group, all-reduce, and one DDP-wrapped Stage I training step.

    The engine treats ``WORLD_SIZE=1`` as a single process (no process group), so with one GPU the
    process group and DDP are exercised here directly; with more GPUs ``train_recon`` does the same.
    """
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from AnomalySegLib.device import autocast, autocast_dtype
    from AnomalySegLib.diffusion.reconstruction import build_network
    from AnomalySegLib.diffusion.spec import ReconSpec
    from AnomalySegLib.training.config import load_config
    from AnomalySegLib.distributed import init_distributed
    from AnomalySegLib.training.recon_training import ReconObjective

    context = init_distributed(device_name)
    device = context.device
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend)
    try:
        value = torch.ones(1, device=device)
        dist.all_reduce(value)
        spec = ReconSpec.from_dict(load_config("recon_tiny")["model"])
        torch.manual_seed(0)
        model = DistributedDataParallel(build_network(spec).to(device),
                                        device_ids=[device.index or 0] if device.type == "cuda" else None)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
        generator = torch.Generator().manual_seed(0)
        images = torch.rand((4, 1, 96, 96), generator=generator)
        with autocast(device, autocast_dtype(device, "auto")):
            loss = ReconObjective(spec, device)(model, images, generator)
        loss.backward()
        optimizer.step()
        finite = all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        result = {"backend": backend, "world_size": dist.get_world_size(), "all_reduce": float(value.item()),
                  "loss": float(loss), "gradients_finite": bool(finite), "engine_context_device": str(device)}
        if result["all_reduce"] != dist.get_world_size() or not finite:
            raise RuntimeError(f"DDP check failed: {result}")
        result_file.write_text(json.dumps(result), encoding="utf-8")
    finally:
        dist.destroy_process_group()


def _timed_call(function: Callable[[], Any], device: str) -> float:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    function()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def _reset_peak(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()


def _peak_gib(device: str) -> float | None:
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if device == "cuda" else None


# ---------------------------------------------------------------------------------------------- report


def markdown(summary: dict[str, Any]) -> str:
    """The ``gpu_check`` section of BENCHMARKS.md from a run's summary."""
    steps = summary["steps"]
    env = steps.get("environment", {})
    lines = ["## GPU check (`make gpu-check`, `scripts/gpu_check.py`)", ""]
    if summary["dry_run"]:
        lines += ["**Dry run on the CPU with tiny sizes: these numbers prove the script runs, they measure nothing.**", ""]
    lines.append(f"Measured {datetime.date.today().isoformat()} on {env.get('gpu', 'CPU')} "
                 f"({env.get('gpu_memory_gib', '–')} GiB), {env.get('cpu_cores')} CPU cores, Python {env.get('python')}, "
                 f"torch {env.get('torch')} (CUDA {env.get('cuda')}), MONAI {env.get('monai')}; "
                 f"whole check {summary['total_s']} s including set-up.")
    lines += ["", "| step | result | s |", "|---|---|---|"]
    for name, result in steps.items():
        lines.append(f"| {name} | {'ok' if result['ok'] else 'FAILED: ' + result['error'].splitlines()[0][:150]} "
                     f"| {result.get('seconds', '–')} |")
    tests = steps.get("cuda_tests", {})
    if tests.get("ok"):
        lines += ["", f"CUDA tests (`pytest -m gpu`): {tests['passed']} passed, {tests['skipped']} skipped."]
    bench = steps.get("recon_benchmark", {})
    if bench.get("ok"):
        import recon

        lines += ["", "### Stage I reconstruction on the device", "",
                  recon.markdown(bench["rows"]).split("\n", 2)[2].strip()]
        lines += ["", "Speed options (bf16, same volume; cold start = first call, compilation included):", "",
                  "| option | config | s / volume | cold start s |", "|---|---|---|---|"]
        for option in bench["options"]:
            if "error" in option:
                lines.append(f"| {option['option']} | – | {option['error'][:120]} | – |")
            else:
                lines.append(f"| {option['option']} | {option['config']} | {option['seconds']:.4f} "
                             f"| {option['cold_start_s']:.1f} |")
    e2e = steps.get("networks_end_to_end", {})
    if e2e.get("rows"):
        lines += ["", f"### Default model on MRBrainTumor1 in model space ({e2e['slices']} slices), on the device", "",
                  "Best of 3 after a cold first call; differences against the CPU fp32 reference of `prepare` "
                  f"(tolerance: reconstruction max |Δ| ≤ {TOLERANCE_MAX_ABS}, score mean |Δ| ≤ {TOLERANCE_MEAN_ABS}).",
                  "", "| precision | SegUnet rows / pass | cold s | reconstruction s | SegUnet s | scoring s | total s "
                  "| recon max \\|Δ\\| | score mean \\|Δ\\| | peak GiB |", "|---|---|---|---|---|---|---|---|---|---|"]
        for row in e2e["rows"]:
            peak = f"{row['peak_gib']:.2f}" if row["peak_gib"] is not None else "–"
            lines.append(f"| {row['precision']} | {row['seg_chunk']} | {row['cold_s']:.2f} | {row['reconstruction_s']:.4f} "
                         f"| {row.get('segmentation_network_s', 0):.4f} | {row['scoring_s']:.4f} | {row['total_s']:.4f} "
                         f"| {row['recon_max_abs_diff']:.4f} | {row['score_mean_abs_diff']:.5f} | {peak} |")
    training = steps.get("training_throughput", {})
    if training.get("ok"):
        lines += ["", "### Training throughput (paper configurations, one GPU)", "",
                  "| stage | config | batch | precision | steps/s | slices/s | peak GiB | paper schedule | "
                  "projected time of the schedule |", "|---|---|---|---|---|---|---|---|---|"]
        for stage in ("stage1", "stage2"):
            row = training[stage]
            lines.append(f"| {stage} | {row['config']} | {row['batch_size']} | {row['precision']} | {row['steps_per_s']} "
                         f"| {row['slices_per_s']} | {row['peak_gib'] if row['peak_gib'] is not None else '–'} "
                         f"| {row['paper_steps']} steps | {row['projected_paper_schedule_h']} h (projected) |")
    ddp = steps.get("torchrun", {})
    if ddp.get("ok"):
        lines += ["", f"`torchrun --nproc-per-node 1`: backend {ddp['backend']}, all-reduce {ddp['all_reduce']}, "
                  f"one DDP training step, gradients finite: {ddp['gradients_finite']}."]
    return "\n".join(lines)


def publish(results: Path) -> None:
    """Write a GPU run's ``gpu_check.md`` into BENCHMARKS.md (refuses a dry run's)."""
    from benchmark_report import write_section

    summary = json.loads((results / "summary.json").read_text(encoding="utf-8"))
    if summary["dry_run"]:
        raise SystemExit(f"{results}: a dry run's results measure nothing; not published")
    write_section(SECTION, (results / "gpu_check.md").read_text(encoding="utf-8"))
    print(f"section {SECTION} of BENCHMARKS.md written from {results}")


def _relative(path: Path) -> str:
    with contextlib.suppress(ValueError):
        return str(path.resolve().relative_to(REPO))
    return path.name


def _torch_version() -> str:
    import torch

    return torch.__version__


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("prepare", "run"):
        command = commands.add_parser(name)
        command.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="the check folder (default .gpu-check)")
        command.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU")
    commands.choices["run"].add_argument("--out", type=Path, required=True, help="results folder")
    commands.choices["run"].add_argument("--budget-s", type=float, default=420.0,
                                         help="time for the steps (set-up excluded; default 420)")
    commands.choices["run"].add_argument("--only", type=lambda text: text.split(","),
                                         help="comma-separated steps to run (default: all), e.g. to repeat one")
    publish_command = commands.add_parser("publish")
    publish_command.add_argument("results", type=Path)
    worker = commands.add_parser("ddp-worker")
    worker.add_argument("--device", default="cuda")
    worker.add_argument("--result", type=Path, required=True)
    args = parser.parse_args()
    if args.command == "prepare":
        prepare(args.dir, args.dry_run)
        return 0
    if args.command == "run":
        return run(args.dir, args.out, args.dry_run, args.budget_s, args.only)
    if args.command == "publish":
        publish(args.results)
        return 0
    ddp_worker(args.device, args.result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
