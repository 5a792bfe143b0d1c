"""Choosing the torch device and numeric precision; nothing here hard-codes a device."""

from __future__ import annotations

import functools
import time

import torch

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def available_devices() -> list[str]:
    """Concrete devices usable on this machine, best first."""
    found = []
    if torch.cuda.is_available():
        found.append("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        found.append("mps")
    return found + ["cpu"]


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto`` picks CUDA, then MPS, then CPU; an unavailable choice is a ValueError."""
    if isinstance(device, torch.device):
        device = str(device)
    device = (device or "auto").lower()
    kind = device.split(":")[0]
    if kind not in DEVICES:
        raise ValueError(f"device {device!r} is not one of {', '.join(DEVICES)}")
    have = available_devices()
    if kind == "auto":
        return torch.device(have[0])
    if kind not in have:
        raise ValueError(f"device {device!r} is not available here; available: {', '.join(['auto'] + have)}")
    return torch.device(device)


def resolve_precision(precision: str | torch.dtype = "fp32", device: str | torch.device | None = None) -> torch.dtype:
    """``fp32|bf16|fp16|auto`` (or a torch dtype) -> torch dtype; ``auto`` is
    :func:`auto_precision` on ``device`` (default: the ``auto`` device)."""
    if isinstance(precision, torch.dtype):
        if precision not in PRECISIONS.values():
            raise ValueError(f"precision {precision} is not one of {', '.join(PRECISIONS)}")
        return precision
    key = str(precision).lower()
    if key == "auto":
        return auto_precision(resolve_device(device or "auto"))
    if key not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {', '.join(PRECISION_CHOICES)}")
    return PRECISIONS[key]


PRECISION_CHOICES = ("auto",) + tuple(PRECISIONS)
#: bf16 is chosen on a CPU only when its matrix products measure at least this much faster
BF16_MIN_SPEEDUP = 1.5


def auto_precision(device: torch.device) -> torch.dtype:
    """The precision for interactive use: bf16 on a CPU whose bf16 matrix products are at
    least ``BF16_MIN_SPEEDUP`` times faster than fp32 (AVX-512 BF16 or AMX; measured once per
    process, about 20 ms), fp32 everywhere else (GPUs are fast enough in fp32, and fp32 is
    exact). bf16 costs about 67 dB PSNR against fp32 (docs/performance.md)."""
    if device.type != "cpu":
        return torch.float32
    return torch.bfloat16 if cpu_bf16_speedup() >= BF16_MIN_SPEEDUP else torch.float32


@functools.lru_cache(maxsize=None)
def cpu_bf16_speedup() -> float:
    """How many times faster a decoder-sized matrix product (2048 x 256 x 256) runs in bf16
    than in fp32 on this CPU (best of 5 each)."""
    def best(dtype):
        x, w = torch.randn(2048, 256).to(dtype), torch.randn(256, 256).to(dtype)
        with torch.inference_mode():
            torch.nn.functional.linear(x, w)
            times = []
            for _ in range(5):
                t = time.perf_counter()
                torch.nn.functional.linear(x, w)
                times.append(time.perf_counter() - t)
        return min(times)

    try:
        return best(torch.float32) / best(torch.bfloat16)
    except RuntimeError:  # no bf16 kernels in this build
        return 0.0
