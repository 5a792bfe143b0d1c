"""The overlay stands in for its source where it is shown, with the source's state untouched.

napari composites layers bottom to top, each with its own blending and opacity. An overlay drawn
*above a still-drawn source* double-counts additive layers and lets a translucent source bleed
through (DESIGN.md, "napari compositing"). napari has no public per-region mask, so this module
adds one below the layer model, in the vispy scene that draws it:

* a fragment filter on the **source's** visual discards its fragments wherever the overlay holds
  LIIF samples (:class:`Mask` with a :class:`Coverage`: the overlay's frame and a texture of one
  texel per tile of the view), so there only the overlay is drawn, with the source's blending
  and opacity; everywhere else (tiles not rendered yet, the strip a pan uncovers before the next
  view, a zoom out) napari draws the source itself. The same filter on the overlay keeps only
  those tiles, so its empty texels never draw, whatever the blending (an empty texel under
  ``minimum`` blending would otherwise blacken the canvas). The source's layer (its ``visible``, ``opacity``, ``blending``, colormap,
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

import numpy as np
from vispy.gloo import Texture2D
from vispy.visuals.filters.base_filter import Filter
from vispy.visuals.shaders import Function, Varying

_VERT = """
void mask_position() {
    vec4 p = $to_scene(gl_Position);
    $v_mask_texel = (p.xy / p.w - $offset) / $scale;
}
"""

# v: the fragment in overlay texels (x = column, y = row), where the overlay's buffer spans
# [0, w] x [0, h], computed per vertex: the render-to-scene map of a 2D view is affine, so the
# interpolated value is exact and a fragment only reads the tile mask, one texel per tile of the
# plan's grid
_FRAG = """
void mask_discard() {
    vec2 v = $v_mask_texel;
    float m = 0.0;
    if (v.x > 0.0 && v.x < $size.x && v.y > 0.0 && v.y < $size.y)
        m = texture2D($tiles, (v - $grid0) / $grid_size).r;
    if ($keep > 0.5) {
        if (m < 0.5) discard;
    } else {
        if (m > 0.5) discard;
    }
}
"""


class Coverage:
    """Which parts of the overlay hold LIIF samples: a grid of tiles (``covered``, rows x cols of
    booleans) whose tile (0, 0) starts at overlay texel ``origin`` (row, col) and whose tiles are
    ``tile`` texels on a side, clipped to the overlay's ``size`` (rows, cols); empty: nothing."""

    def __init__(self):
        self.texture = Texture2D(np.zeros((1, 1), np.uint8), interpolation="nearest", format="luminance")
        self.covered = np.zeros((1, 1), bool)
        self.origin, self.tile, self.size = (0.0, 0.0), 1.0, (0.0, 0.0)

    def set(self, covered, origin=(0, 0), tile: float = 1.0, size=(0, 0)) -> None:
        covered = np.zeros((1, 1), bool) if covered is None or not np.size(covered) else np.asarray(covered, bool)
        if covered.shape != self.covered.shape:
            self.texture = Texture2D(covered.astype(np.uint8) * 255, interpolation="nearest", format="luminance")
        else:
            self.texture.set_data(covered.astype(np.uint8) * 255)
        self.covered = covered
        self.origin, self.tile, self.size = tuple(float(v) for v in origin), float(tile), tuple(float(v) for v in size)

    @property
    def empty(self) -> bool:
        return not self.covered.any()


