"""The overlay stands in for its source where it is shown, with the source's state untouched.

napari composites layers bottom to top, each with its own blending and opacity. An overlay drawn
*above a still-drawn source* double-counts additive layers and lets a translucent source bleed
through (DESIGN.md, "napari compositing"). napari has no public per-region mask, so this module
adds one below the layer model, in the vispy scene that draws it:

* a fragment filter on the **source's** visual discards its fragments inside the overlay's
  rectangle (:class:`Hole`), so there only the overlay is drawn, with the source's blending and
  opacity, and outside it (panning, zooming out, before the first view is ready) napari draws
  the source itself. The source's layer (its ``visible``, ``opacity``, ``blending``, colormap,
  contrast, place in the layer list) is never changed; detaching removes the filter, which is
  all there is to restore;
* napari blends the bottom-most visible layer specially (against the canvas background); that
  is the source, not the overlay above it, so the overlay's visual is given the source's
  ``first_visible`` treatment whenever napari recomputes it (:meth:`StandIn.sync`);
* :func:`device_pixel_ratio`: physical screen pixels per logical pixel of the canvas, so that
  live zoom samples once per *physical* pixel on a HiDPI screen.

This is the only module that reaches into napari's vispy layer (``layer_to_visual``, the
visual's ``node`` and ``first_visible``); napari 0.9 is what it is written and tested against.
Inside plugin widgets napari hands out a public-only proxy of the viewer: it is unwrapped here
(``__wrapped__``, which the proxy allows) rather than read through private attributes of the proxy.
"""

from __future__ import annotations

from vispy.visuals.filters.base_filter import Filter
from vispy.visuals.shaders import Function, Varying

_VERT = """
void hole_position() {
    $v_hole_pos = gl_Position;
}
"""

_FRAG = """
void hole_discard() {
    vec4 p = $to_scene($v_hole_pos);
    vec2 q = p.xy / p.w;
    if (q.x > $x0 && q.x < $x1 && q.y > $y0 && q.y < $y1)
        discard;
}
"""


class Hole(Filter):
    """Discards a visual's fragments inside a rectangle of scene coordinates (vispy's x is napari's
    column, y its row); an empty rectangle discards nothing."""

    def __init__(self):
        super().__init__(vcode=Function(_VERT), vhook="post", vpos=1, fcode=Function(_FRAG), fhook="pre", fpos=1)
        pos = Varying("v_hole_pos", "vec4")
        self.vshader["v_hole_pos"] = pos
        self.fshader["v_hole_pos"] = pos
        self.rect = None
        self.set_rect(None)

    def _attach(self, visual):
        super()._attach(visual)
        self.fshader["to_scene"] = visual.get_transform("render", "scene")

    def set_rect(self, rect) -> None:
        """``(x0, y0, x1, y1)`` in scene coordinates, or None for no hole."""
        self.rect = None if rect is None else tuple(float(v) for v in rect)
        x0, y0, x1, y1 = self.rect if self.rect is not None else (0.0, 0.0, 0.0, 0.0)
        for name, v in (("x0", x0), ("y0", y0), ("x1", x1), ("y1", y1)):
            self.fshader[name] = v


def real(obj):
    """``obj`` itself, or the object behind napari's public-only proxy."""
    return getattr(obj, "__wrapped__", obj)


def canvas_of(viewer):
    """napari's vispy canvas of ``viewer`` (None without a window, e.g. a headless ViewerModel)."""
    window = getattr(real(viewer), "window", None)
    qt_viewer = getattr(window, "_qt_viewer", None) if window is not None else None
    return getattr(qt_viewer, "canvas", None) if qt_viewer is not None else None


def vispy_layer(viewer, layer):
    """The vispy layer that draws ``layer`` (None if there is none)."""
    canvas = canvas_of(viewer)
    if canvas is None:
        return None
    return canvas.layer_to_visual.get(real(layer))


