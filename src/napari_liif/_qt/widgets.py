"""The "LIIF zoom" dock widget: pick a layer and model options, switch live zoom on or off.

The widget only reads its inputs and drives a :class:`~napari_liif._qt.controller.LiveZoom`.
"""

from __future__ import annotations

import functools

from qtpy.QtCore import QEvent
from qtpy.QtWidgets import QCheckBox, QComboBox, QFormLayout, QLabel, QProgressBar, QVBoxLayout, QWidget

from .controller import LiveZoom, default_tile
from .controller import model_loader as _loader  # this module's name for it (tests replace it)
from .model_options import ModelOptions


class LiveZoomWidget(QWidget):
    """Dock widget: image layer, model options, a live switch, a status line and progress."""

    def __init__(self, napari_viewer, parent=None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.controller: LiveZoom | None = None
        self._model_key = None
        self.layer_box = QComboBox()
        self.layer_box.setToolTip("the image layer to render with LIIF")
        self.options = ModelOptions(precision="auto")  # interactive: the fastest good precision
        self.live = QCheckBox("live LIIF zoom")
        self.live.setToolTip("render the visible region at screen resolution while you zoom and pan")
        self.status = QLabel("off")
        self.status.setWordWrap(True)
        self.bar = QProgressBar()
        self.bar.setRange(0, 1)
        self.bar.setValue(0)
        self.bar.setFormat("%v of %m tiles")

        form = QFormLayout()
        form.addRow("layer", self.layer_box)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(self.options)
        lay.addWidget(self.live)
        lay.addWidget(self.status)
        lay.addWidget(self.bar)
        lay.addStretch(1)

        self._refresh_layers()
        layers = napari_viewer.layers
        self._events = [layers.events.inserted, layers.events.removed, layers.events.reordered]
        for e in self._events:
            e.connect(self._refresh_layers)
        self.live.toggled.connect(self._on_live)
        self.layer_box.currentIndexChanged.connect(self._on_layer)
        self.options.changed.connect(self._on_options)

    # -- inputs ------------------------------------------------------------------------
    def _candidates(self):
        from napari.layers import Image, Labels

        return [ly for ly in self.viewer.layers
                if isinstance(ly, (Image, Labels)) and "napari_liif_overlay_of" not in ly.metadata]

    def _refresh_layers(self, event=None) -> None:
        current = self.layer_box.currentText()
        names = [ly.name for ly in self._candidates()]
        self.layer_box.blockSignals(True)
        self.layer_box.clear()
        self.layer_box.addItems(names)
        if current in names:
            self.layer_box.setCurrentText(current)
        self.layer_box.blockSignals(False)
        if self.layer_box.currentText() != current:
            self._on_layer()

    def selected_layer(self):
        name = self.layer_box.currentText()
        return self.viewer.layers[name] if name in self.viewer.layers else None

    # -- actions -----------------------------------------------------------------------
    def _on_live(self, on: bool) -> None:
        self._stop()
        if on:
            self._start()

    def _on_layer(self, *_):
        if self.live.isChecked():
            self._stop()
            self._start()

    def _on_options(self) -> None:
        if self.controller is None:
            return
        o = self.options.options()
        model_key = (o["checkpoint"], o["device"], o["precision"])
        if model_key != self._model_key:  # a cell change alone keeps the encoded image
            self._model_key = model_key
            self.controller.set_model(functools.partial(_loader, *model_key))
        self.controller.set_cell(o["cell"])

    def _start(self) -> None:
        layer = self.selected_layer()
        if layer is None:
            self._show("no image layer: open an image first")
            return
        o = self.options.options()
        self._model_key = (o["checkpoint"], o["device"], o["precision"])
        loader = functools.partial(_loader, *self._model_key)
        try:
            self.controller = LiveZoom(self.viewer, layer, loader, cell=o["cell"], tile=default_tile(o["device"]))
        except (TypeError, ValueError) as exc:
            self._show(str(exc))
            return
        self.controller.status.connect(self._show)
        self.controller.progress.connect(self._progress)
        self.controller.detached.connect(self._on_detached)
        self._show(self.controller.message)

    def _stop(self) -> None:
        ctl, self.controller = self.controller, None
        if ctl is not None:
            ctl.detached.disconnect(self._on_detached)
            ctl.detach()
            self._show("off")
            self._progress(0, 0)

    def _on_detached(self) -> None:
        # the controller let go by itself (its layer or overlay was removed)
        self.controller = None
        self.live.blockSignals(True)
        self.live.setChecked(False)
        self.live.blockSignals(False)
        self._show("off: the layer was removed")

    def _show(self, message: str) -> None:
        self.status.setText(message)

    def _progress(self, done: int, total: int) -> None:
        self.bar.setRange(0, max(total, 1))
        self.bar.setValue(done)

    # -- lifetime ----------------------------------------------------------------------
    def shutdown(self) -> None:
        """Stop live zoom and disconnect from the viewer (the widget is closing)."""
        self._stop()
        for e in self._events:
            e.disconnect(self._refresh_layers)
        self._events = []

    def closeEvent(self, event):
        self.shutdown()
        super().closeEvent(event)

    def event(self, ev):
        # napari's remove_dock_widget un-parents the widget rather than closing it
        if ev.type() == QEvent.Type.ParentChange and self.parent() is None and getattr(self, "_events", None):
            self.shutdown()
        return super().event(ev)
