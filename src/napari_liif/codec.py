"""The plane codec: how one plane's values go into the model and come back. Written once, used by
``upscale``, ``upscale_dask``, the CLI, the batch widget and (through :class:`PlaneCodec`) live zoom.

* **Layout** (:func:`layout`): gray planes, RGB(A) colour last, or independent channels at a
  ``channel_axis`` (moved last here). A plane is cut into *jobs* (:func:`channel_jobs`): the gray
  plane, the colour, or **each channel alone**.
* **One intensity map per job** (:func:`intensity_maps`, :mod:`napari_liif.intensity`): each
  channel of a stack gets its own map, fitted over that channel in every plane, so a channel comes
  back as that channel upscaled alone would. uint8 and bool use their dtype range; RGB's three
  colours share one map; alpha uses its dtype range.
* **RGBA is premultiplied**: colour times alpha and alpha go through the model as two fields and
  the colour is divided again; a constant alpha stays exactly constant (the colour then goes
  through as it is).
* **Gray in, gray out**: a gray plane enters as R = G = B and leaves as the mean of the three.
* **Carried values**: masked values (NaN, inf, nodata) and values outside the map's range (hot
  pixels) are put back by nearest neighbour (:func:`napari_liif.intensity.carry`).
"""

from __future__ import annotations

import numpy as np

from .intensity import IntensityMap, carry, user_map, valid_values

CHANNEL_NAMES = ("c", "channel", "channels", "ch")  # axis labels that mean independent channels


def looks_like_channels(shape) -> bool:
    """True for a shape like (..., H, W, C) whose short last axis (2..32, not colour) is most
    likely channels rather than columns: C at most half of the axis before it."""
    shape = tuple(int(n) for n in shape)
    return len(shape) >= 3 and shape[-1] not in (3, 4) and 2 <= shape[-1] <= 32 and 2 * shape[-1] <= shape[-2]


def channel_axis_from_labels(labels) -> int | None:
    """The index of the axis labelled as channels (``"C"`` in ImageJ/OME axes such as ``"ZCYX"``, or
    a napari axis label ``c``/``channel``), or None. ``labels``: a string or a sequence of names."""
    names = [str(n).strip().lower() for n in (labels or ())]
    hits = [k for k, n in enumerate(names) if n in CHANNEL_NAMES]
    return hits[0] if len(hits) == 1 else None


def layout(a, rgb=None, channel_axis=None):
    """Move channels last; return ``(array, kind, axis)`` with kind in gray|rgb|rgba|channels and
    axis the normalised channel axis (None unless kind is channels). numpy and dask arrays
    alike; ValueErrors name the value."""
    if channel_axis is not None:
        if rgb:
            raise ValueError("give either rgb=True or channel_axis, not both")
        if isinstance(channel_axis, (bool, np.bool_)) or not isinstance(channel_axis, (int, np.integer)):
            raise ValueError(f"channel_axis must be an integer, got {channel_axis!r}")
        ax = int(channel_axis)
        if a.ndim < 3:
            raise ValueError(f"channel_axis={channel_axis} on an image of shape {tuple(a.shape)}: a {a.ndim}-D image "
                             "has no channel axis besides its two spatial ones; drop channel_axis "
                             "(on the command line --channel-axis)")
        if not -a.ndim <= ax < a.ndim:
            raise ValueError(f"channel_axis={channel_axis} is out of range for data of shape {a.shape} "
                             f"({a.ndim} dimensions)")
        return np.moveaxis(a, ax, -1), "channels", ax % a.ndim
    if rgb is not None and not isinstance(rgb, (bool, np.bool_)):
        raise ValueError(f"rgb must be True, False or None, got {rgb!r}")
    if rgb is None:
        rgb = a.ndim >= 3 and a.shape[-1] in (3, 4)
        if not rgb and looks_like_channels(a.shape):
            raise ValueError(f"image of shape {tuple(a.shape)}: its last axis ({a.shape[-1]}) looks like channels, "
                             "not columns; pass channel_axis=-1 (on the command line --channel-axis -1) to "
                             "upscale each channel, or rgb=False to upscale it as a stack of planes")
    if rgb:
        if a.ndim < 3 or a.shape[-1] not in (3, 4):
            raise ValueError(f"rgb=True needs a last axis of length 3 or 4, got shape {a.shape}")
        return a, "rgb" if a.shape[-1] == 3 else "rgba", None
    return a, "gray", None


def channel_jobs(kind: str, n: int) -> list:
    """The jobs of one plane: None (gray), "rgb", "rgba", or each channel's index."""
    if kind == "gray":
        return [None]
    if kind == "channels":
        return list(range(n))
    return [kind]


