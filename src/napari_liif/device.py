"""Choosing the torch device and numeric precision; nothing here hard-codes a device."""

from __future__ import annotations

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


def resolve_precision(precision: str | torch.dtype = "fp32") -> torch.dtype:
    """``fp32|bf16|fp16`` (or a torch dtype) -> torch dtype."""
    if isinstance(precision, torch.dtype):
        if precision not in PRECISIONS.values():
            raise ValueError(f"precision {precision} is not one of {', '.join(PRECISIONS)}")
        return precision
    key = str(precision).lower()
    if key not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    return PRECISIONS[key]
