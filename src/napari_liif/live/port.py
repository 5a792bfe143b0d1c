"""The one door from the live core to the engine.

The core needs little of a model: open a field over a plane (:meth:`Engine.field`), encode the
latents under an area in large windows (:meth:`Field.encode`), compute what a view's cell needs
per latent in one batch (:meth:`Field.prepare_cell`), and render some samples of a
regular grid (:meth:`Field.render`: the grid's rows and columns by slices, so a coarse pass
``[::2, ::2]`` and its completion are the grid's own samples), or the same samples of several
fields in one call (:meth:`Engine.render`: an image's channels share the call's work queue).
:class:`ModelEngine` is that door over a :class:`~napari_liif.engine.LiifModel`, and counts the
work that went through it: input pixels encoded and samples rendered (what the tests count
instead of timing).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from ..field import compatible, default_block, render_together


@runtime_checkable
class Field(Protocol):
    """A plane encoded (lazily) by the engine."""

    pixels_encoded: int  # input pixels run through the encoder so far, halos included
    tiles_encoded: int  # encoder tiles computed so far

    def encode(self, region=None, *, should_stop=None) -> int:
        """Encode the latents under ``region`` (None: the whole plane) in large windows, no
        further than it reaches (what a view needs now; :meth:`encode_near` does whole tiles)."""

    def encode_near(self, region=None, *, should_stop=None) -> bool:
        """Encode the plane where its latents fit in half its cache, else the widest margin
        around ``region`` (the view) that does, at most the view's size on each side. True if
        that was the whole plane (a later view needs nothing more)."""

    def prepare_cell(self, region, shape, cell, latents) -> int:
        """Compute now, in one batch, what the ``shape`` grid over ``region`` with ``cell`` (a
        mode, or an explicit cell) needs per latent and cell, for the latents under ``latents``
        (an area in data pixel-edge units)."""

    def render(self, region, shape, cell, rows: slice = slice(None), cols: slice = slice(None), *,
               should_stop=None) -> np.ndarray | None:
        """Samples ``[rows, cols]`` of the ``shape`` grid over ``region``: (r, c, 3) in [0, 1];
        None if ``should_stop()`` turned true."""


@runtime_checkable
class Engine(Protocol):
    """A loaded model as the live core uses it."""

    on_cpu: bool
    block: int  # the engine's output block side (samples): calls split into blocks of it

    def field(self, source, shape, *, tile: int, cache_bytes: int, window_px: int | None) -> Field:
        """A field over ``source(y0, y1, x0, x1)`` (windows in [0, 1]) of ``shape``."""

    def warmup(self) -> None:
        """Pay the device's start-up now."""

    def same(self, other) -> bool:
        """True if ``other`` (a model or an engine) is this engine's model."""

    def render(self, fields, region, shape, cell, rows: slice = slice(None), cols: slice = slice(None), *,
               should_stop=None) -> list[np.ndarray] | None:
        """:meth:`Field.render` of each of ``fields`` (this engine's) in one call, e.g. the
        channels of an image: the same samples of each; None if ``should_stop()`` turned true."""


