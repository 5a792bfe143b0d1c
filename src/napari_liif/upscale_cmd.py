"""``napari-liif upscale``: image files (``cmd_upscale``) and, with ``--dask``, zarr stores chunk by
chunk (``cmd_upscale_dask``). Both plan every output with :func:`napari_liif.batch.plan` first, so
bad arguments, unsafe outputs, unwritable folders and outputs too large for memory are refused
(exit status 2) before any file is read in full."""

from __future__ import annotations

import contextlib
import sys
import time

import numpy as np

from .batch import BatchError, BatchReport, Job, plan, run_batch


def cmd_upscale(args) -> int:
    """``napari-liif upscale``: 0 if every file succeeded (or was skipped), 1 if any failed.

    Bad arguments (missing inputs, an output that is not safe to write, an unusable checkpoint
    or device) raise before any file is touched; ``cli.main`` turns them into one line and exit
    status 2.
    """
    _resolve_isotropic(args)
    if args.preserve_flux and _has_z(args):
        raise ValueError("--preserve-flux is not available with a z factor; drop one of them")
    if args.dask:
        if args.preserve_flux:
            raise ValueError("--preserve-flux is not available with --dask; drop one of them")
        return cmd_upscale_dask(args)
    from tqdm import tqdm

    from .api import upscale

    jobs = plan(args.inputs, args.output, scale=args.scale, size=args.size, fmt=args.fmt, suffix=args.suffix,
                overwrite=args.overwrite, channel_axis=args.channel_axis)
    model = _model(args)
    model_hint(args.checkpoint, jobs, quiet=args.quiet)
    quiet = True if args.quiet else None  # None: a bar only on a terminal
    files = tqdm(total=len(jobs), unit="file", disable=True if len(jobs) < 2 else quiet)

    def one(a, job: Job):
        from .batch import file_channel_axis

        ax = job.channel_axis if job.channel_axis is not None else file_channel_axis(a.shape, a.dtype)
        # a pixel bar for the file, shown only if it takes more than two seconds
        with tqdm(total=1, unit="px", unit_scale=True, delay=2.0, leave=False, disable=quiet) as pixels:
            def tick(done, total):
                pixels.total = total
                pixels.update(done - pixels.n)

            out = upscale(a, scale=args.scale, size=args.size, model=model, cell=args.cell,
                          channel_axis=ax, limits=args.limits, percentiles=args.percentiles, progress=tick,
                          preserve_flux=args.preserve_flux)
        sizes[job.src] = out.size
        return out

    last = [time.perf_counter()]
    sizes: dict = {}  # output values of each file upscaled

    def on_file(k, n, src):
        files.update(1)
        now = time.perf_counter()
        file_done_line(k, n, src, now - last[0], args.quiet, sizes.get(src, 0))
        last[0] = now

    report = run_batch(jobs, one, overwrite=args.overwrite, on_file=on_file, recipe=_recipe(args, model))
    files.close()
    return _report(jobs, report, "exists (use --overwrite)")


def model_hint(checkpoint, jobs: list[Job], quiet: bool = False, stream=None) -> bool:
    """One line on a terminal's stderr when the photo model (the default) is about to upscale
    single-channel data deeper than 8 bits (16-bit or float: fluorescence, most likely), pointing to
    the microscopy model; True if it was printed. Not in logs or pipes: it is advice, not a result."""
    from .bundled import DEFAULT
    from .io import image_info

    stream = sys.stderr if stream is None else stream
    if quiet or checkpoint not in (None, DEFAULT) or not stream.isatty():
        return False
    for job in jobs:
        info = image_info(job.src) if job.action == "write" else None
        if info is None:
            continue
        shape, dtype = info
        colour = len(shape) >= 3 and shape[-1] in (3, 4) and job.channel_axis is None
        if not colour and np.dtype(dtype).kind in "uif" and np.dtype(dtype).itemsize > 1:
            print(f"napari-liif: hint: {job.src.name} is single-channel {np.dtype(dtype).name} data; the default "
                  "model was trained on photographs and sharpens noise: --checkpoint microscopy is trained for "
                  "fluorescence (docs/microscopy.md)", file=stream)
            return True
    return False


def _has_z(args) -> bool:
    from .isotropic import three

    return three(args.scale) or three(args.size)


def _resolve_isotropic(args) -> None:
    """``--isotropic [S]``: ``args.scale`` becomes ``(z spacing / pixel size * S, S, S)`` from the
    inputs' calibration, which must be one for all of them (one line naming both otherwise)."""
    if getattr(args, "isotropic", None) is None:
        return
    from .batch import find_inputs
    from .isotropic import isotropic_factor
    from .readers import read_calibration

    factors = {}
    for src in find_inputs(args.inputs, stores=args.dask):
        cal = read_calibration(src)
        if cal is None or "z" not in cal.axes:
            raise BatchError(f"{src}: --isotropic needs a z-stack with its z spacing in the file (ImageJ or OME "
                             "metadata); this file has none: give the z factor with --scale Z,Y,X")
        zs, ys = cal.scale[cal.axes.index("z")], cal.scale[cal.axes.index("y") if "y" in cal.axes else -2]
        factors[src] = isotropic_factor(zs, ys, args.isotropic)
    if len({round(f, 9) for f in factors.values()}) > 1:
        (a, fa), (b, fb) = list(factors.items())[:2]
        raise BatchError(f"--isotropic: {a} needs a z factor of {fa:g} and {b} one of {fb:g}; run them separately")
    if factors:
        s = args.isotropic
        args.scale = (next(iter(factors.values())), s, s)