def map_keys(kind: str, n: int) -> dict:
    """``{map key: (selection of a channels-last array, colour)}`` of the maps a layout needs:
    None (gray), each channel (its index), "rgb" (and "alpha" for RGBA: an index 3 is the fourth
    independent channel, fitted like the others)."""
    if kind == "gray":
        return {None: ((Ellipsis,), False)}
    if kind == "channels":
        return {c: ((Ellipsis, c), False) for c in range(n)}
    keys = {"rgb": ((Ellipsis, slice(0, 3)), True)}
    if kind == "rgba":
        keys["alpha"] = ((Ellipsis, 3), False)
    return keys


def intensity_maps(a: np.ndarray, kind: str, limits=None, percentiles=None) -> dict:
    """The intensity maps of a channels-last array, by :func:`map_keys`: each channel its own,
    fitted over that channel in every plane (alpha: its dtype range). Maps from user ``limits`` or
    ``percentiles`` are checked against the data (:func:`napari_liif.intensity.user_map`: a
    ValueError where they would destroy it)."""
    maps = {}
    for key, (sel, colour) in map_keys(kind, a.shape[-1] if kind != "gray" else 0).items():
        if key == "alpha":
            maps[key] = IntensityMap.alpha(a.dtype)
            continue
        if limits is not None:
            imap = IntensityMap.of(a.dtype, *limits)
        else:
            imap = IntensityMap.fit(a[sel], percentiles=percentiles, colour=colour)
        if limits is not None or percentiles is not None:
            vals = valid_values(a[sel])
            imap = user_map(imap, vals.min() if vals.size else None, vals.max() if vals.size else None,
                            limits, percentiles)
        maps[key] = imap
    return maps


def dtype_range_map(dtype, percentiles=None) -> IntensityMap | None:
    """The map of data that is never fitted: uint8 and bool use their dtype range (unless
    ``percentiles`` are asked for); None for every other dtype (fitted)."""
    dtype = np.dtype(dtype)
    if percentiles is None and (dtype == np.uint8 or dtype.kind == "b"):
        return IntensityMap.of(dtype, 0, 255 if dtype == np.uint8 else 1)
    return None


def job_part(a: np.ndarray, what):
    """The part of a plane (H, W[, C]) that a job works on: all of it for gray, RGB and RGBA
    (``what`` None, "rgb", "rgba"), one channel for an integer ``what``."""
    return a[..., what] if isinstance(what, int) else a



def _gray(render: np.ndarray) -> np.ndarray:
    """The mean of a render's three channels, as ``render.mean(-1)`` gives it bit for bit
    (float32: the same sum, then the division) in a fifth of the time (3 ms for a 1024 x 768
    view, where numpy's reduction over a short last axis took 17)."""
    return (render[..., 0] + render[..., 1] + render[..., 2]) / render.dtype.type(3)

