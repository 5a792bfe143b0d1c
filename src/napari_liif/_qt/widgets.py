"""The "LIIF zoom" dock widget: pick an image layer and model options, switch live zoom on or off.

The form is made of magicgui widgets (:mod:`.dock`); the widget only reads its inputs and
drives a :class:`~napari_liif._qt.controller.LiveZoom`. A view that takes longer than
``ACTIVITY_DELAY_MS`` to render (the first encode of a large layer, a slow device) also shows
in napari's activity dock (``napari.utils.progress``); errors reach napari's notifications.
"""

from __future__ import annotations

import functools

from magicgui.widgets import CheckBox, Container, Label, ProgressBar
from superqt.utils import qthrottled

from .controller import LiveZoom, default_tile
from .controller import model_loader as _loader  # this module's name for it (tests replace it)
from .dock import ViewerDockWidget, image_layer_picker, notify_error
from .model_options import ModelOptions

#: a view still rendering after this long gets a progress bar in napari's activity dock
ACTIVITY_DELAY_MS = 500


class LiveZoomWidget(ViewerDockWidget):
    """Dock widget: image layer, model options, a live switch, a status line and progress.

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer
        The viewer whose image layers are offered and rendered.
    """

    def __init__(self, napari_viewer, parent=None):
        super().__init__(napari_viewer, parent)
        self.controller: LiveZoom | None = None
        self._model_key = None
        self._activity = None  # the napari.utils.progress of the view being rendered, if shown
        self._last_error = None
        self._tiles = (0, 0)  # the last (done, total) tiles reported by the controller
        self.source = image_layer_picker(napari_viewer, tooltip="the image layer to render with LIIF")
        self.options = ModelOptions(precision="auto")  # interactive: the fastest good precision
        self.live = CheckBox(text="live LIIF zoom",
                             tooltip="render the visible region at screen resolution while you zoom and pan")
        self.status = Label(value="off")
        self.bar = ProgressBar(min=0, max=1, value=0, label="tiles")
        self._set_form(Container(widgets=[self.source, self.options, self.live, self.status, self.bar]))
        self.status.native.setWordWrap(True)
        # at most one activity-dock update per interval, the first one ACTIVITY_DELAY_MS after a view starts
        self._activity_update = qthrottled(self._update_activity, timeout=ACTIVITY_DELAY_MS, leading=False)

        self.live.changed.connect(self._on_live)
        self.source.changed.connect(self._on_layer)
        self.options.changed.connect(self._on_options)

    def selected_layer(self):
        """The chosen source layer, or None."""
        return self.source.value

    # -- actions -----------------------------------------------------------------------
    def _on_live(self, on: bool) -> None:
        self._stop()
        if on:
            self._start()

    def _on_layer(self, *_):
        if self.live.value:
            self._stop()
            self._start()

    def _model_options(self):
        """``(checkpoint, device, precision), cell``; a ValueError for a missing checkpoint file."""
        o = self.options.options()
        return (o["checkpoint"], o["device"], o["precision"]), o["cell"]

    def _on_options(self, *_) -> None:
        if self.controller is None:
            return
        try:
            model_key, cell = self._model_options()
        except ValueError as exc:
            self._show(str(exc))
            return
        if model_key != self._model_key:  # a cell change alone keeps the encoded image
            self._model_key = model_key
            self.controller.set_model(functools.partial(_loader, *model_key))
        self.controller.set_cell(cell)

    def _start(self) -> None:
        layer = self.selected_layer()
        if layer is None:
            self._refuse("no image layer: open an image first")
            return
        try:
            self._model_key, cell = self._model_options()
            loader = functools.partial(_loader, *self._model_key)
            self.controller = LiveZoom(self.viewer, layer, loader, cell=cell, tile=default_tile(self._model_key[1]))
        except (TypeError, ValueError) as exc:
            self._refuse(str(exc))
            return
        self.controller.status.connect(self._show)
        self.controller.progress.connect(self._progress)
        self.controller.detached.connect(self._on_detached)
        self._show(self.controller.message)
        plan = self.controller.plan  # the first view was planned while attaching, before these connections
        if plan is not None:
            self._progress(len(plan.tiles) - self.controller.pending_tiles, len(plan.tiles))

    def _refuse(self, message: str) -> None:
        """Live zoom could not start: say why here and in napari's notifications; untick the switch."""
        self._show(message)
        notify_error(f"LIIF zoom: {message}")
        self._untick()

    def _stop(self) -> None:
        ctl, self.controller = self.controller, None
        if ctl is not None:
            ctl.detached.disconnect(self._on_detached)
            ctl.status.disconnect(self._show)
            ctl.progress.disconnect(self._progress)
            ctl.detach()
            self._show("off")
            self._progress(0, 0)

    def _untick(self) -> None:
        with self.live.changed.blocked():
            self.live.value = False

    def _on_detached(self) -> None:
        # the controller let go by itself (its layer or overlay was removed)
        self.controller = None
        self._untick()
        self._show("off: the layer was removed")
        self._progress(0, 0)

    def _show(self, message: str) -> None:
        self.status.value = message
        if message.startswith("error") and message != self._last_error:
            notify_error(f"LIIF zoom: {message}")  # once per distinct error, not per status update
        self._last_error = message if message.startswith("error") else None

    def _progress(self, done: int, total: int) -> None:
        self._tiles = (done, total)
        self.bar.max = max(total, 1)
        self.bar.value = done
        if done >= total:
            self._close_activity()
        else:
            self._activity_update()

    # -- napari's activity dock ------------------------------------------------------------
    def _update_activity(self) -> None:
        done, total = self._tiles  # the latest report (the bar shows 0 of 1 for "nothing to render")
        if self.controller is None or done >= total:
            return
        if self._activity is None or self._activity.total != total:
            from napari.utils import progress

            self._close_activity()
            self._activity = progress(total=total, desc=f"LIIF zoom: {self.controller.layer.name!r}")
        self._activity.update(done - self._activity.n)

    def _close_activity(self) -> None:
        bar, self._activity = self._activity, None
        if bar is not None:
            bar.close()

    # -- lifetime ----------------------------------------------------------------------
    def shutdown(self) -> None:
        """Stop live zoom and disconnect from the viewer (the widget is closing)."""
        if self._alive:
            self._stop()
            self._activity_update.cancel()
            self._close_activity()
        super().shutdown()
