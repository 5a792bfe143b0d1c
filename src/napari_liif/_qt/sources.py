"""One live source layer on the napari side: its ``[LIIF]`` overlay, its stand-in and its event
connections; it shows what the live core's :class:`~napari_liif.live.session.SourceView` holds."""

from __future__ import annotations

import numpy as np

from ..live.session import SourceView
from .stand_in import StandIn

#: the source's look that its overlay copies (and the events that say it changed)
STYLE = ("colormap", "contrast_limits", "gamma", "opacity", "blending", "visible")


def connect(store: list, emitter, callback) -> None:
    emitter.connect(callback)
    store.append((emitter, callback))


def disconnect(store: list) -> None:
    for emitter, callback in store:
        emitter.disconnect(callback)
    store.clear()


class LiveSource:
    """A source layer, its overlay and stand-in, and the core's view of it."""

    def __init__(self, view: SourceView, layer):
        self.view, self.layer = view, layer
        self.overlay = None
        self.stand: StandIn | None = None
        self.connections: list = []

    def connect(self, schedule, on_data, on_style) -> None:
        """Re-plan on a transform change, a new plane on a data change, restyle on a style change."""
        ly, store = self.layer, self.connections
        for emitter in (ly.events.scale, ly.events.translate, ly.events.rotate, ly.events.shear,
                        ly.events.affine, ly.events.contrast_limits_range):
            connect(store, emitter, schedule)
        if hasattr(ly.events, "projection_mode"):
            connect(store, ly.events.projection_mode, on_data)
        connect(store, ly.events.data, on_data)
        for name in STYLE:
            connect(store, getattr(ly.events, name), on_style)
        connect(store, ly.events.name, self._on_name)

    def _on_name(self, event=None) -> None:
        if self.overlay is not None:
            self.overlay.name = f"{self.layer.name} [LIIF]"

    def make_overlay(self, viewer) -> bool:
        """Insert the overlay right above the source (selection kept); False if it cannot stand in."""
        from napari.layers import Image

        ly = self.layer
        empty = np.zeros((1, 1, 4), np.float32) if ly.rgb else np.full((1, 1), np.nan, np.float32)
        kwargs = {} if ly.rgb else {"colormap": ly.colormap}
        units = getattr(ly, "units", None)
        if units is not None:  # the same world units, or napari stops using units altogether
            kwargs["units"] = tuple(units)[-2:]
        ov = Image(empty, name=f"{ly.name} [LIIF]", rgb=bool(ly.rgb), contrast_limits=ly.contrast_limits,
                   gamma=ly.gamma, opacity=ly.opacity, blending=ly.blending, interpolation2d="nearest",
                   visible=False, metadata={"napari_liif_overlay_of": ly.name}, **kwargs)
        layers = viewer.layers
        selected, active = set(layers.selection), layers.selection.active
        layers.insert(layers.index(ly) + 1, ov)
        layers.selection.clear()
        layers.selection.update(selected or {ly})
        layers.selection.active = active if active in layers else ly
        self.overlay = ov
        self.stand = StandIn(viewer, ly, ov)
        return self.stand.ok

    def drop(self, viewer) -> None:
        """Stop: connections, stand-in and overlay go."""
        disconnect(self.connections)
        if self.stand is not None:
            self.stand.close()
        if self.overlay is not None and self.overlay in viewer.layers:
            viewer.layers.remove(self.overlay)

    def blank(self) -> None:
        """Stop standing in at once (the source draws itself everywhere)."""
        if self.stand is not None:
            self.stand.set_coverage(None)
        if self.overlay is not None and self.overlay.visible:
            self.overlay.visible = False

    def show(self) -> None:
        """The overlay is visible when its source is and there is something to stand in for."""
        ov = self.overlay
        if ov is None:
            return
        want = bool(self.layer.visible and self.view.plan is not None and self.stand is not None and self.stand.ok)
        if ov.visible != want:
            ov.visible = want
        if self.stand is not None:
            self.stand.sync()

    def present(self, new: bool = False) -> None:
        """Show the view's buffer: data, frame and coverage in one main-thread call (one draw)."""
        ov, view = self.overlay, self.view
        if ov is None or view.plan is None:
            return
        # each of napari's data, scale and translate setters re-slices the layer and has the viewer
        # recompute every layer's extent (17-23 ms each on the 2-core EPYC): only what changed
        # (the session refills the same array when the view keeps its size; a pan keeps the scale)
        changed = False
        if new:
            if ov.data is not view.buffer:
                ov.data, changed = view.buffer, True
            for name in ("scale", "translate"):
                value = np.asarray(getattr(view.plan, name), float)
                if not np.array_equal(np.asarray(getattr(ov, name), float), value):
                    setattr(ov, name, value)
                    changed = True
        if not changed:
            ov.refresh(thumbnail=not view.missing, extent=False, highlight=False)
        if self.stand is not None:
            self.stand.set_coverage(view.covered, view.coverage_origin(), view.plan.tile_size)
        self.show()

    def sync_style(self, event=None) -> None:
        """Copy the source's look to its overlay (only what differs: each setter redraws)."""
        ov, ly = self.overlay, self.layer
        if ov is None:
            return
        want = {"contrast_limits": list(ly.contrast_limits), "gamma": ly.gamma, "opacity": ly.opacity,
                "blending": ly.blending}
        if not ly.rgb:
            want["colormap"] = ly.colormap
        for name, value in want.items():
            current = getattr(ov, name)
            if (list(current) != value) if name == "contrast_limits" else (current != value):
                setattr(ov, name, value)
        self.show()

    def restack(self, viewer) -> None:
        """Move the overlay back right above its source."""
        layers = viewer.layers
        if self.layer in layers and self.overlay in layers:
            i, ov = layers.index(self.layer), layers.index(self.overlay)
            if ov != i + 1:
                layers.move(ov, i + 1)
            if self.stand is not None:
                self.stand.sync()
