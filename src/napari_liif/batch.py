"""Upscaling files and folders: input discovery, output naming, output safety, resumability,
failure report. One planner for image files and for ``--dask`` zarr stores.

Shared by the command line and the batch widget. Rules:

* inputs are files, folders (their images, not recursive), glob patterns and, for ``dask``,
  zarr stores;
* with several inputs or a folder, ``output`` is a folder and names are kept;
* with no ``output``, results go beside the input as ``<stem>_liif_x<S><suffix>``;
* every destination goes through :mod:`napari_liif.outputs`: an output that is, holds or is
  another name for an input is refused, always; an existing output of ours is skipped
  (resumable) only if it was made from the same input bytes and parameters (its recorded
  ``made``: :mod:`napari_liif.provenance`), else recomputed; anything else that exists is
  refused unless ``overwrite``; a result another run committed meanwhile is kept (the race
  rules of :class:`napari_liif.outputs.Claim`);
* problems that can be seen before the work (names, unwritable folders, layouts, outputs too
  large for memory) raise before any file is read in full;
* a file that fails is reported with its reason and the batch goes on.
"""

from __future__ import annotations

import contextlib
import glob
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .io import (READ_SUFFIXES, WRITE_SUFFIXES, ImageIOError, check_writable, image_axes, image_info, read_image,
                 write_image)
from .ome import is_ome_tiff
from .outputs import Claim, Inputs, OutputError, check_file, check_folder_writable, check_store, remove_stale_in
from .provenance import base_recipe, content_digest, normalize
from .zarr_io import is_zarr


class BatchError(ValueError):
    """Inputs or outputs that cannot form a batch."""


@dataclass
class Job:
    src: Path
    dst: Path
    action: str = "write"  # or "skip": an output of ours exists (decided when planned)
    channel_axis: int | None = None  # decided from the file's header when planned
    problem: str | None = None  # why this file will fail, seen from its header (reported, not computed)
    recipe: dict = field(default_factory=dict)  # the parameters recorded with the output (provenance)

    def made(self) -> dict:
        """What the output of this job is made from: the input's digest (hashed now) and the recipe."""
        return normalize({"input": content_digest(self.src), **self.recipe})


@dataclass
class BatchReport:
    done: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    seconds: float = 0.0
    same: list[Path] = field(default_factory=list)  # another run wrote the identical result meanwhile

    def summary(self) -> str:
        same = f"{len(self.same)} identical to another run's, " if self.same else ""
        lines = [f"{len(self.done)} upscaled, {len(self.skipped)} skipped (output exists), {same}"
                 f"{len(self.failed)} failed in {self.seconds:.1f} s"]
        lines += [f"  failed: {p}: {why}" for p, why in self.failed]
        return "\n".join(lines)


def find_inputs(items: list[str], *, stores: bool = False) -> list[Path]:
    """Expand files, folders and globs into a list of image files (folders and globs sorted);
    with ``stores``, a zarr store named (or matched) is one input.

    Folder listings and globs skip hidden files (names starting with '.', e.g. the partial
    files of an interrupted run) and files of other types; a named file is always kept.
    """
    found: list[Path] = []
    for item in items:
        p = Path(item)
        if stores and is_zarr(p):
            found.append(p)
        elif p.is_dir():
            found += sorted(q for q in p.iterdir() if _listed(q, stores))
        elif p.exists():
            if not p.is_file():
                raise BatchError(f"{item}: not a regular file (a device, pipe or socket); give an image file")
            found.append(p)
        elif any(ch in str(item) for ch in "*?["):
            found += sorted(q for q in map(Path, glob.glob(str(item))) if _listed(q, stores))
        else:
            raise BatchError(f"{item}: no such file or folder")
    if not found:
        raise BatchError(f"no image files ({', '.join(READ_SUFFIXES)}) found in {', '.join(map(str, items))}")
    return list(dict.fromkeys(found))


def _listed(q: Path, stores: bool = False) -> bool:
    if q.name.startswith("."):
        return False
    if stores and is_zarr(q):
        return True
    return q.is_file() and q.suffix.lower() in READ_SUFFIXES


