"""Chunked, out-of-core LIIF upscaling with dask (zarr in and out: :mod:`napari_liif.zarr_io`;
the ``--dask`` command: :mod:`napari_liif.upscale_cmd`).

``upscale_dask`` returns a lazy dask array whose every chunk equals the same region of the
in-memory :func:`napari_liif.upscale` result, bit for bit. How:

* **One grid.** A whole-image render at ``(H_out, W_out)`` samples output pixel ``i`` at
  input edge coordinate ``(i + 0.5) * H / H_out``. Each chunk uses the lookup tables of that
  whole-image grid (sample coordinates, nearest latents, relative coordinates, cell), sliced
  to its rows and columns, so no coordinate is ever recomputed in another frame.
* **Windows with a halo.** A chunk needs the latents its tables point at (the four ensemble
  neighbours) and, with the bilinear residual, the input pixels its taps read. Its input
  window is that range plus ``receptive_radius + 1`` pixels on each side (the encoder's
  receptive field plus the 3x3 feature unfold), clipped to the image. Latents that far from
  a window edge do not depend on the window, so the window's encoding equals the
  whole-image encoding there; the latent indices of the tables are shifted into the window.
* **Same blocks.** The whole-image renderer decodes output blocks of ``EncodedField.block``
  pixels; a chunk decodes every whole block it touches, the same batch of pixels with the
  same arithmetic, and keeps its part. Chunk sizes that are multiples of the block waste
  nothing; others decode up to one extra block per side.
* **Global intensities.** Intensity maps (per channel where channels are independent) and
  the constant-plane test are reductions over the whole array (min/max, and the regular sample
  that the robust range's percentiles come from), computed once, lazily, before any chunk; no
  chunk fits its own map. Masked and out-of-range values are carried by nearest neighbour
  inside each chunk: the nearest input pixel of every output pixel lies in its window.

The model reaches the workers as its spec and state dict (:class:`ModelRef`), built once per
worker process and cached; nothing Qt or thread-bound is pickled. With a
``dask.distributed`` Client active, ``.compute()`` and :func:`write_zarr` run on its cluster.
"""

from __future__ import annotations

import hashlib
import json
import threading
import warnings

import numpy as np

from . import isotropic

DEFAULT_CHUNK = 512  # output pixels per chunk along each spatial axis


# -- the model, shipped to workers -------------------------------------------------------
_WORKER_MODELS: dict[str, object] = {}
_WORKER_LOCK = threading.Lock()


class ModelRef:
    """A picklable handle on a :class:`~napari_liif.engine.LiifModel`.

    In the process that made it, ``get()`` returns the model itself. Pickled (to a worker
    process) it carries the spec, the state dict as numpy arrays, the device and the
    precision; ``get()`` then builds the model once per process and caches it by content.
    """

    def __init__(self, model):
        self._model = model
        self.spec = model.spec
        self.device = str(model.device)
        from .device import precision_name

        self.precision = precision_name(model.dtype)
        sd = model.net.state_dict()
        h = hashlib.sha1(json.dumps(self.spec, sort_keys=True).encode())
        for k in sorted(sd):
            h.update(k.encode())
            h.update(sd[k].detach().float().cpu().contiguous().numpy().tobytes())
        self.key = f"{h.hexdigest()}-{self.device}-{self.precision}"

    def __getstate__(self):
        sd = self._model.net.state_dict() if self._model is not None else self._sd
        arrays = {k: v.detach().float().cpu().numpy() for k, v in sd.items()} if self._model is not None else sd
        return {"spec": self.spec, "device": self.device, "precision": self.precision, "key": self.key,
                "sd": arrays}

    def __setstate__(self, state):
        self.__dict__.update({k: v for k, v in state.items() if k != "sd"})
        self._sd = state["sd"]
        self._model = None

    def __dask_tokenize__(self):
        return ("napari_liif.ModelRef", self.key)

    def get(self):
        if self._model is not None:
            return self._model
        with _WORKER_LOCK:
            model = _WORKER_MODELS.get(self.key)
            if model is None:
                import torch

                from .checkpoint import build
                from .engine import LiifModel
                from .loading import building

                with building():  # one build at a time per process, with the other loaders
                    net = build(self.spec, {k: torch.from_numpy(np.array(v)) for k, v in self._sd.items()})
                    model = LiifModel(net, self.spec, device=self.device, precision=self.precision,
                                      name="<shipped to worker>")
                _WORKER_MODELS[self.key] = model
            return model


