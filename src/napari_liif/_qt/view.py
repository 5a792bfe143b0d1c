"""``napari-liif view [IMAGE]``: napari with the image, the LIIF zoom dock widget and live zoom on."""

from __future__ import annotations

from pathlib import Path

#: screen pixels per image pixel that the view opens at, so that LIIF shows at once
START_ZOOM = 4.0


def sample_image():
    """The bundled sample photograph (scikit-image's ``coffee``, 400 x 600 RGB; no download)."""
    from skimage import data

    return data.coffee()


def open_viewer(image_path=None, checkpoint=None, device: str = "auto", precision: str = "auto", cell: str = "on",
                *, show: bool = True):
    """Open napari with the image and live LIIF zoom on; returns ``(viewer, widget)``.

    ``checkpoint`` None: the dock's ``auto``, the bundled model for the image
    (:func:`napari_liif.model_choice.choose_for_layer`: microscopy for single-channel images, the
    photo model for RGB). Raises ``ImageIOError``/``CheckpointError``/``ValueError`` (with the value received) before
    any window opens.
    """
    from ..api import get_model
    from ..device import resolve_device, resolve_precision
    from ..field import CELL_MODES

    resolve_device(device)
    resolve_precision(precision, device)
    if cell not in CELL_MODES:
        raise ValueError(f"cell must be one of {', '.join(CELL_MODES)}, got {cell!r}")
    if image_path is None:
        image, name = sample_image(), "coffee (sample)"
    else:
        from ..io import read_image

        image, name = read_image(image_path), Path(image_path).stem
    import napari
    from napari.layers import Image

    from ..model_choice import choose_for_layer
    from .widgets import LiveZoomWidget

    layer = Image(image, name=name)  # napari decides whether it is RGB; the model follows
    model = choose_for_layer(layer, "live").name if checkpoint is None else checkpoint
    get_model(model, device, precision)  # load (and cache) now: a bad file fails here, not in a thread

    viewer = napari.Viewer(title=f"napari-liif: {name}", show=show)
    viewer.add_layer(layer)
    widget = LiveZoomWidget(viewer)
    viewer.window.add_dock_widget(widget, name="LIIF zoom", area="right")
    opts = widget.options
    opts.set_checkpoint(checkpoint)
    opts.device.value = device
    opts.precision.value = precision
    opts.cell.value = cell
    widget.source.value = layer
    h, w = layer.data.shape[-3:-1] if layer.rgb else layer.data.shape[-2:]
    cam = viewer.scene.camera
    cam.center = (0.0,) * (len(cam.center) - 2) + ((h - 1) / 2, (w - 1) / 2)
    cam.zoom = START_ZOOM
    widget.live.value = True
    return viewer, widget


def run_viewer(image_path=None, checkpoint=None, device: str = "auto", precision: str = "auto",
               cell: str = "on") -> int:
    """Open the viewer (see :func:`open_viewer`) and run napari until it is closed. Returns 0."""
    import napari

    open_viewer(image_path, checkpoint, device, precision, cell)
    napari.run()
    return 0