def scale_tag(scale=None, size=None) -> str:
    """The default output-name suffix: ``_liif_x2``, ``_liif_x2x3`` or ``_liif_64x80``."""
    if size is not None:
        return f"_liif_{size[0]}x{size[1]}"
    s = scale if isinstance(scale, (tuple, list)) else (scale,)
    return "_liif_x" + "x".join(f"{v:g}" for v in s)


def _stem(p: Path) -> str:
    return p.name[:-len(p.suffix)] if p.suffix else p.name


def _destinations(inputs: list[Path], items: list[str], output: str | None, tag: str, fmt: str | None,
                  dask: bool) -> list[Job]:
    out = Path(output) if output else None
    folders = any(Path(i).is_dir() and not (dask and is_zarr(i)) for i in items)
    many = len(inputs) > 1 or folders
    if dask and out is not None and out.suffix.lower() not in ("", ".zarr") and not out.is_dir():
        raise BatchError(f"{out}: --dask writes zarr stores; -o must be a folder or a name ending in .zarr")
    if not dask and out is not None and many and out.suffix.lower() in WRITE_SUFFIXES and not out.is_dir():
        raise BatchError(f"{out}: with several inputs -o must be a folder, not an image file name")
    jobs = []
    for src in inputs:
        ext = ".zarr" if dask else f".{fmt.lower().lstrip('.')}" if fmt else src.suffix
        if out is None and not dask and ext.lower() in (".tif", ".tiff") and is_ome_tiff(src):
            dst = src.with_name(f"{_stem(src)[:-4]}{tag}.ome{ext}")  # an OME-TIFF stays one: x.ome.tif
        elif out is None:
            dst = src.with_name(f"{_stem(src)}{tag}{ext}")
        elif dask:
            dst = out if not many and out.suffix.lower() == ".zarr" else out / f"{_stem(src)}{ext}"
        elif many or out.is_dir() or not out.suffix:
            dst = out / f"{src.stem}{ext}"
        else:
            dst = out
        if not dask and dst.suffix.lower() not in WRITE_SUFFIXES:
            raise BatchError(f"{dst}: unsupported output type {dst.suffix or '(none)'}; "
                             f"expected one of {', '.join(WRITE_SUFFIXES)} (see --format)")
        jobs.append(Job(src, dst))
    return jobs


_NOT_IN_NAMES = ("/", "\\", "\0")  # characters a suffix cannot add to a file name


def plan(items: list[str], output: str | None, *, scale=None, size=None, fmt: str | None = None,
         suffix: str | None = None, overwrite: bool = False, dask: bool = False,
         channel_axis: int | None = None, check_memory: bool = True, recipe: dict | None = None) -> list[Job]:
    """Pair each input with its output and decide, before any work, whether it may be written.

    With no ``output``, results go beside their inputs as ``<stem><suffix><ext>``, and files
    that a folder or glob turns up which already carry that suffix (earlier results) are
    not taken as inputs again. ``dask`` plans zarr stores (``<stem>.zarr``). Each job's
    ``action`` is ``"write"`` or ``"skip"`` (our own output exists; see :mod:`napari_liif.outputs`),
    and its ``channel_axis`` is decided from the file's header (:func:`file_channel_axis`).
    Each job's ``recipe`` is the scale or size and channel axis given, plus ``recipe`` (the
    model and rendering options, :func:`napari_liif.provenance.model_recipe`; also passed to
    :func:`run_batch`, which decides again).
    Raises :class:`BatchError` naming the offending path, also for an output larger than the
    memory available (``check_memory``).
    """
    if fmt and f".{fmt.lower().lstrip('.')}" not in WRITE_SUFFIXES:
        raise BatchError(f"unsupported output format {fmt!r}; "
                         f"expected one of {', '.join(s[1:] for s in WRITE_SUFFIXES)}")
    if suffix is not None and (not isinstance(suffix, str) or any(c in suffix for c in _NOT_IN_NAMES)):
        raise BatchError(f"output suffix {suffix!r} must be part of a file name (no '/', '\\' or NUL): it is added "
                         "to each input's name, as in photo_big.png for --suffix _big; use -o to write elsewhere")
    inputs = find_inputs(items, stores=dask)
    tag = scale_tag(scale, size) if suffix is None else suffix
    if output is None:
        named = {Path(i) for i in items}
        inputs = [p for p in inputs if p in named or not (tag and _stem(p).removesuffix(".ome").endswith(tag))]
        if not inputs:
            raise BatchError(f"no inputs left: every image in {', '.join(map(str, items))} is already a "
                             f"result ({tag})")
    jobs = _destinations(inputs, items, output, tag, fmt, dask)
    if len({j.dst.resolve() for j in jobs}) < len(jobs):
        raise BatchError("several inputs map to the same output name; use distinct names or separate runs")
    guard = Inputs(j.src for j in jobs)
    check = check_store if dask else check_file
    base = base_recipe(scale=scale, size=size, channel_axis=channel_axis)
    for j in jobs:
        j.recipe = {**base, **(recipe or {})}
        try:
            j.action = check(j.dst, guard, overwrite=overwrite, made=j.made)
        except OutputError as exc:
            raise BatchError(str(exc)) from None
    for folder in dict.fromkeys(j.dst.parent for j in jobs if j.action == "write"):
        check_folder_writable(folder)
    for j in jobs:
        _preflight(j, scale, size, channel_axis, dask, check_memory)
    return jobs


