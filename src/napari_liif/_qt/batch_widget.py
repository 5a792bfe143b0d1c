"""The "LIIF upscale" dock widget: a layer (with its z/t stack), or a folder of files.

Layer mode: the two displayed axes that are last in the viewer are the spatial ones, every
other axis (z, t, ...) is upscaled plane by plane with one intensity map for the whole stack
(:func:`napari_liif.upscale`), except an axis of channels (labelled ``c``/``channel``, or chosen):
each channel gets its own map; colour stays colour. Channels napari split into layers of their
own (``channel_axis`` on opening) are layers with their own maps already. The result is a new layer
``<name> [LIIF xS]`` whose scale and translate overlay the source exactly in world
coordinates. Everything is checked (layer type, size, scale, memory) before anything is
allocated; the work runs in a worker thread, with its progress in the widget and in napari's
activity dock (``napari.utils.cancelable_progress``: its cancel button stops the run too), a cancel
button, and the outcome (result, refusal, failure) in the status line and napari's notifications.

Cancelling is all or nothing: a cancelled run adds no layer (the planes done are dropped),
so a layer named ``[LIIF ...]`` is always complete.

Lazy layers (dask or zarr data, and multiscale layers, whose full-resolution level 0 is used) are
never loaded whole: the worker makes the one pass the intensity maps need, chunk by chunk, and
the result is a lazy :func:`napari_liif.upscale_dask` array whose chunks are computed when napari
shows them; it is added as a multiscale layer over the source's own levels (for a zoomed-out view)
when it is larger than the source.

Folder mode: a folder or glob in, a folder out, through :mod:`napari_liif.batch`: outputs
napari-liif wrote are skipped (resumable), an output folder holding other files of those names
is refused before anything runs (:mod:`napari_liif.outputs`), a file that fails is reported
with its reason and the batch goes on, a summary is shown at the end.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from magicgui.widgets import ComboBox, Container, FileEdit, Label, LineEdit, ProgressBar, PushButton, TextEdit
from qtpy.QtCore import Signal
from superqt.utils import qthrottled

from .dock import ViewerDockWidget, image_layer_picker, notify_error, notify_info
from ..model_choice import choose_for_jobs
from .model_options import AUTO, ModelOptions

MODES = ("scale", "target shape")


# -- pure logic (no Qt) ----------------------------------------------------------------------
def parse_numbers(text: str, what: str, integer: bool = False) -> tuple:
    """``"2"`` or ``"2, 3"`` -> numbers; a ValueError naming the text otherwise."""
    parts = [p.strip() for p in str(text).replace("x", ",").split(",") if p.strip()]
    if len(parts) not in (1, 2):
        raise ValueError(f"{what} must be one number or two separated by a comma (rows, cols), got {text!r}")
    try:
        vals = [float(p) for p in parts]
    except ValueError:
        raise ValueError(f"{what} must be numbers, got {text!r}") from None
    if any(not math.isfinite(v) or v <= 0 for v in vals):
        raise ValueError(f"{what} must be positive and finite, got {text!r}")
    if integer:
        if any(v != int(v) for v in vals):
            raise ValueError(f"{what} must be whole numbers of pixels, got {text!r}")
        vals = [int(v) for v in vals]
    return tuple(vals) if len(vals) == 2 else (vals[0], vals[0])


def parse_z(text: str):
    """The z factor field: None for 1 (or empty), "iso", or a number of at least 1."""
    t = str(text).strip().lower()
    if t in ("", "1"):
        return None
    if t in ("iso", "isotropic"):
        return "iso"
    try:
        v = float(t)
    except ValueError:
        v = float("nan")
    if not (math.isfinite(v) and v >= 1):
        raise ValueError(f"z factor must be 1 or more, or iso, got {text!r}")
    return None if v == 1 else v


def folder_target(target: dict) -> dict:
    """The widget's target for files: a numeric z factor joins the scale as (z, rows, cols); "iso"
    (which needs each file's calibration) and a z factor with a target shape are refused."""
    target = dict(target)
    z = target.pop("z", None)
    if z is None:
        return target
    if z == "iso" or target["scale"] is None:
        raise ValueError("folder mode takes a numeric z factor with a scale; for isotropic z from each file's "
                         "calibration use `napari-liif upscale FOLDER --isotropic`")
    target["scale"] = (z, *target["scale"])
    return target


def scale_label(scale=None, size=None) -> str:
    if size is not None:
        return f"{size[0]}x{size[1]}"
    if len(scale) == 3:
        return "x" + ",".join(f"{v:.4g}" for v in scale)
    return f"x{scale[0]:g}" if scale[0] == scale[1] else f"x{scale[0]:g},{scale[1]:g}"


@dataclass
class LayerJob:
    """Everything needed to upscale one layer, decided (and checked) before any allocation."""

    source: str
    rgb: bool
    axes: tuple[int, ...]  # the spatial data axes of the layer: (y, x), or (z, y, x) with a z factor
    out_shape: tuple[int, ...]
    scale: tuple | None
    size: tuple | None
    n_planes: int
    layer_kwargs: dict = field(default_factory=dict)
    lazy: bool = False  # dask/zarr data or a multiscale layer's level 0: upscaled lazily
    channel_axis: int | None = None  # a data axis of independent channels (each its own intensity map)


def layer_channel_axis(layer, choice="auto", spatial=()) -> int | None:
    """The data axis of ``layer`` holding independent channels: ``choice`` an axis index, None (no
    channels), or "auto": the axis labelled ``c``/``channel`` (``layer.axis_labels``, as readers
    of ImageJ/OME hyperstacks set them). A ValueError for an axis that is displayed or colour."""
    from ..codec import channel_axis_from_labels

    if choice == "auto":
        ax = channel_axis_from_labels(getattr(layer, "axis_labels", None))
        return None if ax is None or ax in spatial or layer.rgb else ax
    if choice is None:
        return None
    nd = layer.ndim
    if not -nd <= int(choice) < nd:
        raise ValueError(f"channel axis {choice} is out of range for '{layer.name}' ({nd} axes)")
    ax = int(choice) % nd
    if ax in spatial or layer.rgb:
        raise ValueError(f"channel axis {choice} of '{layer.name}' is a displayed (spatial) or colour axis; "
                         "choose one of the stack's other axes")
    return ax


def parse_channel_choice(text: str):
    """The channels field: empty or "auto" (the layer's labels), "none", or an axis index."""
    t = (text or "").strip().lower()
    if t in ("", "auto"):
        return "auto"
    if t == "none":
        return None
    try:
        return int(t)
    except ValueError:
        raise ValueError(f"channel axis must be empty (auto), none or an axis number, got {text!r}") from None


def plan_layer(layer, displayed: tuple[int, ...], viewer_ndim: int, *, scale=None, size=None,
               channel_axis="auto", z=None) -> LayerJob:
    """Check ``layer`` and work out the output; raises ValueError, TypeError or MemoryError
    with a message for the user. ``displayed`` are the viewer's displayed axes; ``channel_axis``
    as :func:`layer_channel_axis`. ``z``: None, a factor for the nearest stack axis before the
    displayed ones that is not the channel axis (:mod:`napari_liif.isotropic`), or "iso" for the
    factor that makes that axis's spacing equal the rows' (from the layer's scale)."""
    from napari.layers import Image, Labels
    from napari.utils.transforms import Affine

    from ..api import check_allocatable, output_hw

    if isinstance(layer, Labels):
        raise TypeError(f"'{layer.name}' is a labels layer: its values are object ids, and interpolating "
                        "them would invent ids that do not exist; LIIF upscales image layers only")
    if not isinstance(layer, Image):
        raise TypeError(f"'{getattr(layer, 'name', layer)}' is a {type(layer).__name__} layer; "
                        "LIIF upscales image layers only")
    data = layer.data[0] if layer.multiscale else layer.data
    lazy = bool(layer.multiscale) or not isinstance(data, np.ndarray)
    shape = tuple(int(n) for n in data.shape)
    dtype = np.dtype(data.dtype)
    if dtype.kind not in "biuf":
        raise TypeError(f"'{layer.name}' holds {dtype} data; LIIF needs integer, float or bool values")
    if 0 in shape:
        raise ValueError(f"'{layer.name}' is empty (shape {shape}); nothing to upscale")
    nd = layer.ndim  # without the colour axis
    offset = viewer_ndim - nd
    axes = tuple(d - offset for d in tuple(displayed)[-2:])
    if len(axes) != 2 or min(axes) < 0:
        raise ValueError(f"'{layer.name}' has fewer than two of the displayed axes {tuple(displayed)}")
    hw = (shape[axes[0]], shape[axes[1]])
    out_hw = output_hw(hw, scale, size)
    out_shape = list(shape)
    out_shape[axes[0]], out_shape[axes[1]] = out_hw
    ch = layer_channel_axis(layer, channel_axis, axes)
    if z is not None:
        axes, scale, n_z = _z_plan(layer, axes, shape, scale, size, out_hw, z, ch)
        out_shape[axes[0]], size = n_z, None
    out_shape = tuple(out_shape)
    if not lazy:  # a lazy result is never allocated whole
        check_allocatable(out_shape, dtype, extra_bytes=(12 + 24) * out_hw[0] * out_hw[1])

    r = np.ones(nd)
    r[list(axes)] = [shape[k] / out_shape[k] for k in axes]
    old_scale, old_translate = np.asarray(layer.scale, float), np.asarray(layer.translate, float)
    # output pixel j covers input edges [j r, (j + 1) r]: centre at input data coordinate (j + 0.5) r - 0.5
    offset_data = np.where(r != 1, 0.5 * r - 0.5, 0.0)
    linear = Affine(scale=old_scale, rotate=layer.rotate, shear=layer.shear, ndim=nd).linear_matrix
    kwargs = {
        "name": f"{layer.name} [LIIF {scale_label(scale, size)}]",
        "rgb": layer.rgb,
        "scale": tuple(old_scale * r),
        "translate": tuple(old_translate + linear @ offset_data),
        "rotate": layer.rotate,
        "shear": layer.shear,
        "affine": layer.affine.affine_matrix,
        "colormap": layer.colormap.name,
        "contrast_limits": tuple(layer.contrast_limits),
        "gamma": layer.gamma,
        "blending": layer.blending,
        "opacity": layer.opacity,
        "metadata": {**dict(layer.metadata), "napari_liif_upscaled_from": layer.name},
    }
    for attr in ("axis_labels", "units"):
        if hasattr(layer, attr):
            kwargs[attr] = getattr(layer, attr)
    lead = [n for k, n in enumerate(shape[:nd]) if k not in axes]
    return LayerJob(layer.name, bool(layer.rgb), axes, out_shape, scale, size, int(np.prod(lead, dtype=np.int64)),
                    kwargs, lazy, ch)


def _moved_channel_axis(job: LayerJob, ndim: int) -> int | None:
    """Where ``job.channel_axis`` lands once the spatial axes are moved last (None: no channels)."""
    if job.channel_axis is None:
        return None
    rest = [k for k in range(ndim) if k not in job.axes]
    return rest.index(job.channel_axis)


def _z_plan(layer, axes, shape, scale, size, out_hw, z, channel_axis=None):
    """``(axes with z, the three-number scale, output depth)`` for a z factor or "iso"."""
    from ..isotropic import isotropic_factor, z_out

    zax = axes[0] - 1 - (axes[0] - 1 == channel_axis)
    if zax < 0 or zax in axes:
        raise ValueError(f"'{layer.name}' has no axis before its displayed rows and columns to upscale as z; "
                         "leave the z factor at 1")
    sy = out_hw[0] / shape[axes[0]]
    if z == "iso":
        z = isotropic_factor(float(layer.scale[zax]), float(layer.scale[axes[0]]), sy)
    if z < 1:
        raise ValueError(f"z factor {z:g} is below 1: z is refined, not thinned; give 1 or more")
    n_z = z_out(shape[zax], ("scale", z))
    if size is not None:  # the rows and columns of a target shape become factors
        scale = (out_hw[0] / shape[axes[0]], out_hw[1] / shape[axes[1]])
    sy, sx = (scale, scale) if np.ndim(scale) == 0 else tuple(scale)
    return (zax, *axes), (n_z / shape[zax], sy, sx), n_z


def _spatial_last(job: LayerJob) -> list[int]:
    """Where ``run_layer_job`` moves the job's spatial axes: last, before colour."""
    return [k - (1 if job.rgb else 0) for k in range(-len(job.axes), 0)]


def run_layer_job(job: LayerJob, data, model, cell: str, progress=None, should_stop=None,
                  preserve_flux: bool = False, limits=None, percentiles=None) -> np.ndarray:
    """Upscale the layer data of ``job``: spatial axes moved last, the stack plane by plane; a lazy
    job's result is lazy (a dask array; ``data`` is the layer's data, its level 0 when multiscale)."""
    from ..api import upscale

    if job.lazy:
        return _run_lazy(job, data, model, cell, limits, percentiles)
    a = np.asarray(data)
    dst = _spatial_last(job)
    moved = np.moveaxis(a, list(job.axes), dst)
    out = upscale(moved, scale=job.scale, size=None if len(job.axes) == 3 else job.size, model=model, cell=cell,
                  rgb=job.rgb, channel_axis=_moved_channel_axis(job, a.ndim), progress=progress,
                  should_stop=should_stop, preserve_flux=preserve_flux, limits=limits, percentiles=percentiles)
    return np.moveaxis(out, dst, list(job.axes))


def _run_lazy(job: LayerJob, data, model, cell: str, limits=None, percentiles=None):
    """``upscale_dask`` of level 0, its intensity pass made now (chunk by chunk), never loaded whole."""
    import dask.array as da

    from ..dask_upscale import upscale_dask

    a = data if isinstance(data, da.Array) else da.from_array(data, chunks="auto")
    dst = _spatial_last(job)
    moved = da.moveaxis(a, list(job.axes), dst)
    out = upscale_dask(moved, scale=job.scale, size=None if len(job.axes) == 3 else job.size, model=model,
                       cell=cell, rgb=job.rgb, channel_axis=_moved_channel_axis(job, a.ndim), limits=limits,
                       percentiles=percentiles, eager_stats=True)
    return da.moveaxis(out, dst, list(job.axes))


def layer_levels(job: LayerJob, out, source_data, multiscale: bool) -> tuple:
    """``(data, multiscale)`` for the result layer: a lazy result larger than its source goes on
    top of the source's levels (napari then reads only what a zoomed-in view shows of it)."""
    if not job.lazy:
        return out, False
    levels = list(source_data) if multiscale else [source_data]
    if all(o > i for o, i in zip((job.out_shape[k] for k in job.axes), (levels[0].shape[k] for k in job.axes))):
        return [out, *levels], True
    return out, False


#: the flux field's choices and what each asks of upscale(preserve_flux=...)
FLUX_CHOICES = {"off": False, "exact": True, "local": "local"}


def check_flux(job: LayerJob, data) -> None:
    """Refuse (ValueError) before any work what flux preservation cannot do for ``job``."""
    from ..flux import check_preservable

    if len(job.axes) == 3:
        raise ValueError("preserve flux is not available with a z factor; set flux to off or z to 1")
    hw = tuple(int(np.shape(data)[k]) for k in job.axes)
    out_hw = tuple(job.out_shape[k] for k in job.axes)
    check_preservable(data, hw, out_hw)


def _guarded(work, *args):
    """Run ``work`` in the worker thread and return ``(True, result)`` or ``(False, error)``.

    Errors travel as values: napari 0.9's ``create_worker`` connects ``errored`` to a
    two-argument lambda that fails on the error argument when a viewer exists, so a
    worker that raises would also raise in the Qt event loop.
    """
    try:
        return True, work(*args)
    except Exception as exc:  # noqa: BLE001 - every failure is reported in the status line
        return False, exc


# -- the widget ------------------------------------------------------------------------------
def _text(edit: FileEdit) -> str:
    """What the user typed into a file field ('' when empty; a glob stays a glob)."""
    return str(edit.line_edit.value).strip()


class UpscaleWidget(ViewerDockWidget):
    """Dock widget: source layer, scale or target shape, model options, run/cancel, folder mode.

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer
        The viewer whose image layers are offered; results are added to it.
    """

    progressed = Signal(object, object)  # (done, total), emitted from the worker thread (counts may pass 2**31)
    finished_job = Signal(str)  # the final status message

    def __init__(self, napari_viewer, parent=None):
        super().__init__(napari_viewer, parent)
        self.worker = None
        self._stop = threading.Event()
        self.last_report = None
        self.activity = None  # the run's napari.utils.cancelable_progress (napari's activity dock)

        self.source = image_layer_picker(napari_viewer, tooltip="the image layer to upscale (stacks slice by slice)")
        self.mode = ComboBox(label="target", choices=MODES)
        self.value = LineEdit(label="value", value="2",
                              tooltip="scale: S or SY,SX (any positive number); target shape: ROWS,COLS")
        self.z = LineEdit(label="z factor", value="1",
                          tooltip="1: z unchanged; a number: upscale the axis before the displayed ones (z) by it; "
                                  "iso: the factor that makes z spacing equal the pixel size (from the layer scale)")
        self.flux = ComboBox(label="flux", choices=tuple(FLUX_CHOICES), value="off",
                             tooltip="exact: correct the result so that its average over every input pixel equals "
                                     "that pixel (intensities for quantification); local: bring its local means "
                                     "back to the input's without the input's pixel noise (docs/microscopy.md)")
        self.range = LineEdit(label="intensity", value="",
                              tooltip="the data range mapped to the model's 0..1: empty for the robust range (hot "
                                      "pixels ignored), LOW,HIGH for values, LOW%,HIGH% for percentiles")
        self.channels = LineEdit(label="channel axis", value="",
                                 tooltip="a stack axis of independent channels, each with its own intensity map: "
                                         "empty for auto (an axis labelled c or channel), none, or its number")
        self.options = ModelOptions()  # "auto": the model for the layer (folder mode: for the files)
        self.options.set_layer(self.source.value)
        self.source.changed.connect(self.options.set_layer)
        self.run_button = PushButton(text="Upscale layer")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.bar = ProgressBar(min=0, max=1000, value=0, label="progress")
        self.status = Label(value="")
        self.folder_in = FileEdit(label="input folder", mode="d", tooltip="a folder, or a glob such as /data/*.tif")
        self.folder_out = FileEdit(label="output folder", mode="d")
        self.folder_button = PushButton(text="Upscale folder")
        self.report = TextEdit(value="")
        self.report.read_only = True
        self.folder_in.line_edit.native.setPlaceholderText("folder or glob, e.g. /data/*.tif")
        self.folder_out.line_edit.native.setPlaceholderText("output folder")
        buttons = Container(layout="horizontal", labels=False, widgets=[self.run_button, self.cancel_button])
        heading = Label(value="<b>Folder mode</b>: a folder or glob in, a folder out; the same scale and model")
        folder = Container(widgets=[heading, self.folder_in, self.folder_out, self.folder_button, self.report])
        self._set_form(Container(widgets=[self.source, self.mode, self.value, self.z, self.flux, self.range,
                                          self.channels, self.options,
                                          buttons,
                                          self.bar,
                                          self.status, folder]))
        self.status.native.setWordWrap(True)
        self.report.native.setMaximumHeight(120)

        self.run_button.changed.connect(self.run_layer)
        self.cancel_button.changed.connect(self._on_cancel)
        self.folder_button.changed.connect(self.run_folder)
        # the render reports every block: the bars are redrawn at most every 100 ms (the last report kept)
        self._show_progress = qthrottled(self._on_progress, timeout=100)
        self.progressed.connect(self._show_progress)

    # -- inputs ----------------------------------------------------------------------------
    def _target(self) -> dict:
        """What to make: scale or size, and whether to preserve flux (a ValueError for bad text)."""
        flux, z = FLUX_CHOICES[self.flux.value], parse_z(self.z.value)
        if self.mode.value == "scale":
            return {"scale": parse_numbers(self.value.value, "scale"), "size": None, "preserve_flux": flux, "z": z}
        return {"scale": None, "size": parse_numbers(self.value.value, "target shape", integer=True),
                "preserve_flux": flux, "z": z}

    def _intensity(self) -> dict:
        """``limits`` and ``percentiles`` from the intensity field (a ValueError for bad text)."""
        from ..intensity import parse_range

        limits, percentiles = parse_range(self.range.value)
        return {"limits": limits, "percentiles": percentiles}

    @property
    def running(self) -> bool:
        return self.worker is not None

    def _message(self, text: str) -> None:
        self.status.value = text

    def _refuse(self, text: str) -> None:
        """Nothing was started: the reason goes to the status line and to napari's notifications."""
        self._message(text)
        notify_error(f"LIIF upscale: {text}")

    # -- layer mode ------------------------------------------------------------------------
    def run_layer(self, *_) -> LayerJob | None:
        """Check the inputs and start upscaling the chosen layer; returns the job, or None
        (with the reason in the status line and a notification) if nothing was started."""
        if self.running:
            self._refuse("a run is in progress; cancel it first")
            return None
        layer = self.source.value
        if layer is None or layer not in self.viewer.layers:
            self._refuse("no image layer to upscale: open or choose one")
            return None
        try:
            target = self._target()
            flux = target.pop("preserve_flux")
            job = plan_layer(layer, self.viewer.dims.displayed, self.viewer.dims.ndim, **target,
                             channel_axis=parse_channel_choice(self.channels.value))
            if flux and job.lazy:
                raise ValueError(f"'{layer.name}' is lazy (dask, zarr or multiscale); flux preservation needs "
                                 "in-memory data: use `napari-liif upscale` on the file, or set flux to off")
            if flux:
                check_flux(job, layer.data)
            options = {**self.options.options(), "preserve_flux": flux, **self._intensity()}
        except (ValueError, TypeError, MemoryError) as exc:
            self._refuse(f"not started: {exc}")
            return None
        planes = f"{job.n_planes} plane{'s' * (job.n_planes != 1)}"
        self._source_levels = (layer.data, bool(layer.multiscale))
        data = layer.data[0] if layer.multiscale else layer.data
        self._start(self._layer_work, job, data, options, on_done=self._layer_done,
                    text=f"upscaling '{layer.name}' with {Path(options['checkpoint']).name}: {planes} to "
                         f"{job.out_shape}",
                    desc=f"LIIF upscale '{layer.name}' {scale_label(job.scale, job.size)}")
        return job

    def _layer_work(self, job: LayerJob, data, options: dict):
        from ..api import get_model

        model = get_model(options["checkpoint"], options["device"], options["precision"])
        out = run_layer_job(job, data, model, options["cell"], progress=self.progressed.emit,
                            should_stop=self.stop_requested, preserve_flux=options["preserve_flux"],
                            limits=options["limits"], percentiles=options["percentiles"])
        return job, out

    def _layer_done(self, result) -> str:
        job, out = result
        data, multiscale = layer_levels(job, out, *self._source_levels)
        self.viewer.add_image(data, multiscale=multiscale, **job.layer_kwargs)
        lazy = " (lazy: computed as you view it)" if job.lazy else ""
        return f"added '{job.layer_kwargs['name']}' {out.shape} {out.dtype}{lazy}"

    # -- folder mode -----------------------------------------------------------------------
    def run_folder(self, *_):
        """Plan the folder batch (errors shown before anything runs) and start it."""
        from ..batch import BatchError, plan

        if self.running:
            self._refuse("a run is in progress; cancel it first")
            return None
        src, dst = _text(self.folder_in), _text(self.folder_out)
        if not src or not dst:
            self._refuse("folder mode needs an input folder (or glob) and an output folder")
            return None
        try:
            target = folder_target(self._target())
            jobs = plan([src], dst, scale=target["scale"], size=target["size"])
            auto = choose_for_jobs(jobs) if self.options.checkpoint.value == AUTO else None  # headers only
            choice = self.options.choice(auto)
            options = {**self.options.options(auto), **self._intensity()}
        except (ValueError, BatchError) as exc:
            self._refuse(f"not started: {exc}")
            return None
        self.report.value = ""
        files = f"{len(jobs)} file{'s' * (len(jobs) != 1)}"
        self._start(self._folder_work, jobs, target, options, on_done=self._folder_done,
                    text=f"upscaling {files} into {dst} with {Path(choice.name).name} ({choice.reason})",
                    desc=f"LIIF upscale {files}")
        return jobs

    def _folder_work(self, jobs, target: dict, options: dict):
        from ..api import get_model, upscale
        from ..batch import run_batch
        from ..provenance import model_recipe

        model = get_model(options["checkpoint"], options["device"], options["precision"])

        def one(a, job):  # the job's channel axis: the file's declared axes, or its shape (as the CLI)
            return upscale(a, model=model, cell=options["cell"], limits=options["limits"],
                           percentiles=options["percentiles"], channel_axis=job.channel_axis, **target)

        recipe = model_recipe(model, cell=options["cell"], limits=options["limits"],
                              percentiles=options["percentiles"])  # outputs made otherwise are recomputed
        return run_batch(jobs, one, on_file=lambda k, n, p: self.progressed.emit(k, n),
                         should_stop=self.stop_requested, recipe=recipe)

    def _folder_done(self, report) -> str:
        self.last_report = report
        self.report.value = report.summary()
        stopped = " (cancelled)" if self.stop_requested() else ""
        return report.summary().splitlines()[0] + stopped

    # -- the worker and its progress ---------------------------------------------------------
    def _start(self, work, *args, on_done, text: str, desc: str) -> None:
        from napari.qt.threading import thread_worker
        from napari.utils import cancelable_progress

        from ..loading import start_thread_pool

        start_thread_pool()  # from the main thread, before the worker uses torch (napari_liif.loading)
        self._stop.clear()
        self.bar.value = 0
        self._message(text)
        self.run_button.enabled = self.folder_button.enabled = False
        self.cancel_button.enabled = True
        # total unknown (0) until the first report; its cancel button in the activity dock stops the run too
        self.activity = cancelable_progress(total=0, desc=desc)
        worker = thread_worker(_guarded, start_thread=False, ignore_errors=True)(work, *args)
        worker.returned.connect(lambda outcome: self._returned(on_done, outcome))
        self.worker = worker
        worker.start()

    def stop_requested(self) -> bool:
        """Whether cancel was asked for, here or in napari's activity dock; thread-safe."""
        activity = self.activity
        return self._stop.is_set() or bool(activity is not None and activity.is_canceled)

    def request_cancel(self) -> None:
        """Ask the running job to stop at the next plane (layer) or file (folder); thread-safe."""
        self._stop.set()

    def _on_cancel(self, *_) -> None:
        self.request_cancel()
        self._message("cancelling after the current plane or file…")

    def _on_progress(self, done: int, total: int) -> None:
        self.bar.value = int(1000 * done / total) if total else 0
        activity = self.activity
        if activity is not None and total:
            if activity.total != total:
                activity.total = total
            activity.update(done - activity.n)

    def _returned(self, on_done, outcome) -> None:
        ok, result = outcome
        if not ok:
            self._failed(result)
            return
        try:
            text = on_done(result)
        except (ValueError, TypeError) as exc:  # e.g. napari refusing the new layer's settings
            self._finish(f"failed to add the result: {type(exc).__name__}: {exc}", error=True)
            return
        self._finish(text)

    def _failed(self, exc: BaseException) -> None:
        if isinstance(exc, InterruptedError):
            self._finish(f"cancelled ({exc}); no layer was added")
        else:
            first = str(exc).splitlines()[0] if str(exc) else ""
            self._finish(f"failed: {type(exc).__name__}: {first}", error=True)

    def _finish(self, text: str, error: bool = False) -> None:
        self._show_progress.flush()  # the last report, before the bar in the activity dock goes
        activity, self.activity = self.activity, None
        if activity is not None:
            activity.close()
        self.worker = None
        self.run_button.enabled = self.folder_button.enabled = True
        self.cancel_button.enabled = False
        self._message(text)
        (notify_error if error else notify_info)(f"LIIF upscale: {text}")
        self.finished_job.emit(text)

    def shutdown(self) -> None:
        """Ask a running job to stop and disconnect from the viewer (the widget is closing)."""
        if self._alive:
            self.request_cancel()
            self._show_progress.cancel()
        super().shutdown()
