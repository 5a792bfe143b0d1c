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
    """One bundled model and its measured figures: the table that the automatic model choice
    (:mod:`napari_liif.model_choice`) and ``napari-liif models`` read. After retraining a model,
    edit its ``gains`` here and its table in docs/model-card.md (a test checks they agree)."""

    name: str
    filename: str
    family: str
    purpose: str
    data: str  # what it was trained for and is chosen for: "photo" or "microscopy"
    gains: tuple[tuple[int, float], ...]  # (scale, dB gain over bicubic) on the held-out set of its data
    held_out: str  # that held-out set
    decoder_macs: int  # decoder multiply-adds per output sample (`napari-liif models`): the speed key
    note: str = ""  # further measured figures

    @property
    def path(self) -> Path:
        return WEIGHTS_DIR / self.filename

    @property
    def quality(self) -> str:
        """The measured gains in one line, e.g. ``x2 +2.95, x4 +2.61 dB (11 held-out photos)``."""
        gains = ", ".join(f"x{s} {g:+.2f}" for s, g in self.gains)
        return f"{gains} dB{', ' + self.note if self.note else ''} ({self.held_out})"


PHOTOS = "11 held-out photos, 480 px crops"
BUNDLED: dict[str, Bundled] = {b.name: b for b in (
    Bundled("default", "liif-edsr-baseline-default.safetensors", "liif",
            "best quality on photographs; the default of upscale() and the command line", "photo",
            ((2, 2.95), (3, 2.70), (4, 2.61), (6, 2.06), (12, 1.74)), PHOTOS, 793_600),
    Bundled("fast", "lmliif-edsr-baseline-fast.safetensors", "lmliif",
            "LM-LIIF: 6.6 k decoder MACs per pixel (LIIF: 794 k) plus 163 k per latent and cell", "photo",
            ((2, 2.82), (3, 2.60), (4, 2.57), (6, 2.02), (12, 1.71)), PHOTOS, 6_592),
    Bundled("microscopy", "liif-edsr-baseline-microscopy.safetensors", "liif",
            "fluorescence: camera-binned noisy 16-bit input; denoises while upscaling (preserve_flux for "
            "measurements)", "microscopy", ((2, 3.15), (4, 2.53)), "8 held-out generated scenes", 793_600,
            note="bias +0.01 %"),
    Bundled("fast-microscopy", "lmliif-edsr-baseline-fast-microscopy.safetensors", "lmliif",
            "LM-LIIF on the microscopy model's encoder: fluorescence at 6.6 k decoder MACs per pixel (microscopy: "
            "794 k)", "microscopy", ((2, 2.95), (4, 2.46)), "8 held-out generated scenes", 6_592, note="bias -0.03 %"),
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
