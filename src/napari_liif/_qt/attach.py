"""``attach``: turn on live LIIF zoom for image layers of a viewer (and the helpers the dock
widget shares with it: the model loader, the screen tile for a device, a layer's channel group)."""

from __future__ import annotations

import functools

from ..live.session import default_tile
from .controller import LiveZoom

__all__ = ["LiveZoom", "attach", "channel_group", "default_tile", "model_loader"]

def model_loader(model, device: str, precision: str):
    """Load ``model`` (a bundled name, a path, or None for the bundled default) on ``device`` at ``precision``,
    cached (:func:`napari_liif.api.get_model`). Bound with ``functools.partial`` it is a loader
    for :class:`LiveZoom`, called on the render thread."""
    from ..api import get_model

    return get_model(model, device, precision)


def channel_group(viewer, layer) -> list:
    """The image layers shown as channels together with ``layer`` (what ``channel_axis`` makes): the
    run of neighbouring layers in the list with its shape and placement whose upper members are
    additive, in list order; just ``layer`` when there is none."""
    from napari.layers import Image

    from .layer_state import is_overlay

    def same(ly):
        return (isinstance(ly, Image) and not is_overlay(ly) and ly.data.shape == layer.data.shape
                and ly.rgb == layer.rgb and list(ly.scale) == list(layer.scale)
                and list(ly.translate) == list(layer.translate))

    lst = [ly for ly in viewer.layers if not is_overlay(ly)]
    if layer not in lst:
        return [layer]
    lo = hi = lst.index(layer)
    while lo > 0 and lst[lo].blending == "additive" and same(lst[lo - 1]):
        lo -= 1
    while hi + 1 < len(lst) and lst[hi + 1].blending == "additive" and same(lst[hi + 1]):
        hi += 1
    return lst[lo:hi + 1]


def attach(viewer, layers, model=None, *, device: str = "auto", precision: str = "auto", cell: str = "on",
           tile: int | None = None, debounce_ms: int = 80, preview: bool = True, encoder_tile: int = 32,
           cache_bytes: int = 512 << 20, limits=None, percentiles=None) -> LiveZoom:
    """Turn on live LIIF zoom for image ``layers`` of ``viewer``.

    Parameters
    ----------
    viewer : napari.Viewer
    layers : napari.layers.Image, str, or a list of them
        The image layer(s) (or names), e.g. every channel of a stack opened with
        ``channel_axis``: each gets its overlay, and all share one render queue, centre first.
        Labels and other layer types raise ``TypeError``; a layer that is live already, ``ValueError``.
    model : LiifModel, str, path or None
        A loaded model, a bundled model's name, a checkpoint file (official ``.pth`` or napari-liif
        ``.safetensors``), or None: the bundled model for the first layer
        (:func:`napari_liif.model_choice.choose_for_layer`: microscopy for single-channel layers,
        the photo model for RGB). Files are loaded on the render thread; ``model_choice`` of the
        controller says which model and why.
    device, precision : str
        Used when ``model`` is a path or None: ``auto|cpu|cuda|mps`` and ``auto|fp32|bf16|fp16``
        (``auto``: bf16 on CUDA and on CPUs with fast bf16 matrix products, fp32 elsewhere; the
        input and the bilinear residual stay fp32, and the robust intensity map keeps 16-bit data
        with hot pixels from banding).
    cell : {"on", "off", "clamp"}
        Cell decoding mode (see :meth:`napari_liif.field.EncodedField.cell`).
    tile : int or None
        Screen tile size in physical screen pixels; smaller tiles show the first pixels sooner,
        larger ones have less overhead. None: 128 on a CPU, 512 on a GPU (where a 1920x1080 view
        is a few tiles instead of 135; chosen, not yet measured on a GPU).
    debounce_ms : int
        How long the camera must be still before rendering starts.
    preview : bool
        After the centre tiles, show every other tile's samples on even rows and columns first
        (a quarter of them, as 2x2 blocks), then complete each tile with the rest: the view is
        covered sooner at no extra decoding. Skipped when the full pass is quick anyway.
    encoder_tile, cache_bytes : int
        Encoder tile size (input pixels) and the memory bound of each live layer's encoded-latent
        cache (per layer: three channels live may hold three times this).
    limits, percentiles : (float, float), optional
        The intensity mapping (:mod:`napari_liif.intensity`): data values, or percentiles of each
        plane, mapped to the model's 0 and 1 instead of the robust range.

    Returns
    -------
    LiveZoom
        The controller: ``wait_idle(timeout)`` processes Qt events until the view is rendered,
        ``detach()`` removes the overlays and stops everything; ``status``, ``progress``,
        ``layers_changed`` and ``detached`` are psygnal signals; :data:`registry` lists the
        controllers of a viewer.

    Examples
    --------
    >>> import napari, napari_liif, skimage
    >>> viewer = napari.Viewer()
    >>> layer = viewer.add_image(skimage.data.camera())
    >>> live = napari_liif.attach(viewer, layer)
    >>> viewer.scene.camera.zoom = 4
    >>> live.wait_idle(60)
    """
    items = list(layers) if isinstance(layers, (list, tuple)) else [layers]
    items = [viewer.layers[ly] if isinstance(ly, str) else ly for ly in items]
    from ..engine import LiifModel
    from ..model_choice import Choice, choose_for_layer

    if model is None:
        choice = choose_for_layer(items[0] if items else None, "live")
        choice, model = Choice(choice.name, f"auto: {choice.reason}"), choice.name
    else:
        choice = Choice(model.name if isinstance(model, LiifModel) else str(model), "given to attach()")
    if isinstance(model, LiifModel):
        loader = functools.partial(lambda m: m, model)
    else:
        loader = functools.partial(model_loader, model, device, precision)
    if tile is None:
        tile = default_tile(model.device if isinstance(model, LiifModel) else device)
    return LiveZoom(viewer, items, loader, cell=cell, tile=tile, debounce_ms=debounce_ms, preview=preview,
                    encoder_tile=encoder_tile, cache_bytes=cache_bytes, limits=limits, percentiles=percentiles,
                    model_choice=choice)
