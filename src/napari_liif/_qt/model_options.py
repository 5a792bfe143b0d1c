"""The model options shared by the LIIF widgets, as magicgui widgets: checkpoint, device, precision, cell.

The checkpoint picker starts at ``auto``: the model :mod:`napari_liif.model_choice` takes for the
widget's layer (microscopy for single-channel data, the photo model for RGB), shown with its reason
on the line under it (``chosen``); a named model or a file picked by the user always wins."""

from __future__ import annotations

from pathlib import Path

from magicgui.widgets import ComboBox, Container, FileEdit, Label

from ..bundled import BUNDLED, names
from ..constants import CELL_MODES, PRECISION_CHOICES
from ..model_choice import Choice, choose_for_layer

#: the checkpoint choice that reads a file given in the ``file`` field
FILE = "file…"
#: the checkpoint choice that lets the layer decide (:mod:`napari_liif.model_choice`)
AUTO = "auto"
CHECKPOINT_FILTER = "Checkpoints (*.pth *.safetensors)"


def _checkpoint_tooltip(choices: list[str]) -> str:
    lines = [f"{n}: {BUNDLED[n].purpose}" for n in choices if n in BUNDLED]
    return "\n".join([f"{AUTO}: microscopy for single-channel layers, the photo model for RGB (the line below says "
                      "which and why)", "bundled models (no download):", *lines,
                      f"{FILE} an official LIIF/LMF .pth or a napari-liif .safetensors file"])


class ModelOptions(Container):
    """Checkpoint (a bundled model by name, or a file), device, precision and cell mode.

    ``changed`` (magicgui's) is emitted whenever any option changes; :meth:`options` returns
    plain values for a worker thread and :meth:`model` loads (and caches) the chosen model.
    With ``auto`` the model depends on the layer given to :meth:`set_layer`.

    Parameters
    ----------
    precision : str
        The initial precision (the live view prefers ``"auto"``, the batch widget exact ``"fp32"``).
    use : {"upscale", "live"}
        What ``auto`` chooses for (:func:`napari_liif.model_choice.pick`).
    """

    def __init__(self, *, precision: str = "fp32", use: str = "upscale"):
        from ..device import available_devices

        choices = [AUTO, *names(), FILE]
        self.use = use
        self._layer = None
        self._live: Choice | None = None
        super().__init__(labels=True, widgets=[
            ComboBox(name="checkpoint", choices=choices, value=AUTO, tooltip=_checkpoint_tooltip(choices)),
            Label(name="chosen", label="", value=""),
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
        self.chosen.native.setWordWrap(True)
        self.checkpoint.changed.connect(self._show_file)
        self.file.changed.connect(self.show_choice)
        self._show_file()

    def _show_file(self, *_) -> None:
        self.file.visible = self.checkpoint.value == FILE
        self.show_choice()

    def set_layer(self, layer) -> None:
        """The layer that ``auto`` chooses for (None: the photo model)."""
        self._layer = layer
        self.show_choice()

    def choice(self, auto: Choice | None = None) -> Choice:
        """The model to use and why: the one picked, or with ``auto`` picked, ``auto`` (when given:
        a choice for files) or the layer's; a ValueError if the checkpoint is a file but none is given."""
        if self.checkpoint.value == AUTO:
            c = auto or choose_for_layer(self._layer, self.use)
            return Choice(c.name, f"auto: {c.reason}")
        return Choice(self.checkpoint_value, "picked")

    def set_live(self, choice: Choice | None) -> None:
        """Show ``choice`` as the model that is live now (None: show the one the options give)."""
        self._live = choice
        self.show_choice()

    def show_choice(self, *_) -> None:
        """Say under the picker which model runs (or would) and why."""
        if self._live is not None:
            c, what = self._live, "live model"
        else:
            try:
                c, what = self.choice(), "model"
            except ValueError:  # "file…" with no file: the status line says so when it matters
                c, what = None, ""
        with self.chosen.changed.blocked():
            self.chosen.value = f"{what}: {Path(c.name).name} ({c.reason})" if c else ""

    def set_checkpoint(self, checkpoint) -> None:
        """Choose a bundled model by name, a checkpoint file (a path), or None (``auto``)."""
        if checkpoint is None:
            checkpoint = AUTO
        if isinstance(checkpoint, str) and checkpoint in self.checkpoint.choices:
            self.checkpoint.value = checkpoint
            return
        self.file.value = Path(checkpoint)
        self.checkpoint.value = FILE

    @property
    def checkpoint_value(self) -> str:
        """The picked bundled model's name (``auto``'s for the layer), or the chosen file's path; a
        ValueError if no file is given."""
        if self.checkpoint.value == AUTO:
            return self.choice().name
        if self.checkpoint.value != FILE:
            return self.checkpoint.value
        text = str(self.file.value) if self.file.value is not None else ""
        if text in ("", "."):
            raise ValueError(f"checkpoint is {FILE!r} but no file is chosen: pick a .pth or .safetensors file, "
                             f"or a bundled model ({', '.join(names()) or 'none installed'})")
        return text

    def options(self, auto: Choice | None = None) -> dict:
        """Plain values, for passing to a worker thread (a ValueError if the checkpoint file is missing);
        ``auto``: see :meth:`choice`."""
        return {"checkpoint": self.choice(auto).name, "device": self.device.value,
                "precision": self.precision.value, "cell": self.cell.value}

    def model(self):
        """Load (cached per checkpoint/device/precision) the chosen model; raises CheckpointError."""
        from ..api import get_model

        o = self.options()
        return get_model(o["checkpoint"], o["device"], o["precision"])
