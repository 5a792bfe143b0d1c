"""The model options shared by the LIIF widgets: checkpoint, device, precision, cell mode."""

from __future__ import annotations

from pathlib import Path

from qtpy.QtCore import Signal
from qtpy.QtWidgets import QComboBox, QFileDialog, QFormLayout, QHBoxLayout, QPushButton, QWidget

from ..api import get_model
from ..device import available_devices

BUNDLED = "bundled default"


class ModelOptions(QWidget):
    """Pickers for checkpoint (bundled default or a file), device, precision and cell mode.

    ``changed`` is emitted whenever any option changes; ``model()`` loads (and caches) the
    chosen model; ``cell`` is the chosen cell mode.
    """

    changed = Signal()

    def __init__(self, parent=None, *, precision: str = "fp32"):
        super().__init__(parent)
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        self.checkpoint = QComboBox()
        self.checkpoint.addItem(BUNDLED)
        browse = QPushButton("…")
        browse.setToolTip("Load an official LIIF .pth or a napari-liif .safetensors file")
        browse.clicked.connect(self._browse)
        row = QHBoxLayout()
        row.addWidget(self.checkpoint, 1)
        row.addWidget(browse)
        form.addRow("checkpoint", row)
        self.device = self._combo(["auto"] + available_devices())
        self.precision = self._combo(["auto", "fp32", "bf16", "fp16"])
        self.precision.setCurrentText(precision)
        self.precision.setToolTip("auto: bf16 on CPUs with fast bf16 matrix products (about 67 dB from fp32), "
                                  "fp32 elsewhere")
        self.cell_mode = self._combo(["on", "off", "clamp"])
        self.cell_mode.setToolTip("on: true output cell; off: the input pixel's cell; clamp: never finer than x4")
        form.addRow("device", self.device)
        form.addRow("precision", self.precision)
        form.addRow("cell", self.cell_mode)
        self.checkpoint.currentIndexChanged.connect(lambda *_: self.changed.emit())

    def _combo(self, items: list[str]) -> QComboBox:
        box = QComboBox()
        box.addItems(items)
        box.currentIndexChanged.connect(lambda *_: self.changed.emit())
        return box

    def _browse(self):
        path, _ = QFileDialog.getOpenFileName(self, "LIIF checkpoint", "", "Checkpoints (*.pth *.safetensors)")
        if path:
            self.set_checkpoint(path)

    def set_checkpoint(self, path: str | None) -> None:
        """Select a checkpoint file (None: the bundled default)."""
        if path is None:
            self.checkpoint.setCurrentIndex(0)
            return
        if self.checkpoint.findText(str(path)) < 0:
            self.checkpoint.addItem(str(path))
        self.checkpoint.setCurrentText(str(path))

    @property
    def checkpoint_path(self) -> Path | None:
        text = self.checkpoint.currentText()
        return None if text == BUNDLED else Path(text)

    @property
    def cell(self) -> str:
        return self.cell_mode.currentText()

    def options(self) -> dict:
        """Plain values, for passing to a worker thread."""
        return {"checkpoint": self.checkpoint_path, "device": self.device.currentText(),
                "precision": self.precision.currentText(), "cell": self.cell}

    def model(self):
        """Load (cached per checkpoint/device/precision) the chosen model; raises CheckpointError."""
        o = self.options()
        return get_model(o["checkpoint"], o["device"], o["precision"])
