"""Choosing the torch device and numeric precision; nothing here hard-codes a device."""

from __future__ import annotations

import contextlib
import functools
import threading
import time

import torch

from .constants import DEVICES, PRECISION_CHOICES

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


#: bf16 is chosen on a CPU only when its matrix products measure at least this much faster
BF16_MIN_SPEEDUP = 1.5


def precision_name(dtype: torch.dtype) -> str:
    """The name of a precision: ``torch.bfloat16`` -> ``"bf16"``."""
    for name, dt in PRECISIONS.items():
        if dt == dtype:
            return name
    raise ValueError(f"precision {dtype} is not one of {', '.join(PRECISIONS)}")


def auto_precision(device: torch.device) -> torch.dtype:
    """The precision for interactive use: on CUDA bf16 (fp16 on GPUs without bf16), whose
    tensor cores run several times faster than fp32; on a CPU bf16 where it has bf16
    instructions (:func:`cpu_bf16_native`: AVX-512 BF16 or AMX) and its bf16 matrix products are
    not slower than fp32 (measured once per process, about 20 ms), or, where the CPU cannot say,
    at least ``BF16_MIN_SPEEDUP`` times faster; fp32 elsewhere (fp32 is exact). The input and the bilinear
    residual stay fp32 at every precision; bf16 costs about 67 dB PSNR against fp32
    (docs/performance.md)."""
    if device.type == "cuda":
        return torch.bfloat16 if _cuda_bf16(device) else torch.float16
    if device.type != "cpu":
        return torch.float32
    native = cpu_bf16_native()
    if native is False:
        return torch.float32
    # where the CPU says it has bf16 instructions, the timing only has to show that the build's
    # kernels use them (a loaded machine measured 1.2x once in six tries for a 2x speed-up, and
    # the choice then flipped to fp32 at random: twice the latent memory, a slower view)
    need = 1.0 if native else BF16_MIN_SPEEDUP
    return torch.bfloat16 if cpu_bf16_speedup() >= need else torch.float32


@functools.lru_cache(maxsize=1)
def _proc_cpuinfo() -> str:
    """Linux's /proc/cpuinfo, read once ("" where there is none)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def cpu_bf16_native(cpuinfo: str | None = None) -> bool | None:
    """Whether this x86 CPU reports native bf16 matrix instructions (``avx512_bf16`` or
    ``amx_bf16`` among the ``flags`` of Linux's /proc/cpuinfo, or of ``cpuinfo``); None where that
    cannot be told (another OS, another architecture), and the timing alone decides."""
    if cpuinfo is None:
        cpuinfo = _proc_cpuinfo()
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines()
                  if line.startswith("flags") and ":" in line), None)
    if flags is None:
        return None
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _cuda_bf16(device: torch.device) -> bool:
    try:
        return bool(torch.cuda.is_bf16_supported())
    except (RuntimeError, AssertionError, AttributeError):  # no usable CUDA here
        return True


_TF32_LOCK = threading.Lock()
_TF32_USERS = [0, None]  # calls inside exact_fp32 now, and the flags they replaced


@contextlib.contextmanager
def exact_fp32(device: torch.device, dtype: torch.dtype):
    """On CUDA at fp32: keep cuDNN convolutions and matrix products off TF32 (cuDNN uses it by
    default, which would move results ~1e-3 away from the official algorithm) for the
    duration of the call; elsewhere nothing.

    torch keeps these flags per process, not per thread. They are switched only while at
    least one such call runs (counted, so that concurrent calls from the render thread and
    dask threads neither restore them under one another nor leave them switched), and
    restored to what they were after the last one; other threads' fp32 work during that time
    runs exact too, which only makes it slower. No other setting (benchmark, deterministic)
    is touched."""
    if device.type != "cuda" or dtype != torch.float32:
        yield
        return
    with _TF32_LOCK:
        if _TF32_USERS[0] == 0:
            _TF32_USERS[1] = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
        _TF32_USERS[0] += 1
    try:
        yield
    finally:
        with _TF32_LOCK:
            _TF32_USERS[0] -= 1
            if _TF32_USERS[0] == 0:
                torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = _TF32_USERS[1]


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
