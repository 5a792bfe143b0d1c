"""Chunked, out-of-core LIIF upscaling with dask; zarr and OME-Zarr in and out.

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
  the constant-plane test are reductions over the whole array, computed once, lazily,
  before any chunk; no chunk fits its own map.

The model reaches the workers as its spec and state dict (:class:`ModelRef`), built once per
worker process and cached; nothing Qt or thread-bound is pickled. With a
``dask.distributed`` Client active, ``.compute()`` and :func:`write_zarr` run on its cluster.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import warnings
from pathlib import Path

import numpy as np

DEFAULT_CHUNK = 512  # output pixels per chunk along each spatial axis
_OME_VERSION = "0.4"
_DONE_KEY = "napari_liif"


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
        self.precision = {"torch.float32": "fp32", "torch.bfloat16": "bf16",
                          "torch.float16": "fp16"}[str(model.dtype)]
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


def _blocks(a: int, b: int, block: int, n: int):
    """[a, b) split at multiples of ``block``: pairs (piece, the whole block holding it)."""
    while a < b:
        start = a // block * block
        e = min(b, start + block)
        yield (a, e), (start, min(n, start + block))
        a = e


def _block_size(model) -> int:
    from .field import EncodedField

    return EncodedField(model, None, (1, 1)).block  # lazy: nothing is encoded


def _grid(model, n_in: int, n_out: int, axis: int):
    """Whole-image sample coordinates and per-shift (latent index, relative coordinate)
    tables along one axis, exactly as ``EncodedField.render`` computes them."""
    from .field import _axis

    shifts, eps = model.net.shifts()
    return _axis(n_in, 0.0, float(n_in), n_out, [s[axis] for s in shifts], eps, model.device)


def _window(model, n_in: int, coords, table, a: int, b: int, halo: int) -> tuple[int, int]:
    """Input range [w0, w1) needed to render outputs [a, b) of one axis exactly."""
    lo = min(int(t[0][a:b].min()) for t in table.values())
    hi = max(int(t[0][a:b].max()) for t in table.values()) + 1
    if model.net.bilinear_residual:
        from .field import _bilinear_axis

        i0, i1, _ = _bilinear_axis(coords[a:b], n_in)
        lo, hi = min(lo, int(i0.min())), max(hi, int(i1.max()) + 1)
    return max(0, lo - halo), min(n_in, hi + halo)


def _render_window(model, u: np.ndarray, origin: tuple[int, int], in_hw: tuple[int, int],
                   out_hw: tuple[int, int], rows: tuple[int, int], cols: tuple[int, int], cell: str) -> np.ndarray:
    """Render output rows/cols of the whole-image grid from the input window ``u`` (in
    [0, 1]) whose top-left pixel is ``origin``: float32 (rows, cols, 3) in [0, 1]."""
    import torch

    from .field import EncodedField

    (h, w), (wy0, wx0) = in_hw, origin
    wf = model.encode(u)  # latents of the window, in window coordinates
    view = EncodedField(model, lambda y0, y1, x0, x1: u[y0 - wy0:y1 - wy0, x0 - wx0:x1 - wx0], (h, w),
                        tile=wf.tile, block=wf.block)  # whole-image frame: cell and bilinear taps only
    net, dev = model.net, model.device
    shifts, _ = net.shifts()
    yc, ytab = _grid(model, h, out_hw[0], 0)
    xc, xtab = _grid(model, w, out_hw[1], 1)
    ytab = {s: (i - wy0, r) for s, (i, r) in ytab.items()}
    xtab = {s: (i - wx0, r) for s, (i, r) in xtab.items()}
    wc, wcell = net.coord_weights()
    bias = 0
    if wcell is not None:
        cy, cx = view.cell((0.0, 0.0, float(h), float(w)), out_hw, cell)
        bias = torch.tensor([cy * h, cx * w], device=dev, dtype=wc.dtype) @ wcell.t()
    out = np.empty((rows[1] - rows[0], cols[1] - cols[0], 3), np.float32)
    with torch.inference_mode():
        for (r0, r1), (ra, rb) in _blocks(*rows, wf.block, out_hw[0]):
            for (c0, c1), (ca, cb) in _blocks(*cols, wf.block, out_hw[1]):
                # decode the renderer's whole block (same batch, same arithmetic), keep our part
                rs, cs = slice(ra, rb), slice(ca, cb)
                val = wf._block(ytab, xtab, rs, cs, shifts, wc, bias)
                if net.bilinear_residual:
                    val = val + view._bilinear(yc[rs], xc[cs])
                val = val[r0 - ra:r1 - ra, c0 - ca:c1 - ca]
                out[r0 - rows[0]:r1 - rows[0], c0 - cols[0]:c1 - cols[0]] = (val * 0.5 + 0.5).clamp_(0, 1).cpu().numpy()
    return out


def _render_chunk(window: np.ndarray, ref: ModelRef, stats: dict, job: dict) -> np.ndarray:
    """One output chunk: ``window`` is the raw input window of one plane (and channel job)."""
    model = ref.get()
    what, p = job["what"], job["plane"]
    rows, cols = job["rows"], job["cols"]
    shape = (rows[1] - rows[0], cols[1] - cols[0])
    parts = [("rgb", window[..., :3]), (3, window[..., 3])] if what == "rgba" else [(what, window)]
    outs = []
    for key, src in parts:
        const = stats["const"][(p, key)]
        if const is not None:
            outs.append(np.broadcast_to(const, shape + np.shape(const)).astype(window.dtype))
            continue
        imap = stats["maps"][key]
        res = _render_window(model, imap.forward(src), job["origin"], job["in_hw"], job["out_hw"], rows, cols,
                             job["cell"])
        outs.append(imap.inverse(res if key == "rgb" else res.mean(-1)))
    if what == "rgba":
        out = np.concatenate([outs[0], outs[1][..., None]], -1)
    elif isinstance(what, int):
        out = outs[0][..., None]
    else:
        out = outs[0]
    return out.reshape((1,) * len(p) + out.shape)


def _plane_stats(a, kind: str):
    """Lazy per-plane reductions: finite min/max (for the maps), min/max (constant test), first pixel."""
    import dask.array as da

    axes = (-2, -1) if kind == "gray" else (-3, -2)
    if a.dtype.kind == "f":
        finite = da.where(da.isfinite(a), a, np.nan)
        fmin, fmax = da.nanmin(finite, axis=axes), da.nanmax(finite, axis=axes)
    else:
        fmin = fmax = None
    first = a[..., 0, 0] if kind == "gray" else a[..., 0, 0, :]
    return {"min": a.min(axis=axes), "max": a.max(axis=axes), "fmin": fmin, "fmax": fmax, "first": first}


def _make_stats(red: dict, kind: str, dtype, lead: tuple, n_tail: int) -> dict:
    """Intensity maps and constant planes, as ``napari_liif.upscale`` decides them."""
    from .intensity import IntensityMap

    dtype = np.dtype(dtype)
    fmin = red["fmin"] if red["fmin"] is not None else red["min"]
    fmax = red["fmax"] if red["fmax"] is not None else red["max"]

    def fit(sel) -> IntensityMap:
        if dtype == np.uint8 or dtype.kind == "b":
            return IntensityMap.fit(np.zeros(1, dtype))
        lo, hi = np.asarray(fmin)[sel], np.asarray(fmax)[sel]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            lo, hi = np.nanmin(lo) if lo.size else np.nan, np.nanmax(hi) if hi.size else np.nan
        if not (np.isfinite(lo) and np.isfinite(hi)):
            return IntensityMap.fit(np.zeros(0, dtype))  # no finite value: the (0, 1) range
        return IntensityMap.fit(np.zeros(0, dtype), lo=lo, hi=hi)

    allp = (Ellipsis,)
    if kind == "gray":
        maps, keys = {None: fit(allp)}, {None: allp}
    elif kind == "channels":
        maps = {c: fit((Ellipsis, c)) for c in range(n_tail)}
        keys = {c: (Ellipsis, c) for c in range(n_tail)}
    else:
        keys = {"rgb": (Ellipsis, slice(0, 3))}
        if kind == "rgba":
            keys[3] = (Ellipsis, 3)
        maps = {key: fit(sel) for key, sel in keys.items()}
    mn, mx, first = np.asarray(red["min"]), np.asarray(red["max"]), np.asarray(red["first"])
    const = {}
    for p in (list(np.ndindex(*lead)) if lead else [()]):
        for key, sel in keys.items():
            same = np.all(mn[p][sel[1:]] == mx[p][sel[1:]]) if sel[1:] else np.all(mn[p] == mx[p])
            const[(p, key)] = (first[p][sel[1:]] if sel[1:] else first[p]) if same else None
    return {"maps": maps, "const": const}


def upscale_dask(array, scale=None, *, size=None, model=None, cell: str = "on", chunks=DEFAULT_CHUNK,
                 channel_axis: int | None = None, rgb: bool | None = None):
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
    channel_axis, rgb :
        As :func:`napari_liif.upscale`.

    Returns
    -------
    dask.array.Array
        Lazy; the input's dtype and channel layout, spatial axes resized. Each chunk reads an
        input window of about chunk / scale pixels plus ``receptive_radius + 2`` on each side.
        The intensity maps need one pass over the input (min/max) before the first chunk.
    """
    import dask
    import dask.array as da

    from .api import _layout, get_model, output_hw
    from .field import CELL_MODES

    a = array if isinstance(array, da.Array) else da.from_array(array, chunks="auto")
    if a.dtype.kind not in "biuf":
        raise TypeError(f"cannot upscale data of dtype {a.dtype}; expected integer, float or bool data")
    if cell not in CELL_MODES:
        raise ValueError(f"cell must be one of {', '.join(CELL_MODES)}, got {cell!r}")
    cr, cc = _parse_chunks(chunks)
    in_shape = a.shape
    a, kind, ch_axis = _layout(a, rgb, channel_axis)
    spatial = tuple(a.shape[-3:-1] if kind != "gray" else a.shape[-2:])
    if len(spatial) < 2 or a.size == 0:
        raise ValueError(f"image must have two spatial axes and at least one pixel, got shape {in_shape}")
    out_hw = output_hw(spatial, scale, size)
    lead = tuple(a.shape[:-3] if kind != "gray" else a.shape[:-2])
    n_tail = a.shape[-1] if kind != "gray" else 0
    m = get_model(model)
    halo = m.receptive_radius + 1

    red = _plane_stats(a, kind)
    stats = dask.delayed(_make_stats, pure=True)(red, kind, a.dtype.str, lead, n_tail)
    ref = dask.delayed(ModelRef(m), pure=True)

    (h, w), (ho, wo) = spatial, out_hw
    yc, ytab = _grid(m, h, ho, 0)
    xc, xtab = _grid(m, w, wo, 1)
    row_b, col_b = _bounds(ho, cr), _bounds(wo, cc)
    bs = _block_size(m)
    row_w = [_window(m, h, yc, ytab, r0 // bs * bs, min(ho, -(-r1 // bs) * bs), halo) for r0, r1 in row_b]
    col_w = [_window(m, w, xc, xtab, c0 // bs * bs, min(wo, -(-c1 // bs) * bs), halo) for c0, c1 in col_b]
    whats = {"gray": [None], "rgb": ["rgb"], "rgba": ["rgba"], "channels": list(range(n_tail))}[kind]
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
        out = da.block(nest(()))
    return out if ch_axis is None else da.moveaxis(out, -1, ch_axis)


def output_chunks_for(shape_hw, out_hw, chunk_in: int) -> tuple[int, int]:
    """Output chunk size matching ``chunk_in`` input pixels per side (the CLI's --chunk)."""
    return tuple(max(1, round(chunk_in * o / i)) for i, o in zip(shape_hw, out_hw))


def upscaled_transform(scale, translate, in_hw, out_hw):
    """Scale and translate of the upscaled spatial axes so they overlay the input exactly.

    Output pixel ``j`` covers input edges ``[j r, (j + 1) r]`` with ``r = n_in / n_out``;
    its centre is at input data coordinate ``(j + 0.5) r - 0.5``; so the new scale is
    ``scale * r`` and the new translate ``translate + scale * (0.5 r - 0.5)``.
    """
    r = [i / o for i, o in zip(in_hw, out_hw)]
    return ([s * k for s, k in zip(scale, r)],
            [t + s * (0.5 * k - 0.5) for t, s, k in zip(translate, scale, r)])


# -- zarr / OME-Zarr -----------------------------------------------------------------------
def is_zarr(path) -> bool:
    """True for a zarr store directory (v2 or v3, array or group)."""
    p = Path(path)
    return p.is_dir() and any((p / f).is_file() for f in (".zarray", ".zgroup", "zarr.json"))


def _multiscales(attrs) -> list:
    attrs = dict(attrs)
    return attrs.get("multiscales") or dict(attrs.get("ome") or {}).get("multiscales") or []


def read_zarr(path, component: str | None = None):
    """Open a zarr array, an OME-Zarr image (its full-resolution level) or a group holding a
    single array, as a dask array."""
    import dask.array as da
    import zarr

    node = zarr.open(str(path), mode="r")
    if isinstance(node, zarr.Array):
        return da.from_zarr(node)
    if component is not None:
        return da.from_zarr(node[component])
    ms = _multiscales(node.attrs)
    if ms:
        return da.from_zarr(node[ms[0]["datasets"][0]["path"]])
    keys = sorted(node.array_keys())
    if len(keys) != 1:
        raise ValueError(f"{path}: a zarr group with arrays {keys or 'none'}; name one with component=")
    return da.from_zarr(node[keys[0]])


def read_ome_metadata(path) -> dict | None:
    """``{'axes': [...], 'scale': [...], 'translation': [...]}`` of an OME-Zarr's first level."""
    import zarr

    node = zarr.open(str(path), mode="r")
    ms = _multiscales(node.attrs) if not isinstance(node, zarr.Array) else []
    if not ms:
        return None
    axes = [a["name"] if isinstance(a, dict) else str(a) for a in ms[0].get("axes", [])]
    meta = {"axes": axes, "scale": None, "translation": None}
    for t in ms[0]["datasets"][0].get("coordinateTransformations", []):
        if t.get("type") in ("scale", "translation"):
            meta[t["type"]] = [float(v) for v in t[t["type"]]]
    return meta


_AXIS_TYPES = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}


def guess_axes(ndim: int, *, channel_axis: int | None = None, rgb: bool = False) -> list[str] | None:
    """OME-NGFF axis names for a layout, or None where it does not fit OME (trailing RGB)."""
    if rgb:
        return None
    n_sp = ndim - (channel_axis is not None)
    names = {2: ["y", "x"], 3: ["z", "y", "x"], 4: ["t", "z", "y", "x"]}.get(n_sp)
    if names is None:
        return None
    if channel_axis is not None:
        names.insert(channel_axis % ndim, "c")
    order = [n for n in "tczyx" if n in names]
    return names if names == order else None


def write_zarr(array, path, *, axes: list[str] | None = None, scale=None, translation=None,
               overwrite: bool = False, compute: bool = True, name: str | None = None):
    """Write a (dask) array to a zarr store chunk by chunk.

    With ``axes`` (OME-NGFF names in t, c, z, y, x order) the store is an OME-Zarr 0.4 image:
    a group holding the array as level ``0`` with minimal ``multiscales`` metadata (one
    level; ``scale``/``translation`` per axis). Without, a plain zarr array. The attribute
    ``napari_liif.complete`` turns true once every chunk is written (see :func:`is_complete`).
    Returns the dask store result when ``compute`` is False, else the path.
    """
    import dask.array as da
    import zarr

    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: exists; pass overwrite=True to replace it")
    a = array if isinstance(array, da.Array) else da.from_array(np.asarray(array))
    chunks = tuple(c[0] for c in a.chunks)
    if any(len(set(c[:-1])) > 1 or c[-1] > c[0] for c in a.chunks):
        a = a.rechunk(chunks)
    if axes is not None:
        if len(axes) != a.ndim or [n for n in "tczyx" if n in axes] != list(axes):
            raise ValueError(f"axes {axes} do not fit OME-NGFF (t, c, z, y, x order, one per dimension of {a.shape})")
        root = zarr.open_group(str(path), mode="w", zarr_format=2)
        target = root.create_array("0", shape=a.shape, chunks=chunks, dtype=a.dtype)
        transforms = [{"type": "scale", "scale": [float(v) for v in (scale or [1.0] * a.ndim)]}]
        if translation is not None:
            transforms.append({"type": "translation", "translation": [float(v) for v in translation]})
        root.attrs["multiscales"] = [{
            "version": _OME_VERSION, "name": name or path.stem,
            "axes": [{"name": n, "type": _AXIS_TYPES[n]} for n in axes],
            "datasets": [{"path": "0", "coordinateTransformations": transforms}],
        }]
        marker = root
    else:
        target = zarr.open_array(str(path), mode="w", shape=a.shape, chunks=chunks, dtype=a.dtype, zarr_format=2)
        marker = target
    marker.attrs[_DONE_KEY] = {"complete": False}
    stored = da.store(a, target, lock=False, compute=False)
    if not compute:
        return stored
    stored.compute()
    marker.attrs[_DONE_KEY] = {"complete": True}
    return path


def is_complete(path) -> bool:
    """True if ``path`` is a zarr store that :func:`write_zarr` finished writing."""
    import zarr

    if not is_zarr(path):
        return False
    try:
        node = zarr.open(str(path), mode="r")
    except (OSError, ValueError, KeyError):
        return False
    return bool(dict(node.attrs.get(_DONE_KEY) or {}).get("complete"))


# -- the command line --------------------------------------------------------------------
def open_lazy(path, chunk: int = DEFAULT_CHUNK):
    """A file as a dask array without reading it all: zarr, NPY (memory-mapped), TIFF (via
    its zarr view); other formats are read whole."""
    import dask.array as da

    from .io import ImageIOError, read_image

    path = Path(path)
    if is_zarr(path):
        return read_zarr(path)
    suffix = path.suffix.lower()
    if not path.is_file():
        raise ImageIOError(f"{path}: no such file")
    try:
        if suffix == ".npy":
            mm = np.load(path, mmap_mode="r", allow_pickle=False)
            return da.from_array(mm, chunks=_lazy_chunks(mm.shape, chunk))
        if suffix in (".tif", ".tiff"):
            import tifffile
            import zarr

            z = zarr.open(tifffile.imread(path, aszarr=True), mode="r")
            z = z if isinstance(z, zarr.Array) else z[sorted(z.array_keys())[0]]
            return da.from_zarr(z)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ImageIOError(f"{path}: cannot read lazily ({type(exc).__name__}: {exc})") from None
    a = read_image(path)
    return da.from_array(a, chunks=_lazy_chunks(a.shape, chunk))


def _spatial_hw(shape, channel_axis, rgb) -> tuple[int, int]:
    shape = list(shape)
    if channel_axis is not None:
        if not -len(shape) <= channel_axis < len(shape):
            raise ValueError(f"channel_axis={channel_axis} is out of range for data of shape {tuple(shape)}")
        del shape[channel_axis]
    elif rgb:
        shape = shape[:-1]
    if len(shape) < 2:
        raise ValueError(f"image must have two spatial axes, got shape {tuple(shape)}")
    return int(shape[-2]), int(shape[-1])


def _lazy_chunks(shape, chunk: int):
    return tuple(min(n, chunk) if k >= len(shape) - 3 else 1 for k, n in enumerate(shape))


def _dask_jobs(items, output, *, scale=None, size=None, suffix=None):
    from .batch import BatchError, Job, find_inputs, scale_tag

    inputs: list[Path] = []
    for item in items:
        inputs += [Path(item)] if is_zarr(item) else find_inputs([item])
    inputs = list(dict.fromkeys(inputs))
    out = Path(output) if output else None
    many = len(inputs) > 1 or any(Path(i).is_dir() and not is_zarr(i) for i in items)
    tag = scale_tag(scale, size) if suffix is None else suffix
    jobs = []
    for src in inputs:
        stem = src.name[:-len(src.suffix)] if src.suffix else src.name
        if out is None:
            dst = src.with_name(f"{stem}{tag}.zarr")
        elif many or out.suffix.lower() != ".zarr":
            dst = out / f"{stem}.zarr"
        else:
            dst = out
        jobs.append(Job(src, dst))
    srcs = {j.src.resolve() for j in jobs}
    for j in jobs:
        if j.dst.resolve() in srcs:
            raise BatchError(f"{j.dst}: output would overwrite an input; choose another -o folder or --suffix")
    if len({j.dst.resolve() for j in jobs}) < len(jobs):
        raise BatchError("several inputs map to the same output name; use distinct names or separate runs")
    return jobs


def _client_from_config():
    """Connect to ``DASK_SCHEDULER_ADDRESS`` (dask config ``scheduler-address``) if set."""
    import dask

    address = dask.config.get("scheduler-address", None)
    if not address:
        return None
    from distributed import Client

    return Client(address)


def cmd_upscale_dask(args) -> int:
    """``napari-liif upscale --dask``: inputs (TIFF, NPY, zarr, ...) to zarr stores, chunk by chunk.

    Outputs are OME-Zarr where the layout fits (gray planes, stacks, leading channels) and
    plain zarr arrays otherwise (RGB). Complete outputs are skipped unless --overwrite;
    incomplete ones (an interrupted run) are redone.
    """
    import contextlib

    from .api import get_model, output_hw
    from .batch import BatchError, BatchReport
    from .io import ImageIOError

    if getattr(args, "fmt", None):
        raise BatchError(f"--dask writes zarr stores; drop --format {args.fmt}")
    if args.chunk < 1:
        raise BatchError(f"--chunk must be a positive number of pixels, got {args.chunk}")
    jobs = _dask_jobs(args.inputs, args.output, scale=args.scale, size=args.size, suffix=args.suffix)
    model = get_model(args.checkpoint, args.device, args.precision)
    client = _client_from_config()
    report = BatchReport()
    import time

    t0 = time.perf_counter()
    try:
        for job in jobs:
            if is_complete(job.dst) and not args.overwrite:
                report.skipped.append(job.src)
                continue
            try:
                a = open_lazy(job.src, args.chunk)
                rgb = args.channel_axis is None and a.ndim >= 3 and a.shape[-1] in (3, 4)
                hw = _spatial_hw(a.shape, args.channel_axis, rgb)
                ohw = output_hw(hw, args.scale, args.size)
                out = upscale_dask(a, scale=args.scale, size=args.size, model=model, cell=args.cell,
                                   chunks=output_chunks_for(hw, ohw, args.chunk), channel_axis=args.channel_axis)
                axes = guess_axes(a.ndim, channel_axis=args.channel_axis, rgb=rgb)
                meta = read_ome_metadata(job.src) if is_zarr(job.src) else None
                scale, translation = [1.0] * a.ndim, [0.0] * a.ndim
                if meta and len(meta["axes"]) == a.ndim:
                    axes = meta["axes"]
                    scale = meta["scale"] or scale
                    translation = meta["translation"] or translation
                if axes is not None:
                    sp = [axes.index("y"), axes.index("x")]
                    s2, t2 = upscaled_transform([scale[k] for k in sp], [translation[k] for k in sp], hw, ohw)
                    for k, s, t in zip(sp, s2, t2):
                        scale[k], translation[k] = s, t
                bar = contextlib.nullcontext()
                if not args.quiet and client is None:
                    from dask.diagnostics import ProgressBar

                    bar = ProgressBar()
                with bar:
                    write_zarr(out, job.dst, axes=axes, scale=scale if axes else None,
                               translation=translation if axes else None, overwrite=True)
                report.done.append(job.src)
            except (ImageIOError, ValueError, TypeError, MemoryError, RuntimeError, OSError) as exc:
                report.failed.append((job.src, str(exc).splitlines()[0] if str(exc) else type(exc).__name__))
    finally:
        if client is not None:
            client.close()
    report.seconds = time.perf_counter() - t0
    if len(jobs) == 1:
        if report.failed:
            raise BatchError(f"{report.failed[0][0]}: {report.failed[0][1]}")
        print(f"wrote {jobs[0].dst}" if report.done else f"skipped: {jobs[0].dst} is complete (use --overwrite)")
        return 0
    print(report.summary())
    return 1 if report.failed else 0