# -- the chunk plan ------------------------------------------------------------------------
def _parse_chunks(chunks) -> tuple[int, int]:
    pair = (chunks, chunks) if np.ndim(chunks) == 0 else tuple(chunks)
    if len(pair) != 2 or any(isinstance(c, (bool, np.bool_)) or not isinstance(c, (int, np.integer)) or c < 1
                             for c in pair):
        raise ValueError(f"chunks must be a positive integer or a (rows, cols) pair of them, got {chunks!r}")
    return int(pair[0]), int(pair[1])


def _bounds(n: int, step: int) -> list[tuple[int, int]]:
    return [(a, min(n, a + step)) for a in range(0, n, step)]


def _block_size(model) -> int:
    """The output block side the renderer uses for ``model`` (chunks align to it)."""
    from .field import default_block

    return default_block(model.device, model.family)


def _grid(model, n_in: int, n_out: int, axis: int):
    """One axis of the whole-image sample grid (as ``EncodedField.render`` builds it), and
    whether its bilinear taps count towards a chunk's window."""
    from .grid import Axis

    shifts, eps = model.family.shifts()
    return Axis.regular(n_in, 0.0, float(n_in), n_out, [s[axis] for s in shifts], eps), model.family.needs_bilinear


def _window(model, n_in: int, axis, bilinear: bool, a: int, b: int, halo: int) -> tuple[int, int]:
    """Input range [w0, w1) needed to render outputs [a, b) of one axis exactly."""
    lo, hi = axis.latent_range(a, b)
    if bilinear:
        t0, t1 = axis.tap_range(a, b)
        lo, hi = min(lo, t0), max(hi, t1)
    return max(0, lo - halo), min(n_in, hi + halo)


def _render_window(model, u: np.ndarray, origin: tuple[int, int], in_hw: tuple[int, int],
                   out_hw: tuple[int, int], rows: tuple[int, int], cols: tuple[int, int], cell: str) -> np.ndarray:
    """Render output rows/cols of the whole-image grid from the input window ``u`` (in
    [0, 1]) whose top-left pixel is ``origin``: float32 (rows, cols, 3) in [0, 1].

    The whole image's grid is sliced to the renderer's whole blocks under the chunk (so the
    window's field decodes the same batches as the in-memory render) and shifted into the
    window; the part of the chunk is kept."""
    from .grid import SampleGrid

    wf = model.encode(u)  # latents of the window, in window coordinates
    (h, w), bs = in_hw, wf.block
    ra, rb = rows[0] // bs * bs, min(out_hw[0], -(-rows[1] // bs) * bs)
    ca, cb = cols[0] // bs * bs, min(out_hw[1], -(-cols[1] // bs) * bs)
    members, eps = model.family.shifts()
    grid = SampleGrid.regular(in_hw, (0.0, 0.0, float(h), float(w)), out_hw, members, eps, cell)
    res = wf.render_grid(grid[ra:rb, ca:cb].shifted(*origin))
    return res[rows[0] - ra:rows[1] - ra, cols[0] - ca:cols[1] - ca]


def _render_chunk(window: np.ndarray, ref: ModelRef, stats: dict, job: dict) -> np.ndarray:
    """One output chunk: ``window`` is the raw input window of one plane (and channel job)."""
    from .codec import PlaneCodec
    from .intensity import nearest_index

    model = ref.get()
    what, p = job["what"], job["plane"]
    rows, cols = job["rows"], job["cols"]
    shape = (rows[1] - rows[0], cols[1] - cols[0])
    const = stats["const"][(p, what)]
    codec = PlaneCodec(what, stats["maps"], stats["const"].get((p, "alpha")))
    if const is not None:
        out = np.broadcast_to(const, shape + np.shape(const)).astype(window.dtype)
    else:
        out = codec.decode([_render_window(model, u, job["origin"], job["in_hw"], job["out_hw"], rows, cols,
                                           job["cell"]) for u in codec.encode(window)])
    (h, w), (ho, wo), (wy0, wx0) = job["in_hw"], job["out_hw"], job["origin"]
    near_r = nearest_index(h, ho)[rows[0]:rows[1]] - wy0  # the whole image's nearest pixels, in the window
    near_c = nearest_index(w, wo)[cols[0]:cols[1]] - wx0
    codec.carry(window, out, near_r, near_c)
    if isinstance(what, int):
        out = out[..., None]
    return out.reshape((1,) * len(p) + out.shape)