def file_channel_axis(shape, dtype, given: int | None = None, axes=None) -> int | None:
    """The channel axis the command line uses for a file of this shape: ``given``, else the axis
    the file declares as channels (``axes``: ImageJ/OME ``"ZCYX"`` or OME-Zarr axis names), else
    the last axis when it looks like channels (gray + alpha PNG, or 2..32 channels that are not
    colour: :func:`napari_liif.codec.looks_like_channels`), else None."""
    from .codec import channel_axis_from_labels, looks_like_channels

    if given is not None:
        return given
    shape = tuple(shape)
    declared = channel_axis_from_labels(axes) if axes is not None and len(axes) == len(shape) else None
    if declared is not None:
        return declared
    gray_alpha = len(shape) == 3 and shape[-1] == 2 and np.dtype(dtype) in (np.uint8, np.uint16)
    return -1 if gray_alpha or looks_like_channels(shape) else None


def _preflight(job: Job, scale, size, channel_axis, dask: bool, check_memory: bool) -> None:
    """Layout, output size and memory of one job, from its header; unreadable headers are left
    for the run to report (as that file's failure)."""
    from .api import check_allocatable, output_shape

    info = _header(job.src, dask)
    job.channel_axis = channel_axis
    if info is None or 0 in info[0]:  # corrupt or empty: that file's failure when it is read
        return
    shape, dtype = info
    job.channel_axis = file_channel_axis(shape, dtype, channel_axis, _axes(job.src, dask))
    if job.action != "write":
        return
    try:
        out_shape, out_hw = output_shape(shape, scale=scale, size=size, channel_axis=job.channel_axis)
        if check_memory and not dask:
            # the input read whole, plus the renderer's working memory (as ``upscale`` counts it)
            need = math.prod(int(n) for n in shape) * np.dtype(dtype).itemsize + (12 + 24) * out_hw[0] * out_hw[1]
            check_allocatable(out_shape, dtype, extra_bytes=need)
    except (ValueError, MemoryError) as exc:
        raise BatchError(f"{job.src}: {exc}") from None
    if not dask:
        try:
            check_writable(job.dst, out_shape, dtype)  # e.g. float data to PNG: that file fails, unread
        except ImageIOError as exc:
            job.problem = str(exc)


def _axes(src: Path, dask: bool):
    """The axis names a file or store declares (None where it declares none)."""
    if dask and is_zarr(src):
        from .zarr_io import read_ome_metadata

        try:
            meta = read_ome_metadata(src)
        except ValueError:
            return None
        return meta["axes"] if meta else None
    return image_axes(src)


