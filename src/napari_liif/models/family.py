"""Model families: the decoding half of a model, behind one small interface.

The engine splits the work of rendering an encoded image in two:

* the **field** (:mod:`napari_liif.field`, with :mod:`napari_liif.latents` and
  :mod:`napari_liif.grid`) owns the geometry: encoder tiles and their halos, encoder windows,
  the bounded cache, the sample grid and its blocks, the input image, devices and copies;
* the **family** (this interface, one subclass per kind of network) owns the math: what is
  computed once per latent and cached with its tile, what depends on the render's cell, and
  how one block of the grid is decoded.

Adding a family touches only ``models/``: write the ``nn.Module``, register it with
:func:`napari_liif.models.register`, subclass :class:`Family` and register the subclass with
:func:`register_family` under the same spec name. Nothing in the field, the API, dask or the
viewer changes.

The stages, in the order the field calls them
---------------------------------------------

``encode(inp) -> feat``
    ``inp`` (1, 3, H, W) on the [-1, 1] scale in the model's dtype -> latents (1, C, H, W).
    Called once per encoder window; the window carries ``halo`` extra input pixels on each
    side (clipped at the image border), so latents ``halo`` from a window edge equal the
    untiled encoding.

``tile_products(feat) -> (1, D, h, w)``
    What is cached per latent, whatever the render: LIIF's first-layer projection of the
    3 x 3-unfolded latent (:meth:`LIIF.project`), bias included. It must be a local function of
    ``feat`` reaching at most ``margin`` latents (1 for a 3 x 3 unfold; zero padding at the
    map's edge, as the official unfold): the field hands it a map ``margin`` latents larger
    than the tile on each side and keeps the interior. ``D == tile_channels``. The field stores
    the result channels last, ``(h, w, D)``, in the model's dtype.

``cell_products(products, rel_cell) -> (h, w, D2)``
    What depends on the render's cell, per latent (LM-LIIF: the latent MLP's scale and shift
    modulations and its compressed latent, whose input includes the cell). ``products`` is a
    cached ``(h, w, D)`` tile from ``tile_products``; ``rel_cell`` the cell in latent units
    (see :attr:`Block.rel_cell`). It must be pointwise (latent by latent: the field may call it
    on any sub-rectangle of a tile). Called only if ``cell_dependent`` is true; the field then
    caches the result keyed by (tile, rel_cell), beside the tile's own products, within the
    same byte bound. ``D2 == cell_channels``. The default returns ``products`` unchanged
    (LIIF: nothing per latent depends on the cell). With ``cells_channels_first`` the field
    stores them as a contiguous (D2, h, w) tensor viewed as (h, w, D2), joins tiles and chunks
    in that layout, and ``decode_block`` receives them so (LM-LIIF: each channel's plane can
    then be read as a strided window, without a transposing gather).

``prepare(rel_cell, device) -> state``
    Per-render constants that depend on the cell but not on a latent, computed once per render
    (LIIF: the first layer's cell term). Default: None.

``decode_block(products, block, state) -> (rows, cols, out_dim)``
    Values of one block of the sample grid, float32 on the [-1, 1] scale, before the field
    maps them to [0, 1]. ``products`` are the (cell) products of the latent rectangle under the
    block, ``(ny, nx, D or D2)``, and ``block`` a :class:`Block` whose latent indices point into
    it. Runs once per block: it should be a few large tensor operations, all on the device,
    with no host synchronisation (no ``.item()``, ``int()``, ``min``/``max`` of device tensors).
    A family whose spec adds the bilinear input (LTE's global residual) sets ``needs_bilinear``
    and adds ``block.bilinear``, which the field computes in float32 at every precision.

Shapes and devices: everything a family receives is on the model's device; latent products
in the model's dtype (bf16 end to end at ``precision="bf16"``); coordinates, cells and the
bilinear input in float32. Return float32.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn as nn


@dataclass(frozen=True)
class Runs:
    """Samples of an axis grouped by the latents they read (from :meth:`napari_liif.grid.Axis.runs`).

    A *run* is a stretch of consecutive samples that read the same latent for every ensemble
    shift (on a regular grid: the samples between two latent centres). Runs are cut into
    ``count`` pieces of at most ``n`` samples and each piece is padded to ``n`` *slots*, so a
    decoder can lay samples out as (slot in piece, piece) and apply per-latent values by
    broadcasting over the slots instead of gathering them sample by sample.

    Attributes
    ----------
    n : int
        Slots per piece.
    first : torch.Tensor
        (count,) int64: the first sample of each piece (relative to the range asked for).
    slot : torch.Tensor
        (n, count) int64: the sample in each slot; a padding slot repeats its piece's last
        sample (so it reads the same latent and finite coordinates; its value is dropped).
    unpad : torch.Tensor
        (k,) int64: for each sample, its slot as ``position * count + piece``.
    start : tuple of int, or None
        Known on the host: when, for every ensemble shift (in sorted order), piece ``t`` reads
        latent ``start[shift] + t`` (each piece a whole run, runs one latent apart: a zoom-in
        away from clamped borders), the latent of piece 0 for each shift; None otherwise. A
        decoder can then read per-piece values as a strided window of the latent map instead
        of gathering them. Indices are those of the grid's tables (``moved`` follows a
        block's ``index - lo``).
    """

    n: int
    first: torch.Tensor
    slot: torch.Tensor
    unpad: torch.Tensor
    start: tuple | None = None

    @property
    def count(self) -> int:
        return len(self.first)

    def to(self, device) -> Runs:
        return Runs(self.n, self.first.to(device), self.slot.to(device), self.unpad.to(device), self.start)

    def moved(self, lo: int) -> Runs:
        """The same runs with ``start`` measured from latent ``lo`` (as a block's indices)."""
        if self.start is None:
            return self
        return Runs(self.n, self.first, self.slot, self.unpad, tuple(s - int(lo) for s in self.start))

    @classmethod
    def singles(cls, k: int, device=None) -> Runs:
        """Every sample its own piece (``n == 1``): valid for any grid, with no padding."""
        i = torch.arange(k, device=device)
        return cls(1, i, i[None, :], i)


@dataclass
class Block:
    """One rectangle of a sample grid, ready to decode; every tensor is on the model's device.

    Attributes
    ----------
    members : tuple of (int, int)
        The local-ensemble members as (row shift, column shift), in the official order
        ``(-1, -1), (-1, 1), (1, -1), (1, 1)``; ``((0, 0),)`` without the ensemble.
    rows : dict
        ``{row shift: (index, rel)}`` for each row shift of ``members``: for each of the block's
        ``r`` rows, ``index`` (int64, (r,)) is the latent row as an index into the ``products``
        handed to ``decode_block``, and ``rel`` (float32, (r,)) the relative coordinate
        ``(query - latent centre) * h`` in latent units, ``h`` the frame's latent rows.
    cols : dict
        The same for columns: ``{column shift: (index, rel)}`` of length ``c``.
    rel_cell : (float, float)
        The render's cell in latent units, ``(cell_y * h, cell_x * w)`` (the official
        ``rel_cell``; ``cell`` in [-1, 1] units). The same for every block of a render.
    bilinear : torch.Tensor or None
        ``(r, c, 3)`` float32: the input image on the [-1, 1] scale, bilinearly interpolated at
        the block's samples (border padding, ``align_corners=False``), when the family's
        ``needs_bilinear`` is true; None otherwise.
    row_runs, col_runs : Runs or None
        The block's rows (columns) grouped by the latents they read, on the device, when the
        family's ``wants_runs`` is true; None otherwise.
    """

    members: tuple
    rows: dict
    cols: dict
    rel_cell: tuple[float, float]
    bilinear: torch.Tensor | None = None
    row_runs: Runs | None = None
    col_runs: Runs | None = None

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols) of the block."""
        return len(next(iter(self.rows.values()))[0]), len(next(iter(self.cols.values()))[0])


class Scratch:
    """Reusable per-thread buffers for one block's work, by name: ``take`` hands out a view of
    the calling thread's buffer, grown when too small, so a block decoder allocates no fresh
    multi-MB tensor per block (whose page faults cost about as much as filling it on the
    2-core EPYC). Blocks run on several worker threads at once, hence per thread. What
    ``take`` returns is overwritten by the next ``take`` of that name on the same thread."""

    _local = threading.local()

    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        self.bufs = self._local.__dict__.setdefault(str(self.device), {})

    def take(self, name: str, shape, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        n = math.prod(shape)
        key = (name, dtype)
        buf = self.bufs.get(key)
        if buf is None or buf.numel() < n:
            buf = self.bufs[key] = torch.empty(n, dtype=dtype, device=self.device)
        return buf[:n].view(shape)


class Family:
    """Decoding of one kind of network (see the module docstring for the contract).

    Subclasses set ``name`` (the spec name, e.g. ``"liif"``) and implement ``tile_channels``,
    ``tile_products`` and ``decode_block``; cell-dependent families also ``cell_channels`` and
    ``cell_products``. ``net`` is the network, already on its device and in its dtype.
    """

    name: ClassVar[str] = ""
    #: whether ``cell_products`` computes anything (the field then caches per (tile, cell))
    cell_dependent: ClassVar[bool] = False
    #: whether ``decode_block`` reads ``block.row_runs`` / ``col_runs`` (the field then builds them)
    wants_runs: ClassVar[bool] = False
    #: whether the field should store and assemble ``cell_products`` channels first: a
    #: contiguous (D2, h, w) tensor viewed as (h, w, D2), which ``decode_block`` then receives
    cells_channels_first: ClassVar[bool] = False

    def __init__(self, net: nn.Module):
        self.net = net

    # -- geometry ---------------------------------------------------------------------
    @property
    def margin(self) -> int:
        """Latents of context ``tile_products`` reads on each side (1 with a 3 x 3 unfold)."""
        return 1 if getattr(self.net, "feat_unfold", False) else 0

    @property
    def halo(self) -> int:
        """Input pixels an encoder window needs beyond its tiles on each side so that its tile
        products equal the untiled ones: the encoder's receptive radius plus ``margin``."""
        return int(self.net.encoder.receptive_radius) + self.margin

    def shifts(self) -> tuple[tuple, float]:
        """(members, eps): the ensemble's (row, col) shifts in latent radii and the push that
        breaks ties (official: four shifts and 1e-6 with the local ensemble, else one)."""
        return self.net.shifts()

    def block_side(self, device: torch.device) -> int | None:
        """Output block side this family decodes best on ``device``; None: the field's default."""
        return None

    @property
    def needs_bilinear(self) -> bool:
        """Whether ``decode_block`` adds ``block.bilinear`` (the spec's ``bilinear_residual``)."""
        return bool(getattr(self.net, "bilinear_residual", False))

    @property
    def out_dim(self) -> int:
        raise NotImplementedError

    @property
    def tile_channels(self) -> int:
        """``D``: channels per latent of ``tile_products`` (the cache's unit of size)."""
        raise NotImplementedError

    @property
    def cell_channels(self) -> int:
        """``D2``: channels per latent of ``cell_products`` (0 if nothing depends on the cell)."""
        return 0

    # -- stages -------------------------------------------------------------------------
    def encode(self, inp: torch.Tensor) -> torch.Tensor:
        return self.net.encode(inp)

    def tile_products(self, feat: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def cell_products(self, products: torch.Tensor, rel_cell: tuple[float, float]) -> torch.Tensor:
        return products

    def prepare(self, rel_cell: tuple[float, float], device: torch.device) -> Any:
        return None

    def decode_block(self, products: torch.Tensor, block: Block, state: Any) -> torch.Tensor:
        raise NotImplementedError


def ensemble_weights(block: Block) -> list[torch.Tensor]:
    """The local ensemble's weight of each member, (r, c) float32 each, in ``members`` order:
    the area ``|rel_y * rel_x| + 1e-9`` of the diagonally opposite member over the total (with
    four members; a single member gets weight 1)."""
    areas = [(block.rows[sy][1][:, None] * block.cols[sx][1][None, :]).abs() + 1e-9 for sy, sx in block.members]
    if len(areas) == 4:
        areas = areas[::-1]  # each member is weighted by the diagonally opposite area
    tot = sum(areas)
    return [a / tot for a in areas]


def blend(preds: torch.Tensor, block: Block) -> torch.Tensor:
    """Sum of the members' predictions ``preds`` (members, r, c, out) float32 with
    :func:`ensemble_weights`, plus ``block.bilinear`` if present: (r, c, out) float32."""
    out = sum(p * w[..., None] for p, w in zip(preds, ensemble_weights(block)))
    return out if block.bilinear is None else out + block.bilinear


_FAMILIES: dict[str, type[Family]] = {}
_MODULES: list[tuple[type, type[Family]]] = []


def register_family(name: str, module: type | None = None):
    """Class decorator: ``cls`` decodes spec name ``name`` (and, for networks built without a
    spec, instances of ``module``)."""

    def deco(cls: type[Family]) -> type[Family]:
        cls.name = name
        _FAMILIES[name] = cls
        if module is not None:
            _MODULES.append((module, cls))
        return cls

    return deco


def families() -> list[str]:
    """Spec names that have a family."""
    return sorted(_FAMILIES)


def family_for(net: nn.Module, name: str | None = None) -> Family:
    """The family that decodes ``net``: by spec ``name`` if given and known, else by the
    network's class. A clear ValueError names the known families otherwise."""
    if name in _FAMILIES:
        return _FAMILIES[name](net)
    for module, cls in _MODULES:
        if isinstance(net, module):
            return cls(net)
    raise ValueError(f"no decoder family for model {name or type(net).__name__!r}; "
                     f"known families: {', '.join(families()) or 'none'}")
