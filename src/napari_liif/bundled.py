"""The models that ship with napari-liif, by name.

``load_model("fast")``, ``--checkpoint fast`` and the widgets' pickers all resolve names
here. A name is a bare word (no folder, no suffix); anything else is a path to a checkpoint
file. The quality figures are measured (docs/model-card.md says how); ``resolve`` never
downloads anything: a bundled file missing from an installation is a clear error.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

WEIGHTS_DIR = Path(__file__).parent / "weights"


@dataclass(frozen=True)
class Bundled:
    name: str
    filename: str
    family: str
    purpose: str
    quality: str  # measured gain over bicubic on the held-out images (docs/model-card.md)

    @property
    def path(self) -> Path:
        return WEIGHTS_DIR / self.filename


BUNDLED: dict[str, Bundled] = {b.name: b for b in (
    Bundled("default", "liif-edsr-baseline-default.safetensors", "liif",
            "best quality on photographs; the default of upscale() and the batch tools",
            "x2 +2.95, x4 +2.61, x12 +1.74 dB (11 held-out photos, 480 px crops)"),
    Bundled("fast", "lmliif-edsr-baseline-fast.safetensors", "lmliif",
            "LM-LIIF: 6.6 k decoder MACs per pixel (LIIF: 794 k) plus 163 k per latent and cell",
            "x2 +2.54, x4 +2.34, x12 +1.55 dB (11 held-out photos, 480 px crops)"),
    Bundled("microscopy", "liif-edsr-baseline-microscopy.safetensors", "liif",
            "fluorescence: camera-binned noisy 16-bit input; denoises while upscaling (preserve_flux for "
            "measurements)", "x2 +3.15, x4 +2.53 dB, bias +0.01 % (8 held-out generated scenes)"),
)}

#: the model that upscale(), the CLI and the batch widget use when none is given
DEFAULT = "default"


def names() -> list[str]:
    """Names of the bundled models present in this installation."""
    return [n for n, b in BUNDLED.items() if b.path.is_file()]


def is_name(value) -> bool:
    """Whether ``value`` is meant as a bundled model's name rather than a path."""
    return isinstance(value, str) and value in BUNDLED


def resolve(checkpoint) -> Path:
    """Path of a checkpoint given as a bundled name, a path, or None (the default model)."""
    from .checkpoint import CheckpointError

    if checkpoint is None:
        checkpoint = DEFAULT
    if not is_name(checkpoint):
        path = Path(checkpoint)
        if isinstance(checkpoint, str) and not path.exists() and not path.suffix and len(path.parts) == 1:
            raise CheckpointError(f"{checkpoint}: neither a bundled model nor a file; bundled models: "
                                  f"{', '.join(BUNDLED)} (napari-liif models), or give a .pth/.safetensors path")
        return path
    b = BUNDLED[checkpoint]
    if not b.path.is_file():
        raise CheckpointError(f"{b.path}: the bundled model {b.name!r} is missing from this installation; "
                              f"reinstall napari-liif or pass --checkpoint PATH (available: "
                              f"{', '.join(names()) or 'none'})")
    return b.path