def _plane_stats(a, kind: str, limits=None, percentiles=None):
    """Lazy reductions: per-plane min/max of the valid values (for the maps and the constant test)
    and, where a map is fitted, the regular sample its percentiles come from
    (:func:`napari_liif.intensity.spatial_sample`, as the in-memory fit takes it)."""
    import dask.array as da

    from .codec import dtype_range_map, map_keys
    from .intensity import masked, spatial_sample

    axes = (-2, -1) if kind == "gray" else (-3, -2)
    bad = masked(a)
    if bad is not None:  # the valid values only (not NaN, inf or nodata), as the in-memory upscale
        valid = da.where(bad, np.nan, a)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-masked planes: NaN
            lo, hi = da.nanmin(valid, axis=axes), da.nanmax(valid, axis=axes)
    else:
        lo, hi = a.min(axis=axes), a.max(axis=axes)
    samples = {}
    if limits is None and dtype_range_map(a.dtype, percentiles) is None:
        for key, (sel, colour) in map_keys(kind, a.shape[-1] if kind != "gray" else 0).items():
            if key != "alpha":  # alpha is never fitted
                samples[key] = spatial_sample(a[sel], colour)
    return {"min": lo, "max": hi, "fmin": lo, "fmax": hi, "first": lo, "samples": samples}


def _make_stats(red: dict, kind: str, dtype, lead: tuple, n_tail: int, limits=None, percentiles=None) -> dict:
    """Intensity maps and constant planes, as ``napari_liif.upscale`` decides them."""
    from .codec import channel_jobs, dtype_range_map, map_keys
    from .intensity import IntensityMap, choose_limits, user_map, valid_values

    dtype = np.dtype(dtype)
    fmin = red["fmin"] if red["fmin"] is not None else red["min"]
    fmax = red["fmax"] if red["fmax"] is not None else red["max"]

    def fit(key, sel) -> IntensityMap:
        if key == "alpha":
            return IntensityMap.alpha(dtype)
        lo, hi = np.asarray(fmin)[sel], np.asarray(fmax)[sel]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            lo, hi = np.nanmin(lo) if lo.size else np.nan, np.nanmax(hi) if hi.size else np.nan
        valid = bool(np.isfinite(lo) and np.isfinite(hi))
        if limits is not None:
            return user_map(IntensityMap.of(dtype, *limits), lo if valid else None, hi if valid else None, limits)
        if key not in red["samples"]:  # uint8, bool: the dtype range
            return dtype_range_map(dtype, percentiles)
        if not valid:
            return IntensityMap.fit(np.zeros(0, dtype))  # no finite value: the (0, 1) range
        sample = valid_values(np.asarray(red["samples"][key]))
        imap = IntensityMap.of(dtype, *choose_limits(dtype, lo, hi, sample, percentiles))
        return imap if percentiles is None else user_map(imap, lo, hi, None, percentiles)

    keys = map_keys(kind, n_tail)
    maps = {key: fit(key, sel) for key, (sel, _) in keys.items()}
    mn, mx, first = np.asarray(red["min"]), np.asarray(red["max"]), np.asarray(red["first"])
    const = {}
    for p in (list(np.ndindex(*lead)) if lead else [()]):
        for what in channel_jobs(kind, n_tail):
            sel = (Ellipsis, what) if isinstance(what, int) else (Ellipsis, slice(0, 4)) if kind != "gray" else ()
            lo, hi = (mn[p][sel[1:]], mx[p][sel[1:]]) if sel[1:] else (mn[p], mx[p])
            same = np.all((lo == hi) | (lo != lo))  # valid values all equal (or none: NaN)
            const[(p, what)] = (first[p][sel[1:]] if sel[1:] else first[p]) if same else None
        if kind == "rgba":  # a constant alpha stays constant (the colour is then rendered straight)
            lo, hi = mn[p][..., 3], mx[p][..., 3]
            const[(p, "alpha")] = first[p][..., 3] if (lo == hi) | (lo != lo) else None
    return {"maps": maps, "const": const}