class PlaneCodec:
    """One job's way into the model and back: ``encode`` a window of raw data into the fields the
    model renders (in [0, 1]), ``decode`` the renders into data values, ``carry`` what the map
    cannot hold.

    Parameters
    ----------
    what : None, "rgb", "rgba" or int
        The job (:func:`channel_jobs`); an int is one channel, given as a 2D plane.
    maps : dict
        The maps of the layout (:func:`intensity_maps`).
    alpha_const : optional
        For RGBA, the value of an alpha plane known to be constant: the colour then goes through
        straight and the alpha comes back as that constant exactly.

    Live zoom renders windows of one plane: ``PlaneCodec(None | "rgb" | "rgba", maps)``,
    or ``PlaneCodec.of(kind, value_map, alpha_map)``; ``fields = codec.encode(window)``, one render
    (rows, cols, 3) per field,
    ``codec.decode(renders, exact=False)`` for float32 overlay values (alpha in [0, 1], as napari
    draws it), and ``codec.carry_values(near, out)`` with the raw data under each sample.
    """

    def __init__(self, what, maps: dict, alpha_const=None):
        self.what, self.maps, self.alpha_const = what, maps, alpha_const
        self.value_map: IntensityMap = maps["rgb"] if what in ("rgb", "rgba") else maps[what]
        self.alpha_map: IntensityMap | None = maps.get("alpha") if what == "rgba" else None
        self.premultiplied = what == "rgba" and alpha_const is None

    @classmethod
    def of(cls, kind: str, value_map: IntensityMap, alpha_map: IntensityMap | None = None) -> "PlaneCodec":
        """The codec of one plane of ``kind`` "gray", "rgb" or "rgba" from its maps (live zoom fits
        them from samples of a plane): ``PlaneCodec.of("rgba", colour_map, IntensityMap.alpha(dtype))``."""
        if kind == "gray":
            return cls(None, {None: value_map})
        if kind == "rgb":
            return cls("rgb", {"rgb": value_map})
        if kind == "rgba":
            return cls("rgba", {"rgb": value_map, "alpha": alpha_map or IntensityMap.alpha(value_map.dtype)})
        raise ValueError(f"kind must be gray, rgb or rgba, got {kind!r}")

    @property
    def n_fields(self) -> int:
        return 2 if self.premultiplied else 1

    def encode(self, src: np.ndarray) -> list[np.ndarray]:
        """The model's inputs for a raw window: ``[u]`` (gray (h, w), colour (h, w, 3)), or for
        premultiplied RGBA ``[colour * alpha, alpha]``."""
        if self.what not in ("rgb", "rgba"):
            return [self.value_map.forward(src)]
        colour = self.value_map.forward(src[..., :3])
        if not self.premultiplied:
            return [colour]
        ua = self.alpha_map.forward(src[..., 3])
        return [colour * ua[..., None], ua]

    def decode(self, renders: list[np.ndarray], dtype=None, exact: bool = True) -> np.ndarray:
        """Data values from one render (rows, cols, 3) per field: in the map's dtype (rounded and
        clipped as :meth:`IntensityMap.inverse`) with ``exact``, else float32 data units with RGBA's
        alpha in [0, 1]. RGB(A) gives (rows, cols, 3|4), gray and channels (rows, cols)."""
        first = renders[0]
        if self.what not in ("rgb", "rgba"):
            return self._values(_gray(first), self.value_map, exact)
        colour, alpha = first, None
        if self.premultiplied:  # divided by the alpha as rendered (overshoot above 1 included)
            alpha = _gray(renders[1])
            with np.errstate(divide="ignore", invalid="ignore"):
                colour = np.where(alpha[..., None] > 0, colour / alpha[..., None], 0.0)
        out_dtype = self.value_map.dtype if exact else np.float32
        out = np.empty(first.shape[:2] + ((4,) if self.what == "rgba" else (3,)), out_dtype)
        out[..., :3] = self._values(np.clip(colour, 0.0, 1.0), self.value_map, exact)
        if self.what == "rgba":
            if self.alpha_const is not None:
                out[..., 3] = self.alpha_const if exact else self.alpha_map.forward(np.asarray(self.alpha_const))
            else:
                out[..., 3] = self.alpha_map.inverse(alpha) if exact else np.clip(alpha, 0.0, 1.0)
        return out

    @staticmethod
    def _values(u: np.ndarray, imap: IntensityMap, exact: bool) -> np.ndarray:
        if exact:
            return imap.inverse(u)
        v = (np.clip(u, 0.0, 1.0) * imap.span + float(imap.lo)).astype(np.float32)
        if imap.floor is not None and imap.dtype.kind != "b":  # user limits: the data's range inside them
            np.clip(v, np.float32(imap.floor), np.float32(imap.ceil), out=v)
        return v

    def carry(self, src: np.ndarray, dst: np.ndarray, rows=None, cols=None) -> None:
        """Masked and out-of-range values of ``src`` into ``dst`` by nearest neighbour
        (:func:`napari_liif.intensity.carry`; ``rows``/``cols`` as there)."""
        if self.what == "rgba":
            carry(src[..., :3], dst[..., :3], self.value_map, rows, cols)
            carry(src[..., 3], dst[..., 3], self.alpha_map, rows, cols)
        else:
            carry(src, dst, self.value_map, rows, cols)

    def flux_limits(self, src: np.ndarray):
        """``(outliers, bounds)`` of :func:`napari_liif.flux.preserve_flux` for this job's raw
        window ``src``: the values carried (:meth:`carry`; a mask like ``src``, or None) and, per
        channel, the least and greatest of the values the map holds (the valid, in-range ones)."""
        if self.what == "rgba":
            parts = [(src[..., :3], self.value_map), (src[..., 3:], self.alpha_map)]
        else:
            parts = [(src, self.value_map)]
        masks, lows, highs = [], [], []
        for part, imap in parts:
            bad = imap.outside(part)
            bad = np.zeros(part.shape, bool) if bad is None else bad
            held = part[~bad]
            lo, hi = (held.min(), held.max()) if held.size else (0, 0)
            n = part.shape[-1] if part.ndim == 3 else 1
            masks.append(bad)
            lows += [float(lo)] * n
            highs += [float(hi)] * n
        mask = masks[0] if len(masks) == 1 else np.concatenate(masks, axis=-1)
        if src.ndim == 2:
            return (mask if mask.any() else None), (lows[0], highs[0])
        return (mask if mask.any() else None), (np.array(lows), np.array(highs))

    def carry_values(self, near: np.ndarray, out: np.ndarray) -> None:
        """Live zoom's carry: ``near`` is the raw data under each output sample (same rows and
        columns as ``out``); where the value map cannot hold it, ``out`` shows it as it is."""
        vals = near[..., :3] if self.what in ("rgb", "rgba") else near
        bad = self.value_map.outside(vals)
        if bad is not None and bad.any():
            target = out[..., :3] if self.what in ("rgb", "rgba") else out
            np.copyto(target, vals.astype(target.dtype), where=bad)
