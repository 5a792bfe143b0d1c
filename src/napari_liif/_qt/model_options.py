"""The model options shared by the LIIF widgets, as magicgui widgets: checkpoint, device, precision, cell."""

from __future__ import annotations

from pathlib import Path

from magicgui.widgets import ComboBox, Container, FileEdit

from ..bundled import BUNDLED, DEFAULT, names
from ..constants import CELL_MODES, PRECISION_CHOICES

#: the checkpoint choice that reads a file given in the ``file`` field
FILE = "file…"
CHECKPOINT_FILTER = "Checkpoints (*.pth *.safetensors)"


def _checkpoint_tooltip(choices: list[str]) -> str:
    lines = [f"{n}: {BUNDLED[n].purpose}" for n in choices if n in BUNDLED]
    return "\n".join(["bundled models (no download):", *lines,
                      f"{FILE} an official LIIF/LMF .pth or a napari-liif .safetensors file"])


class ModelOptions(Container):
    """Checkpoint (a bundled model by name, or a file), device, precision and cell mode.

    ``changed`` (magicgui's) is emitted whenever any option changes; :meth:`options` returns
    plain values for a worker thread and :meth:`model` loads (and caches) the chosen model.

    Parameters
    ----------
    precision : str
        The initial precision (the live view prefers ``"auto"``, the batch widget exact ``"fp32"``).
    """

    def __init__(self, *, precision: str = "fp32"):
        from ..device import available_devices

        bundled = names()
        choices = [*bundled, FILE]
        super().__init__(labels=True, widgets=[
            ComboBox(name="checkpoint", choices=choices, value=DEFAULT if DEFAULT in bundled else choices[0],
                     tooltip=_checkpoint_tooltip(choices)),
            FileEdit(name="file", mode="r", filter=CHECKPOINT_FILTER, visible=False,
                     tooltip="an official LIIF/LMF .pth or a napari-liif .safetensors file"),
            ComboBox(name="device", choices=["auto", *available_devices()],
                     tooltip="auto: CUDA, then Apple MPS, then the CPU"),
            ComboBox(name="precision", choices=list(PRECISION_CHOICES), value=precision,
                     tooltip="auto: bf16 on CUDA and on CPUs with fast bf16 matrix products "
                             "(about 67 dB from fp32), fp32 elsewhere"),
            ComboBox(name="cell", choices=list(CELL_MODES),
                     tooltip="on: the true output cell; off: the input pixel's cell; clamp: never finer than x4"),
        ])
        self.checkpoint.changed.connect(self._show_file)
        self._show_file()

    def _show_file(self, *_) -> None:
        self.file.visible = self.checkpoint.value == FILE

    def set_checkpoint(self, checkpoint) -> None:
        """Choose a bundled model by name, a checkpoint file (a path), or None (the default model)."""
        if checkpoint is None:
            checkpoint = DEFAULT
        if isinstance(checkpoint, str) and checkpoint in self.checkpoint.choices:
            self.checkpoint.value = checkpoint
            return
        self.file.value = Path(checkpoint)
        self.checkpoint.value = FILE

    @property
    def checkpoint_value(self) -> str:
        """The chosen bundled model's name, or the chosen file's path; a ValueError if no file is given."""
        if self.checkpoint.value != FILE:
            return self.checkpoint.value
        text = str(self.file.value) if self.file.value is not None else ""
        if text in ("", "."):
            raise ValueError(f"checkpoint is {FILE!r} but no file is chosen: pick a .pth or .safetensors file, "
                             f"or a bundled model ({', '.join(names()) or 'none installed'})")
        return text

    def options(self) -> dict:
        """Plain values, for passing to a worker thread (a ValueError if the checkpoint file is missing)."""
        return {"checkpoint": self.checkpoint_value, "device": self.device.value,
                "precision": self.precision.value, "cell": self.cell.value}

    def model(self):
        """Load (cached per checkpoint/device/precision) the chosen model; raises CheckpointError."""
        from ..api import get_model

        o = self.options()
        return get_model(o["checkpoint"], o["device"], o["precision"])