class Mask(Filter):
    """Discards a visual's fragments where :class:`Coverage` says the overlay holds LIIF samples
    (``keep=False``: the source) or where it does not (``keep=True``: the overlay itself, whose
    empty texels then never draw, whatever their blending)."""

    def __init__(self, keep: bool):
        super().__init__(vcode=Function(_VERT), vhook="post", vpos=1, fcode=Function(_FRAG), fhook="pre", fpos=1)
        texel = Varying("v_mask_texel", "vec2")
        self.vshader["v_mask_texel"] = texel
        self.fshader["v_mask_texel"] = texel
        self.fshader["keep"] = 1.0 if keep else 0.0
        self.set_frame((0.0, 0.0), (1.0, 1.0), Coverage())

    def _attach(self, visual):
        super()._attach(visual)
        self.vshader["to_scene"] = visual.get_transform("render", "scene")

    def set_frame(self, offset, scale, cov: Coverage) -> None:
        """``offset``/``scale``: scene = offset + scale * overlay texel (x, y); ``cov``: the tiles."""
        self.vshader["offset"] = (float(offset[0]), float(offset[1]))
        self.vshader["scale"] = (float(scale[0]), float(scale[1]))
        sh = self.fshader
        sh["size"] = (cov.size[1], cov.size[0])
        sh["grid0"] = (cov.origin[1], cov.origin[0])
        ny, nx = cov.covered.shape
        sh["grid_size"] = (cov.tile * nx, cov.tile * ny)
        sh["tiles"] = cov.texture


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
    """Makes ``overlay`` stand in for ``source`` where it holds LIIF samples (module docstring).

    ``ok`` is False when this napari cannot be reached that way (no window, another drawing
    model): the caller then shows nothing rather than a double-counted canvas.
    """

    def __init__(self, viewer, source, overlay):
        self.viewer, self.source, self.overlay = viewer, source, overlay
        self.coverage = Coverage()
        self.cut, self.keep = Mask(keep=False), Mask(keep=True)
        self._nodes = {"cut": None, "keep": None}
        self._patched = None
        self.ok = vispy_layer(viewer, source) is not None and vispy_layer(viewer, overlay) is not None
        if self.ok:
            self._attach()
            self._patch_overlay()

    @property
    def active(self) -> bool:
        return not self.coverage.empty

    # -- the filters ----------------------------------------------------------------------------
    def _attach(self) -> None:
        for name, layer, filt in (("cut", self.source, self.cut), ("keep", self.overlay, self.keep)):
            vis = vispy_layer(self.viewer, layer)
            node = None if vis is None else vis.node
            if node is self._nodes[name]:
                continue
            self._detach(name, filt)
            if node is not None:
                node.attach(filt)
                self._nodes[name] = node

    def _detach(self, name: str, filt) -> None:
        node = self._nodes[name]
        if node is not None:
            try:
                node.detach(filt)
            except (ValueError, KeyError):  # already gone with its node
                pass
            node.update()
        self._nodes[name] = None

    def set_coverage(self, covered, origin=(0, 0), tile: float = 1.0) -> None:
        """The tiles that hold LIIF samples (see :class:`Coverage`; None: none, the source draws
        everywhere); the overlay's size is read from its data."""
        if not self.ok:
            return
        size = self.overlay.data.shape[:2]
        self.coverage.set(covered, origin, tile, size)
        self.update()

    def show(self, on: bool) -> None:
        """All of the overlay stands in (``on``) or none of it."""
        self.set_coverage(np.ones((1, 1), bool) if on else None, (0, 0), float(max(self.overlay.data.shape[:2])))

    def update(self) -> None:
        """Re-read the overlay's frame (after its data, scale or translate changed) and napari's
        blending of the bottom layer; re-attach the filters if napari replaced a node."""
        if not self.ok:
            return
        self._attach()
        frame = self._overlay_frame()
        for filt in (self.cut, self.keep):
            filt.set_frame(*frame, self.coverage)
        self.sync()
        for node in self._nodes.values():
            if node is not None:
                node.update()

    def _overlay_frame(self):
        vis = vispy_layer(self.viewer, self.overlay)
        if vis is None:
            return (0.0, 0.0), (1.0, 1.0)
        tr = vis.node.get_transform("visual", "scene")
        o = tr.map([0.0, 0.0, 0.0, 1.0])
        e = tr.map([1.0, 1.0, 0.0, 1.0])
        o, e = o[:2] / o[3], e[:2] / e[3]
        return (o[0], o[1]), (e[0] - o[0], e[1] - o[1])

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
            # the overlay draws only where the source is cut out, so it is the bottom layer there
            # exactly when the source is
            _ov.first_visible = bool(src is not None and src.first_visible and self.source.visible)
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
        """Remove the filters: the source draws everywhere again, exactly as before."""
        self.coverage.set(None)
        self._detach("cut", self.cut)
        self._detach("keep", self.keep)
        ov = self._patched
        if ov is not None and "_on_blending_change" in vars(ov):
            del ov._on_blending_change
        self._patched = None
