"""A plane ready for the engine: its fields in [0, 1] and the maps back to the overlay's values."""

from __future__ import annotations

import numpy as np

from ..codec import PlaneCodec


def _nearest_index(lo: float, hi: float, n: int, size: int) -> np.ndarray:
    """Data pixel under the centre of each of ``n`` samples spanning edges ``[lo, hi]``."""
    centres = lo + (np.arange(n) + 0.5) * ((hi - lo) / n)
    return np.clip(np.floor(centres).astype(np.int64), 0, size - 1)


class Prepared:
    """A plane ready for the engine: its fields (one, or colour and alpha for RGBA), and the maps
    from renders and from raw samples back to what the overlay shows.

    The plane's rules are the batch paths' own: a :class:`~napari_liif.codec.PlaneCodec` (gray,
    RGB or premultiplied RGBA) encodes each window into the fields, decodes the renders into data
    units and carries what its map cannot hold; live zoom only adds how napari draws them (float32
    data units for the overlay, alpha in [0, 1], RGB given an alpha of 1).

    ``fields``: ``[(name, source)]`` with ``source(y0, y1, x0, x1)`` a window in [0, 1] (gray
    (h, w), colour (h, w, 3)). ``combine(renders, near)`` gives the overlay's values from one render
    (rows, cols, 3) per field; values ``near`` (the raw data under each sample,
    :meth:`nearest`) that the map cannot hold (NaN, nodata, outliers beyond its range) are shown
    as they are. ``fallback(region, shape)`` is what napari itself would show at those samples
    (the layer's ``nearest`` or, for every smoother interpolation, ``linear``).
    """

    def __init__(self, state, read, maps: dict):
        self.state, self.read, self.maps = state, read, maps
        self.shape = state.geometry.shape
        kind = "rgba" if state.alpha else "rgb" if state.rgb else "gray"
        self.codec = codec = PlaneCodec.of(kind, maps["value"], maps["alpha"])

        def field(k: int):
            return lambda y0, y1, x0, x1: codec.encode(read(y0, y1, x0, x1))[k]

        #: whether a sample can hold a value the map cannot (masked, or beyond its range): only then
        #: is the raw data under each sample read to carry it (:meth:`combine`)
        vmap = maps["value"]
        self.carries = not (vmap.dtype.kind == "b" or (vmap.dtype == np.uint8 and vmap.lo <= 0 and vmap.hi >= 255))
        self.fields = [("value", field(0))] + ([("alpha", field(1))] if codec.premultiplied else [])

    @property
    def cache(self):
        return getattr(self.read, "cache", None)

    def field_source(self, name: str):
        return dict(self.fields)[name]

    # -- renders -> overlay values ----------------------------------------------------------------
    def combine(self, renders: list[np.ndarray], near: np.ndarray | None = None) -> np.ndarray:
        out = self.codec.decode(renders, exact=False)
        if self.state.rgb and not self.state.alpha:  # the overlay is RGBA: opaque
            out = np.concatenate([out, np.ones(out.shape[:2] + (1,), np.float32)], -1)
        if near is not None:
            self.codec.carry_values(near, out)
        return out

    # -- raw samples --------------------------------------------------------------------------------
    def nearest(self, region, shape) -> np.ndarray:
        """The raw data (data units) of the pixel under each sample of a tile."""
        (h, w), (rows, cols) = self.shape, shape
        ri = _nearest_index(region[0], region[2], rows, h)
        ci = _nearest_index(region[1], region[3], cols, w)
        block = self.read(int(ri.min()), int(ri.max()) + 1, int(ci.min()), int(ci.max()) + 1)
        return block[ri - ri.min()][:, ci - ci.min()]

    def fallback(self, region, shape) -> np.ndarray:
        """napari's own look of a tile's samples, in the overlay's layout (nearest or bilinear)."""
        st = self.state
        raw = self._bilinear(region, shape) if st.interpolation != "nearest" else self.nearest(region, shape)
        raw = raw.astype(np.float32, copy=False)
        if not st.rgb:
            return raw
        out = np.empty(raw.shape[:2] + (4,), np.float32)
        out[..., :3] = raw[..., :3]
        out[..., 3] = self.maps["alpha"].forward(raw[..., 3]) if st.alpha else 1.0
        return out

    def _bilinear(self, region, shape) -> np.ndarray:
        """Border-clamped bilinear samples at the tile's sample centres (GL linear filtering)."""
        (h, w), (rows, cols) = self.shape, shape
        taps = []
        for lo, hi, n, size in ((region[0], region[2], rows, h), (region[1], region[3], cols, w)):
            p = np.clip(lo + (np.arange(n) + 0.5) * ((hi - lo) / n) - 0.5, 0, size - 1)
            i0 = np.floor(p).astype(np.int64)
            taps.append((i0, np.minimum(i0 + 1, size - 1), (p - i0).astype(np.float32)))
        (y0, y1, ty), (x0, x1, tx) = taps
        a, b = int(y0.min()), int(y1.max()) + 1
        c, d = int(x0.min()), int(x1.max()) + 1
        block = self.read(a, b, c, d).astype(np.float32)
        if self.state.rgb:
            ty, tx = ty[:, None, None], tx[None, :, None]
        else:
            ty, tx = ty[:, None], tx[None, :]
        top = block[y0 - a][:, x0 - c] * (1 - tx) + block[y0 - a][:, x1 - c] * tx
        bot = block[y1 - a][:, x0 - c] * (1 - tx) + block[y1 - a][:, x1 - c] * tx
        return top * (1 - ty) + bot * ty

    # -- the interface the render thread has used so far ----------------------------------------
    def __iter__(self):
        """``(source, shape, to_data)`` of the first field: ``source`` a window in [0, 1],
        ``to_data`` a render (rows, cols, 3) to the overlay's values."""
        to_data = (lambda u: self.combine([u])[..., :3]) if self.state.rgb else (lambda u: self.combine([u]))
        return iter((self.fields[0][1], self.shape, to_data))


