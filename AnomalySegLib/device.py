"""Where the engine computes: device choice, mixed-precision dtype and CPU thread count.

One place decides, so the CLI, training, inference and benchmarks behave alike:
``auto`` picks CUDA, then Apple MPS, then the CPU.
"""

from __future__ import annotations

import contextlib
import os
from contextlib import AbstractContextManager

import torch

from AnomalySegLib.choices import PRECISIONS
from AnomalySegLib.errors import AnomalySegError


class DeviceUnavailableError(AnomalySegError, ValueError):
    """The requested device does not exist on this machine (a one-line CLI error)."""


def choose_device(request: str | torch.device = "auto") -> torch.device:
    """The device to run on.

    Args:
        request: ``"auto"`` (CUDA → MPS → CPU), or any torch device string (``"cpu"``, ``"cuda:1"``).

    Raises:
        DeviceUnavailableError: a CUDA/MPS device was asked for but is not available, or the name is
            not a device.
    """
    if isinstance(request, torch.device):
        request = str(request)
    if request == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(request)
    except RuntimeError as error:
        raise DeviceUnavailableError(f"{request!r} is not a device name (use auto, cpu, cuda, cuda:1, mps)") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailableError(f"device {request!r} asked for, but this torch build sees no CUDA GPU")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise DeviceUnavailableError(f"device {request!r} asked for, but there are {torch.cuda.device_count()} GPUs")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceUnavailableError(f"device {request!r} asked for, but Apple MPS is not available")
    return device


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device``; ``None`` means plain fp32.

    ``auto`` is bf16 on GPUs that support it (fp16 otherwise), bf16 on CPUs that compute it in
    hardware (:func:`cpu_has_native_bf16`: about 1.5× faster for the whole ``segment`` there, scores within
    0.06 of fp32; docs/design.md "Measured costs the code relies on") and fp32 elsewhere (CPUs that would
    emulate bf16, where it can be slower than fp32, and MPS).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return None


#: /proc/cpuinfo flags of x86 instructions that compute bf16 products in hardware.
NATIVE_BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (x86 AVX512-BF16 or AMX-BF16, read from Linux's
    /proc/cpuinfo; ``False`` where that file does not exist). torch has no public query for it:
    ``torch.ops.mkldnn._is_mkldnn_bf16_supported`` is also true on CPUs that only emulate bf16."""
    return bool(NATIVE_BF16_CPU_FLAGS & _cpu_flags())


def _cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def precision_name(dtype: torch.dtype | None) -> str:
    """The precision an autocast dtype stands for: ``None`` → ``"fp32"``, bfloat16 → ``"bf16"``, float16 → ``"fp16"``."""
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def autocast(device: torch.device, dtype: torch.dtype | None) -> AbstractContextManager:
    """``torch.autocast`` for ``dtype`` on ``device``, or a no-op context for fp32."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def set_cpu_threads(threads: int | None = None) -> int:
    """Set torch's intra-op CPU threads (default: ``$ANOMALYSEG_THREADS`` or all cores); returns it."""
    if threads is None:
        threads = int(os.environ.get("ANOMALYSEG_THREADS", "0")) or (os.cpu_count() or 1)
    torch.set_num_threads(max(1, threads))
    return torch.get_num_threads()


def describe(device: torch.device) -> str:
    """A human-readable name of the machine part that computes, e.g. for benchmark tables."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return "Apple MPS"
    return f"CPU {cpu_model()} ({torch.get_num_threads()} threads)"


def cpu_model() -> str:
    """The processor's model name (Linux: /proc/cpuinfo), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()