def _upscale_z(a, kind: str, lead: tuple, n_tail: int, zsplit, model, cell: str, limits, percentiles):
    """z, then y and x (:mod:`napari_liif.isotropic`), lazily: the intensity maps fitted now in
    one pass over the input (as ``upscale`` fits them), then each pass plane by plane
    (:func:`_planewise`) with those maps, so every chunk equals the in-memory result."""
    import dask

    isotropic.z_axis(a.ndim, kind, a.shape)  # a 2-D image is refused before the pass over it
    (red,) = dask.compute(_plane_stats(a, kind, limits, percentiles))
    maps = _make_stats(red, kind, a.dtype.str, lead, n_tail, limits, percentiles)["maps"]
    return isotropic.upscale_volume(a, kind, *zsplit, lambda arr, scale, size: _planewise(
        arr, kind, maps, scale, size, model, cell))


def _planewise(a, kind: str, maps: dict, scale, size, model, cell: str):
    """:func:`napari_liif.api.upscale_fitted` on a few whole planes (the last two axes before any
    channel or colour axis) per chunk, about 32 MiB: no halos, and a shallow graph however deep
    ``a``'s is (windows cut out of a deep graph would each carry all of it)."""
    from .api import output_hw, upscale_fitted

    n_sp = 2 if kind == "gray" else 3
    lead = a.ndim - n_sp
    plane = int(np.prod(a.shape[lead:])) * a.dtype.itemsize
    per = max(1, min(a.shape[lead - 1] if lead else 1, (32 << 20) // max(plane, 1)))
    a = a.rechunk({**{k: 1 for k in range(lead - 1)}, **({lead - 1: per} if lead else {}),
                   **{k: -1 for k in range(lead, a.ndim)}})
    out_hw = output_hw(a.shape[lead:lead + 2], scale, size)
    chunks = a.chunks[:lead] + tuple((n,) for n in out_hw) + a.chunks[lead + 2:]
    return a.map_blocks(lambda b: upscale_fitted(b, kind, maps, out_hw, model, cell), chunks=chunks, dtype=a.dtype,
                        meta=np.empty((0,) * a.ndim, a.dtype))


def upscale_dask(array, scale=None, *, size=None, model=None, cell: str = "on", chunks=DEFAULT_CHUNK,
                 channel_axis: int | None = None, rgb: bool | None = None, limits=None, percentiles=None,
                 eager_stats: bool = False):
    """Upscale lazily, chunk by chunk; the result equals ``napari_liif.upscale`` exactly.

    Parameters
    ----------
    array : dask array or array-like
        Same layouts as :func:`napari_liif.upscale`: (..., H, W) gray planes, (..., H, W, 3|4)
        RGB(A), or independent channels at ``channel_axis``; integer, bool or float.
    scale, size :
        As :func:`napari_liif.upscale` (one of them).
    model : LiifModel, path or None
        None: the bundled default model.
    cell : {"on", "off", "clamp"}
    chunks : int or (int, int)
        Output chunk size (rows, cols) along the spatial axes; planes and independent
        channels are one chunk each, colour stays in one chunk. Any size gives the same
        result; multiples of the renderer's block (``EncodedField.block``) are cheapest.
    channel_axis, rgb, limits, percentiles :
        As :func:`napari_liif.upscale`.
    eager_stats : bool
        Make the pass over the input that the intensity maps need now, and keep its result in the
        graph: for a result computed piece by piece many times (napari showing it as a layer),
        where a lazy pass would be made again by every compute.

    Returns
    -------
    dask.array.Array
        Lazy; the input's dtype and channel layout, spatial axes resized (masked chunks for a
        masked input, whose mask is honoured as NaN is: :mod:`napari_liif.masks`). Each chunk reads an
        input window of about chunk / scale pixels plus ``receptive_radius + 2`` on each side.
        The intensity maps need one pass over the input (min/max, and the regular sample of the
        robust range or of ``percentiles``) before the first chunk.
    """
    import dask
    import dask.array as da

    from .api import get_model, output_hw
    from .codec import channel_jobs, layout
    from .field import CELL_MODES
    from .intensity import check_options

    from .masks import is_masked, upscale_masked

    if is_masked(array):  # the mask is honoured as NaN is (napari_liif.masks)
        return upscale_masked(upscale_dask, array, lazy=True, scale=scale, size=size, model=model, cell=cell,
                              chunks=chunks, channel_axis=channel_axis, rgb=rgb, limits=limits,
                              percentiles=percentiles, eager_stats=eager_stats)
    a = array if isinstance(array, da.Array) else da.from_array(array, chunks="auto")
    if a.dtype.kind not in "biuf":
        raise TypeError(f"cannot upscale data of dtype {a.dtype}; expected integer, float or bool data")
    if cell not in CELL_MODES:
        raise ValueError(f"cell must be one of {', '.join(CELL_MODES)}, got {cell!r}")
    cr, cc = _parse_chunks(chunks)
    check_options(limits, percentiles)
    in_shape = a.shape
    a, kind, ch_axis = layout(a, rgb, channel_axis)
    spatial = tuple(a.shape[-3:-1] if kind != "gray" else a.shape[-2:])
    if len(spatial) < 2 or a.size == 0:
        raise ValueError(f"image must have two spatial axes and at least one pixel, got shape {in_shape}")
    lead = tuple(a.shape[:-3] if kind != "gray" else a.shape[:-2])
    n_tail = a.shape[-1] if kind != "gray" else 0
    m = get_model(model)
    zsplit = isotropic.split(scale, size)
    if zsplit is not None:
        out = _upscale_z(a, kind, lead, n_tail, zsplit, m, cell, limits, percentiles)
        return out if ch_axis is None else da.moveaxis(out, -1, ch_axis)
    out_hw = output_hw(spatial, scale, size)
    halo = m.family.halo

    red = _plane_stats(a, kind, limits, percentiles)
    stat_args = (kind, a.dtype.str, lead, n_tail, None if limits is None else tuple(float(v) for v in limits),
                 None if percentiles is None else tuple(percentiles))
    if eager_stats:  # one pass now, baked into the graph: each later compute reads only its windows
        (red_now,) = dask.compute(red)
        stats = dask.delayed(_make_stats(red_now, *stat_args), pure=True, traverse=False)
    else:
        stats = dask.delayed(_make_stats, pure=True)(red, *stat_args)
    ref = dask.delayed(ModelRef(m), pure=True)

    (h, w), (ho, wo) = spatial, out_hw
    ya, bil = _grid(m, h, ho, 0)
    xa, _ = _grid(m, w, wo, 1)
    row_b, col_b = _bounds(ho, cr), _bounds(wo, cc)
    bs = _block_size(m)
    row_w = [_window(m, h, ya, bil, r0 // bs * bs, min(ho, -(-r1 // bs) * bs), halo) for r0, r1 in row_b]
    col_w = [_window(m, w, xa, bil, c0 // bs * bs, min(wo, -(-c1 // bs) * bs), halo) for c0, c1 in col_b]
    whats = channel_jobs(kind, n_tail)
    tail_chunk = {"gray": (), "rgb": (3,), "rgba": (4,), "channels": (1,)}[kind]
    name = "liif-" + dask.base.tokenize(a, ref, stats, out_hw, cell, (cr, cc), kind)

    def block(p, what, i, j):
        (r0, r1), (c0, c1) = row_b[i], col_b[j]
        (wy0, wy1), (wx0, wx1) = row_w[i], col_w[j]
        sel = p + (slice(wy0, wy1), slice(wx0, wx1))
        if isinstance(what, int):
            sel += (what,)
        job = {"what": what, "plane": p, "rows": (r0, r1), "cols": (c0, c1), "origin": (wy0, wx0),
               "in_hw": (h, w), "out_hw": (ho, wo), "cell": cell}
        d = dask.delayed(_render_chunk, pure=True)(a[sel], ref, stats, job,
                                                   dask_key_name=(name, *p, i, j, what if what is not None else 0))
        return da.from_delayed(d, (1,) * len(p) + (r1 - r0, c1 - c0) + tail_chunk, dtype=a.dtype)

    def nest(prefix: tuple):
        depth = len(prefix)
        if depth < len(lead):
            return [nest(prefix + (k,)) for k in range(lead[depth])]
        rows = []
        for i in range(len(row_b)):
            row = []
            for j in range(len(col_b)):
                cells = [block(prefix, what, i, j) for what in whats]
                row.append(cells if kind != "gray" else cells[0])
            rows.append(row)
        return rows

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", da.PerformanceWarning)
        out = da.block(nest(()))  # masked and out-of-range values are carried inside each chunk
    return out if ch_axis is None else da.moveaxis(out, -1, ch_axis)