def device_pixel_ratio(viewer) -> float:
    """Physical pixels per logical pixel of the viewer's canvas (2 on a typical HiDPI screen; 1
    when it cannot be told)."""
    canvas = canvas_of(viewer)
    native = getattr(canvas, "native", None) if canvas is not None else None
    try:
        r = float(native.devicePixelRatioF())
    except (AttributeError, RuntimeError, TypeError):
        return 1.0
    return r if r > 0 else 1.0


UNAVAILABLE = ("live zoom cannot draw in place of the layer here: this napari has no canvas for it "
               "(a viewer without a window) or draws layers differently from napari 0.9")


class StandIn:
    """Makes ``overlay`` stand in for ``source`` inside the overlay's extent (module docstring).

    ``ok`` is False when this napari cannot be reached that way (no window, another drawing
    model): the caller then shows nothing rather than a double-counted canvas.
    """

    def __init__(self, viewer, source, overlay):
        self.viewer, self.source, self.overlay = viewer, source, overlay
        self.hole = Hole()
        self._node = None
        self._patched = None
        self.active = False
        self.ok = vispy_layer(viewer, source) is not None and vispy_layer(viewer, overlay) is not None
        if self.ok:
            self._attach_hole()
            self._patch_overlay()

    # -- the hole in the source -------------------------------------------------------------
    def _attach_hole(self) -> None:
        vis = vispy_layer(self.viewer, self.source)
        node = None if vis is None else vis.node
        if node is self._node:
            return
        self._detach_hole()
        if node is not None:
            node.attach(self.hole)
            self._node = node

    def _detach_hole(self) -> None:
        if self._node is not None:
            try:
                self._node.detach(self.hole)
            except (ValueError, KeyError):  # already gone with its node
                pass
            self._node.update()
        self._node = None

    def show(self, on: bool) -> None:
        """Cut the overlay's extent out of the source (``on``) or let the source draw everywhere."""
        if not self.ok:
            return
        self.active = bool(on)
        self.update()

    def update(self) -> None:
        """Re-read the overlay's extent (after its data, scale or translate changed) and napari's
        blending of the bottom layer; re-attach the hole if napari replaced the source's node."""
        if not self.ok:
            return
        self._attach_hole()
        self.hole.set_rect(self._overlay_rect() if self.active else None)
        self.sync()
        if self._node is not None:
            self._node.update()

    def _overlay_rect(self):
        vis = vispy_layer(self.viewer, self.overlay)
        if vis is None or self.overlay.data.shape[0] < 1:
            return None
        h, w = self.overlay.data.shape[:2]
        tr = vis.node.get_transform("visual", "scene")
        (x0, y0), (x1, y1) = (tr.map([0.0, 0.0, 0.0, 1.0])[:2], tr.map([float(w), float(h), 0.0, 1.0])[:2])
        return min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)

    # -- the bottom layer's blending -----------------------------------------------------------
    def _patch_overlay(self) -> None:
        """Give the overlay's visual the source's ``first_visible`` whenever napari re-blends it."""
        ov = vispy_layer(self.viewer, self.overlay)
        if ov is None or self._patched is ov:
            return
        original = ov._on_blending_change
        src_of = lambda: vispy_layer(self.viewer, self.source)  # noqa: E731

        def blend(event=None, _original=original, _ov=ov):
            src = src_of()
            # only while the source is cut out: over a drawn source the overlay is not the bottom
            _ov.first_visible = bool(self.active and src is not None and src.first_visible and self.source.visible)
            return _original(event)

        ov._on_blending_change = blend
        self._patched = ov
        blend()

    def sync(self) -> None:
        """Re-apply the source's bottom-layer blending to the overlay (napari reorders and
        re-blends on layer changes; call after the overlay's own style changed)."""
        ov = vispy_layer(self.viewer, self.overlay)
        if ov is None:
            return
        if self._patched is not ov:
            self._patch_overlay()
        else:
            ov._on_blending_change()

    def close(self) -> None:
        """Remove the hole: the source draws everywhere again, exactly as before."""
        self.active = False
        self._detach_hole()
        ov = self._patched
        if ov is not None and "_on_blending_change" in vars(ov):
            del ov._on_blending_change
        self._patched = None