class ModelField:
    """:class:`Field` over an :class:`~napari_liif.field.EncodedField`."""

    def __init__(self, engine: ModelEngine, encoded):
        self.engine, self.encoded = engine, encoded

    @property
    def pixels_encoded(self) -> int:
        return self.encoded.pixels_encoded

    @property
    def tiles_encoded(self) -> int:
        return self.encoded.tiles_encoded

    def encode(self, region=None, *, should_stop=None) -> int:
        return self._prefetch(region, region is None, should_stop)

    def _prefetch(self, region, whole: bool, should_stop) -> int:
        before = self.encoded.pixels_encoded
        try:
            return self.encoded.prefetch(region, whole=whole, should_stop=should_stop)
        finally:
            self.engine.pixels_encoded += self.encoded.pixels_encoded - before

    def encode_near(self, region=None, *, should_stop=None) -> bool:
        enc = self.encoded
        h, w = enc.shape
        budget = enc.cache_bytes // 2
        if region is None or enc.latent_bytes(h, w) <= budget:
            self._prefetch(None, True, should_stop)
            return True
        top, left, bottom, right = (int(np.floor(region[0])), int(np.floor(region[1])),
                                    int(np.ceil(region[2])), int(np.ceil(region[3])))

        def fits(m):  # the view widened by m latents, plus the ensemble's one that encode() adds
            rows = min(h, bottom + m + 1) - max(0, top - m - 1)
            return enc.latent_bytes(rows, min(w, right + m + 1) - max(0, left - m - 1)) <= budget

        if not fits(0):
            return False  # the view alone takes more than half the cache: renders encode it
        # at most one view's size on each side (pans of a screen need nothing; a huge plane is not
        # encoded for minutes in the background), at most what half the cache keeps
        lo, hi = 0, min(max(h, w), max(bottom - top, right - left))
        while lo < hi:  # the widest margin that fits
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
        self._prefetch((top - lo, left - lo, bottom + lo, right + lo), True, should_stop)
        return False

    def prepare_cell(self, region, shape, cell, latents) -> int:
        enc = self.encoded
        if not enc.family.cell_dependent:
            return 0
        h, w = enc.shape
        top, left, bottom, right = latents  # one latent of margin: the ensemble reaches the next one
        y0, y1 = max(0, int(np.floor(top)) - 1), min(h, int(np.ceil(bottom)) + 1)
        x0, x1 = max(0, int(np.floor(left)) - 1), min(w, int(np.ceil(right)) + 1)
        if y1 <= y0 or x1 <= x0 or enc.latent_bytes(y1 - y0, x1 - x0) > enc.cache_bytes // 2:
            return 0  # more than the cache keeps: left to the renders, block by block
        before = enc.pixels_encoded
        try:
            return enc.cell_batch(y0, y1, x0, x1, enc.grid(region, shape, cell).rel_cell)
        finally:
            self.engine.pixels_encoded += enc.pixels_encoded - before

    def render(self, region, shape, cell, rows: slice = slice(None), cols: slice = slice(None), *,
               should_stop=None) -> np.ndarray | None:
        values = self.engine.render([self], region, shape, cell, rows, cols, should_stop=should_stop)
        return None if values is None else values[0]


class ModelEngine:
    """:class:`Engine` over a :class:`~napari_liif.engine.LiifModel`; counts the input pixels its
    fields encoded (halos included), the samples rendered and the render calls (decode loops run:
    fields rendered together count once)."""

    def __init__(self, model):
        self.model = model
        self.on_cpu = model.device.type == "cpu"
        self.block = default_block(model.device)
        self.pixels_encoded = 0
        self.samples_rendered = 0
        self.render_calls = 0

    def field(self, source, shape, *, tile: int, cache_bytes: int, window_px: int | None) -> ModelField:
        encoded = self.model.encode_source(source, shape, tile=tile, cache_bytes=cache_bytes, window_px=window_px)
        return ModelField(self, encoded)

    def warmup(self) -> None:
        if not self.on_cpu:
            self.model.warmup()

    def same(self, other) -> bool:
        return other is self or other is self.model or getattr(other, "model", None) is self.model

    def render(self, fields, region, shape, cell, rows: slice = slice(None), cols: slice = slice(None), *,
               should_stop=None) -> list[np.ndarray] | None:
        encoded = [f.encoded for f in fields]
        if not encoded:
            return []
        groups = [encoded] if compatible(encoded) else [[e] for e in encoded]  # else: one by one
        stopped, out = [], []

        def stop() -> bool:
            if should_stop is not None and should_stop():
                stopped.append(True)
            return bool(stopped)

        for group in groups:
            grid = group[0].grid(region, shape, cell)[rows, cols]
            before = sum(e.pixels_encoded for e in group)
            try:
                out += render_together(group, grid, should_stop=stop)
            finally:
                self.pixels_encoded += sum(e.pixels_encoded for e in group) - before
            if stopped:
                return None
        self.samples_rendered += sum(v.shape[0] * v.shape[1] for v in out)
        self.render_calls += len(groups)  # the engine's decode loops run
        return out


def as_engine(model) -> Engine:
    """``model`` as an :class:`Engine`: an engine as it is, a ``LiifModel`` wrapped."""
    return model if isinstance(model, Engine) else ModelEngine(model)
