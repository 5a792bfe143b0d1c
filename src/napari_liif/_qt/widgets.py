"""The "LIIF zoom" dock widget: pick an image layer and model options, switch live zoom on or off.
The model picker's ``auto`` takes the model for the layer (:mod:`napari_liif.model_choice`); the
line under it says which model is live and why.

The form is made of magicgui widgets (:mod:`.dock`); the widget only reads its inputs and
drives a :class:`~napari_liif._qt.controller.LiveZoom`. A view that takes longer than
``ACTIVITY_DELAY_MS`` to render (the first encode of a large layer, a slow device) also shows
in napari's activity dock (``napari.utils.progress``); errors reach napari's notifications.
"""

from __future__ import annotations

import functools

from magicgui.widgets import CheckBox, Container, Label, LineEdit, ProgressBar
from superqt.utils import qthrottled

from .attach import channel_group, default_tile, model_loader
from .controller import LiveZoom
from .registry import registry
from .dock import ViewerDockWidget, image_layer_picker, notify_error
from ..intensity import parse_range
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
        self.range = LineEdit(label="intensity", value="",
                              tooltip="the data range mapped to the model's 0..1: empty for the robust range (hot "
                                      "pixels ignored), LOW,HIGH for values, LOW%,HIGH% for percentiles of the plane")
        self.options = ModelOptions(precision="auto", use="live")  # interactive: the fastest good precision
        self.channels = CheckBox(text="all channels", value=True,
                                 tooltip="with the layer, every layer shown as a channel with it (additive, same "
                                         "shape and place), or every selected image layer when several are selected")
        self.live = CheckBox(text="live LIIF zoom",
                             tooltip="render the visible region at screen resolution while you zoom and pan")
        self.status = Label(value="off")
        self.live_layers = Label(value="")  # what is live now, whoever started it
        self.bar = ProgressBar(min=0, max=1, value=0, label="tiles")
        self._set_form(Container(widgets=[self.source, self.channels, self.range, self.options, self.live, self.status,
                                          self.live_layers, self.bar]))
        self.status.native.setWordWrap(True)
        # at most one activity-dock update per interval, the first one ACTIVITY_DELAY_MS after a view starts
        self._activity_update = qthrottled(self._update_activity, timeout=ACTIVITY_DELAY_MS, leading=False)

        self.live.changed.connect(self._on_live)
        self.source.changed.connect(self._on_layer)
        self.options.changed.connect(self._on_options)
        self.range.changed.connect(self._on_range)
        self._picked = None  # the layer the switch was turned on for
        self.options.set_layer(self.source.value)  # "auto" chooses the model for this layer
        registry.changed.connect(self._on_registry)
        self._on_registry(napari_viewer)  # a live zoom started from a script before the widget opened

    def selected_layer(self):
        """The chosen source layer, or None."""
        return self.source.value

    # -- actions -----------------------------------------------------------------------
    def _on_live(self, on: bool) -> None:
        self._stop()
        if on:
            self._start()

    def _on_layer(self, *_):
        # a new choice restarts live zoom; the picker moving on by itself because the live layer
        # was removed does not
        self.options.set_layer(self.source.value)
        if self.live.value and self._picked is not None and self._picked in self.viewer.layers:
            self._stop()
            self._start()

    def _layers_for(self, layer) -> list:
        """The layers the switch makes live: the selected image layers when several are selected
        (``layer`` among them), else ``layer``'s channel group with **all channels**, else ``layer``."""
        from napari.layers import Image

        from .dock import is_overlay

        if not self.channels.value:
            return [layer]
        picked = [ly for ly in self.viewer.layers
                  if ly in self.viewer.layers.selection and isinstance(ly, Image) and not is_overlay(ly)]
        if len(picked) > 1 and layer in picked:
            return picked
        return channel_group(self.viewer, layer)

    def _model_options(self):
        """``(checkpoint, device, precision), cell, choice``; a ValueError for a missing checkpoint file."""
        o = self.options.options()
        return (o["checkpoint"], o["device"], o["precision"]), o["cell"], self.options.choice()

    def _on_options(self, *_) -> None:
        if self.controller is None:
            return
        try:
            model_key, cell, choice = self._model_options()
        except ValueError as exc:
            self._show(str(exc))
            return
        if model_key != self._model_key:  # a cell change alone keeps the encoded image
            self._model_key = model_key
            self.controller.set_model(functools.partial(model_loader, *model_key), choice)
        self.controller.model_choice = choice  # the same model picked by name instead of auto: say so
        self.options.set_live(choice)
        self.controller.set_cell(cell)

    def _on_range(self, *_) -> None:
        if self.controller is None:
            return
        try:
            self.controller.set_options(*parse_range(self.range.value))
        except ValueError as exc:
            self._show(str(exc))

    def _start(self) -> None:
        layer = self.selected_layer()
        if layer is None:
            self._refuse("no image layer: open an image first")
            return
        self._picked = layer
        try:
            self._model_key, cell, choice = self._model_options()
            loader = functools.partial(model_loader, *self._model_key)
            limits, percentiles = parse_range(self.range.value)
            LiveZoom(self.viewer, self._layers_for(layer), loader, cell=cell, tile=default_tile(self._model_key[1]),
                     limits=limits, percentiles=percentiles, model_choice=choice)
        except (TypeError, ValueError) as exc:
            self._refuse(str(exc))
            return  # (a controller made here is adopted through the registry as it starts)

    def _adopt(self, ctl) -> None:
        """Follow ``ctl`` (started here or from a script): its status, progress and end."""
        self.controller = ctl
        ctl.status.connect(self._show)
        ctl.progress.connect(self._progress)
        ctl.detached.connect(self._on_detached)
        with self.live.changed.blocked():
            self.live.value = True
        if ctl.layer is not None and not any(self.source.value is ly for ly in ctl.layers):
            with self.source.changed.blocked():
                self.source.value = ctl.layer  # the picker shows a layer that is live
        self._picked = self.source.value
        self.options.set_layer(self._picked)
        self.options.set_live(ctl.model_choice)
        self._show(ctl.message)
        done, total = ctl.tiles_done()  # the first view was planned while attaching, before these connections
        if total:
            self._progress(done, total)

    def _on_registry(self, viewer) -> None:
        """A live zoom started, stopped or lost a layer in some viewer: show what runs in ours."""
        if not self._alive or getattr(viewer, "__wrapped__", viewer) is not getattr(self.viewer, "__wrapped__",
                                                                                         self.viewer):
            return
        running = registry.of(self.viewer)
        if self.controller is None and running:
            self._adopt(running[0])
        ctl = self.controller
        self.live_layers.value = "live: " + ", ".join(ly.name for ly in ctl.layers) if ctl and ctl.attached else ""

    def _refuse(self, message: str) -> None:
        """Live zoom could not start: say why here and in napari's notifications; untick the switch."""
        self._show(message)
        notify_error(f"LIIF zoom: {message}")
        self._untick()

    def _stop(self) -> None:
        ctl, self.controller = self.controller, None
        self.live_layers.value = ""
        self.options.set_live(None)
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
        # the controller let go by itself (its layers or overlays were removed, or a script detached it)
        self.controller = None
        self.live_layers.value = ""
        self.options.set_live(None)
        self._untick()
        removed = self._picked is not None and self._picked not in self.viewer.layers
        self._show("off: the layer was removed" if removed else "off")
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
            registry.changed.disconnect(self._on_registry)
            self._stop()
            self._activity_update.cancel()
            self._close_activity()
        super().shutdown()