def _header(src: Path, dask: bool):
    if dask and is_zarr(src):
        from .zarr_io import read_zarr

        try:
            a = read_zarr(src)
        except ValueError:
            return None
        return tuple(a.shape), np.dtype(a.dtype)
    return image_info(src)


def run_batch(jobs: list[Job], upscale_one: Callable, *, overwrite: bool = False,
              on_file: Callable[[int, int, Path], None] | None = None,
              should_stop: Callable[[], bool] | None = None, recipe: dict | None = None) -> BatchReport:
    """Upscale each job's file with ``upscale_one(array) -> array``; never stop on one failure.

    Each result is written under a hidden partial name owned by this process and renamed when
    complete, so an interrupted run never leaves a half-written file under the real name (the
    partial files of runs that ended are removed first); our own outputs made from the same
    input and parameters (the job's recipe, updated with ``recipe``) are skipped unless
    ``overwrite``; a destination that became unsafe since it was planned (a file appeared
    there) is reported as that file's failure; one that another run wrote meanwhile is kept
    (``same`` if identical, else a failure). A failure is recorded as ``(src, reason)``, the
    reason being one line without the path.
    ``upscale_one`` may take a second argument, the :class:`Job`.
    """
    import inspect

    report, t0 = BatchReport(), time.perf_counter()
    guard = Inputs(j.src for j in jobs)
    with_job = len(inspect.signature(upscale_one).parameters) >= 2
    folders: dict[Path, list[str]] = {}
    for job in jobs:
        job.recipe = {**job.recipe, **(recipe or {})}
        folders.setdefault(job.dst.parent, []).append(job.dst.name)
    for folder, names in folders.items():
        with contextlib.suppress(OSError):
            remove_stale_in(folder, names)
    for k, job in enumerate(jobs):
        if should_stop is not None and should_stop():
            break
        claim = Claim().look(job.dst)
        try:
            action = check_file(job.dst, guard, overwrite=overwrite, made=job.made)
        except OutputError as exc:
            report.failed.append((job.src, _one_line(exc, job)))
            action = None
        if action == "skip":
            report.skipped.append(job.src)
        elif action == "write" and job.problem:
            report.failed.append((job.src, _one_line(ImageIOError(job.problem), job)))
        elif action == "write":
            try:
                claim.made = job.made()  # the input's bytes hashed before they are read
                a = read_image(job.src)
                result = upscale_one(a, job) if with_job else upscale_one(a)
                write_image(job.dst, result, overwrite=True, record=claim,
                            calibration=output_calibration(job, a.shape, result.shape))
                (report.same if claim.outcome == "identical" else report.done).append(job.src)
            except (ImageIOError, ValueError, TypeError, MemoryError, RuntimeError, OSError) as exc:
                report.failed.append((job.src, _one_line(exc, job)))
        if on_file is not None:
            on_file(k + 1, len(jobs), job.src)
    report.seconds = time.perf_counter() - t0
    return report


def output_calibration(job: Job, in_shape, out_shape):
    """The calibration an output keeps: its input's (pixel size, origin, units, z spacing), or
    the input's pixel grid where it has none, each axis rescaled so the output overlays the
    input (:meth:`napari_liif.calibration.Calibration.upscaled`). None when the shapes do not
    correspond axis by axis."""
    from .calibration import Calibration
    from .readers import read_calibration

    if len(in_shape) != len(out_shape):
        return None
    base = read_calibration(job.src)
    if base is None or base.ndim != len(in_shape):
        base = Calibration.identity(len(in_shape))
    if job.channel_axis is not None and base.axes[job.channel_axis] is None:
        axes = list(base.axes)
        axes[job.channel_axis] = "c"
        base = base.with_axes(axes)
    return base.upscaled(in_shape, out_shape)


def _one_line(exc: BaseException, job: Job) -> str:
    text = (str(exc).strip().splitlines() or [""])[0] or type(exc).__name__
    for p in (job.src, job.dst):
        if text.startswith(f"{p}: "):
            text = text[len(f"{p}: "):]
    if isinstance(exc, MemoryError) and "memory" not in text.lower():
        text = f"out of memory ({text})"
    return text