def _model(args):
    """The model of ``--checkpoint``; an absurd safetensors spec is refused from its header first,
    before torch is even imported."""
    from .validate import precheck_checkpoint

    if args.checkpoint:
        precheck_checkpoint(args.checkpoint)
    from .api import get_model

    return get_model(args.checkpoint, args.device, args.precision)


def _recipe(args, model) -> dict:
    """What an output of this run is made with, besides its input (:mod:`napari_liif.provenance`)."""
    from .provenance import model_recipe

    extra = {"dask": True, "chunk": args.chunk} if args.dask else {}
    return model_recipe(model, cell=args.cell, limits=args.limits, percentiles=args.percentiles,
                        preserve_flux=args.preserve_flux, **extra)


def _report(jobs: list[Job], report: BatchReport, skipped: str) -> int:
    for src, why in report.failed:
        print(f"napari-liif: error: {src}: {why}", file=sys.stderr)
    if len(jobs) == 1:
        if report.done:
            print(f"wrote {jobs[0].dst}")
        elif report.same:
            print(f"kept: {jobs[0].dst}: another napari-liif run wrote the identical result meanwhile")
        elif report.skipped:
            print(f"skipped: {jobs[0].dst} {skipped}")
    else:
        print(report.summary().splitlines()[0])
    return 1 if report.failed else 0


# -- --dask ------------------------------------------------------------------------------------
def output_chunks_for(shape_hw, out_hw, chunk_in: int) -> tuple[int, int]:
    """Output chunk size matching ``chunk_in`` input pixels per side (the CLI's --chunk)."""
    return tuple(max(1, round(chunk_in * o / i)) for i, o in zip(shape_hw, out_hw))


def _client_from_config():
    """Connect to ``DASK_SCHEDULER_ADDRESS`` (dask config ``scheduler-address``) if set."""
    import dask

    address = dask.config.get("scheduler-address", None)
    if not address:
        return None
    try:
        from distributed import Client
    except ImportError:
        raise BatchError(f"DASK_SCHEDULER_ADDRESS is set ({address}) but dask.distributed is not installed; "
                         "pip install distributed, or unset DASK_SCHEDULER_ADDRESS to run locally") from None
    try:
        return Client(address)
    except (OSError, TimeoutError, ValueError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise BatchError(f"cannot reach the dask scheduler at {address} ({reason}); start it, or unset "
                         "DASK_SCHEDULER_ADDRESS to run locally") from None


def _spatial_hw(shape, channel_axis, rgb) -> tuple[int, int]:
    shape = list(shape)
    if channel_axis is not None:
        del shape[channel_axis]
    elif rgb:
        shape = shape[:-1]
    return int(shape[-2]), int(shape[-1])


def _ome_calibration(job: Job, in_shape, out_shape, axes):
    """Axes, scale, translation and units of the output store: the input's calibration (an
    OME-Zarr's metadata, a TIFF's ImageJ/OME tags) or its pixel grid, rescaled so the output
    overlays the input exactly (:meth:`napari_liif.calibration.Calibration.upscaled`). The axes
    may come in any order (an ImageJ ``ZCYX`` stack); :func:`_to_ngff` orders them."""
    from .calibration import Calibration
    from .ome import ngff_order
    from .readers import read_calibration

    base = read_calibration(job.src)
    if base is None or base.ndim != len(in_shape):
        base = Calibration.identity(len(in_shape))
    elif None not in base.axes and ngff_order(base.axes) is not None:
        axes = list(base.axes)
    cal = base.upscaled(in_shape, out_shape)
    return axes, list(cal.scale), list(cal.translate), list(cal.units)


def _to_ngff(out, axes, scale, translation, units):
    """The output and its metadata transposed into NGFF axis order (t, c, z, y, x); axes None
    (a plain zarr array) where the layout has no NGFF names (RGB)."""
    from .ome import ngff_order

    perm = ngff_order(axes) if axes else None
    if perm is None:
        return out, None, None, None, None
    if perm != sorted(perm):
        out = out.transpose(perm)
    return out, *([seq[k] for k in perm] for seq in (axes, scale, translation, units))


def _dask_one(job: Job, args, model, client, guard, claim) -> int:
    """Upscale one input into its store; returns the number of output values."""
    from .api import output_hw
    from .dask_upscale import upscale_dask
    from .isotropic import split
    from .zarr_io import guess_axes, open_lazy, write_zarr

    a = open_lazy(job.src, args.chunk)
    if a.size == 0:
        from .io import ImageIOError

        raise ImageIOError(f"{job.src}: the image is empty (shape {tuple(a.shape)})")
    ax = job.channel_axis
    rgb = ax is None and a.ndim >= 3 and a.shape[-1] in (3, 4)
    hw = _spatial_hw(a.shape, ax, rgb)
    zsplit = split(args.scale, args.size)
    ohw = output_hw(hw, *(zsplit[1:] if zsplit else (args.scale, args.size)))
    out = upscale_dask(a, scale=args.scale, size=args.size, model=model, cell=args.cell,
                       chunks=output_chunks_for(hw, ohw, args.chunk), channel_axis=ax, limits=args.limits,
                       percentiles=args.percentiles)
    guess = guess_axes(a.ndim, channel_axis=ax, rgb=rgb, any_order=True)
    out, axes, scale, translation, units = _to_ngff(out, *_ome_calibration(job, a.shape, out.shape, guess))
    with _progress(args, client):
        write_zarr(out, job.dst, axes=axes, scale=scale, translation=translation, units=units, levels=None,
                   overwrite=True, inputs=guard, claim=claim)
    return int(out.size)


@contextlib.contextmanager
def _progress(args, client):
    """A tqdm bar of the dask tasks on a terminal (nothing with --quiet, on a non-terminal or on a
    distributed cluster, whose dashboard shows it): never a line per update in a log file."""
    if args.quiet or client is not None or not sys.stderr.isatty():
        yield
        return
    from dask.callbacks import Callback
    from tqdm import tqdm

    class Bar(Callback):
        def _start_state(self, dsk, state):
            self.bar = tqdm(total=sum(len(state[k]) for k in ("ready", "waiting", "running", "finished")),
                            unit="task", leave=False, delay=BAR_DELAY_S)

        def _posttask(self, key, result, dsk, state, worker_id):
            self.bar.update(1)

        def _finish(self, dsk, state, errored):
            self.bar.close()

    with Bar():
        yield


BAR_DELAY_S = 1.0  # a dask bar shows once the write has run this long
LONG_FILE_PX = 4_000_000  # output pixels of a long file (seconds of work): counted, not timed


def file_done_line(k: int, n: int, src, seconds: float, quiet: bool, pixels: int) -> None:
    """On a non-terminal (a log file, a pipe), one line on stderr when a long file of a batch (``pixels``
    output values, at least ``LONG_FILE_PX``) ends; a terminal has the bars instead, which are
    off on a non-terminal."""
    if not quiet and n > 1 and pixels >= LONG_FILE_PX and not sys.stderr.isatty():
        print(f"napari-liif: [{k}/{n}] {src} done in {seconds:.1f} s", file=sys.stderr, flush=True)


def cmd_upscale_dask(args) -> int:
    """``napari-liif upscale --dask``: inputs (TIFF, NPY, zarr, ...) to zarr stores, chunk by chunk.

    Outputs are OME-Zarr multiscale pyramids where the layout fits (gray planes, stacks, leading
    channels), keeping the input's calibration rescaled, and plain zarr arrays otherwise (RGB). Each store is written under a hidden temporary name and
    swapped in when complete; complete stores of ours made from the same input and parameters
    are skipped unless --overwrite, other stores of ours recomputed.
    """
    from .io import ImageIOError
    from .outputs import Claim, Inputs, check_store, remove_stale_partials

    if getattr(args, "fmt", None):
        raise BatchError(f"--dask writes zarr stores; drop --format {args.fmt}")
    if args.chunk < 1:
        raise BatchError(f"--chunk must be a positive number of pixels, got {args.chunk}")
    jobs = plan(args.inputs, args.output, scale=args.scale, size=args.size, suffix=args.suffix,
                overwrite=args.overwrite, dask=True, channel_axis=args.channel_axis)
    model = _model(args)
    model_hint(args.checkpoint, jobs, quiet=args.quiet)
    recipe = _recipe(args, model)
    client = _client_from_config()
    report, t0 = BatchReport(), time.perf_counter()
    guard = Inputs(j.src for j in jobs)
    try:
        for job in jobs:
            try:
                job.recipe = {**job.recipe, **recipe}
                claim = Claim().look(job.dst)
                if check_store(job.dst, guard, overwrite=args.overwrite, made=job.made) == "skip":
                    report.skipped.append(job.src)
                    continue
                remove_stale_partials(job.dst)
                t1 = time.perf_counter()
                claim.made = job.made()
                size = _dask_one(job, args, model, client, guard, claim)
                (report.same if claim.outcome == "identical" else report.done).append(job.src)
                file_done_line(len(report.done) + len(report.same) + len(report.failed), len(jobs), job.src,
                               time.perf_counter() - t1, args.quiet, size)
            except (ImageIOError, ValueError, TypeError, MemoryError, RuntimeError, OSError) as exc:
                text = (str(exc).strip().splitlines() or [""])[0] or type(exc).__name__
                report.failed.append((job.src, text.removeprefix(f"{job.src}: ")))
    finally:
        if client is not None:
            client.close()
    report.seconds = time.perf_counter() - t0
    return _report(jobs, report, "is complete (use --overwrite)")
