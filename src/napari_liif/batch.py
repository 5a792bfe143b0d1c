"""Upscaling files and folders: input discovery, output naming, resumability, failure report.

Shared by the command line and the batch widget. Rules:

* inputs are files, folders (their images, not recursive) or glob patterns;
* with several inputs or a folder, ``output`` is a folder and names are kept;
* with no ``output``, results go beside the input as ``<stem>_liif_x<S><suffix>``;
* an output that exists is skipped (resumable) unless ``overwrite``; an output that would
  be an input is refused, always;
* a file that fails is reported with its reason and the batch goes on.
"""

from __future__ import annotations

import glob
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .io import READ_SUFFIXES, WRITE_SUFFIXES, ImageIOError, read_image, write_image


class BatchError(ValueError):
    """Inputs or outputs that cannot form a batch."""


@dataclass
class Job:
    src: Path
    dst: Path


@dataclass
class BatchReport:
    done: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        lines = [f"{len(self.done)} upscaled, {len(self.skipped)} skipped (output exists), "
                 f"{len(self.failed)} failed in {self.seconds:.1f} s"]
        lines += [f"  failed: {p}: {why}" for p, why in self.failed]
        return "\n".join(lines)


def find_inputs(items: list[str]) -> list[Path]:
    """Expand files, folders and globs into a list of image files (folders and globs sorted).

    Folder listings and globs skip hidden files (names starting with '.', e.g. the partial
    files of an interrupted run) and files of other types; a named file is always kept.
    """
    found: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found += sorted(q for q in p.iterdir() if _listed(q))
        elif p.exists():
            found.append(p)
        elif any(ch in str(item) for ch in "*?["):
            found += sorted(q for q in map(Path, glob.glob(str(item))) if _listed(q))
        else:
            raise BatchError(f"{item}: no such file or folder")
    if not found:
        raise BatchError(f"no image files ({', '.join(READ_SUFFIXES)}) found in {', '.join(map(str, items))}")
    return list(dict.fromkeys(found))


def _listed(q: Path) -> bool:
    return q.is_file() and not q.name.startswith(".") and q.suffix.lower() in READ_SUFFIXES


def scale_tag(scale=None, size=None) -> str:
    """The default output-name suffix: ``_liif_x2``, ``_liif_x2x3`` or ``_liif_64x80``."""
    if size is not None:
        return f"_liif_{size[0]}x{size[1]}"
    s = scale if isinstance(scale, (tuple, list)) else (scale,)
    return "_liif_x" + "x".join(f"{v:g}" for v in s)


def plan(items: list[str], output: str | None, *, scale=None, size=None, fmt: str | None = None,
         suffix: str | None = None) -> list[Job]:
    """Pair each input with its output path; refuse any output that is an input.

    With no ``output``, results go beside their inputs as ``<stem><suffix><ext>``, and files
    that a folder or glob turns up which already carry that suffix (earlier results) are
    not taken as inputs again. Raises :class:`BatchError` naming the offending path.
    """
    inputs = find_inputs(items)
    many = len(inputs) > 1 or any(Path(i).is_dir() for i in items)
    out = Path(output) if output else None
    tag = scale_tag(scale, size) if suffix is None else suffix
    if fmt and f".{fmt.lower().lstrip('.')}" not in WRITE_SUFFIXES:
        raise BatchError(f"unsupported output format {fmt!r}; "
                         f"expected one of {', '.join(s[1:] for s in WRITE_SUFFIXES)}")
    if out is None:
        named = {Path(i) for i in items}
        inputs = [p for p in inputs if p in named or not (tag and p.stem.endswith(tag))]
        if not inputs:
            raise BatchError(f"no inputs left: every image in {', '.join(map(str, items))} is already a "
                             f"result ({tag})")
    elif many and out.suffix.lower() in WRITE_SUFFIXES and not out.is_dir():
        raise BatchError(f"{out}: with several inputs -o must be a folder, not an image file name")
    jobs = []
    for src in inputs:
        ext = f".{fmt.lower().lstrip('.')}" if fmt else src.suffix
        if out is None:
            dst = src.with_name(f"{src.stem}{tag}{ext}")
        elif many or out.is_dir() or not out.suffix:
            dst = out / f"{src.stem}{ext}"
        else:
            dst = out
        if dst.suffix.lower() not in WRITE_SUFFIXES:
            raise BatchError(f"{dst}: unsupported output type {dst.suffix or '(none)'}; "
                             f"expected one of {', '.join(WRITE_SUFFIXES)} (see --format)")
        jobs.append(Job(src, dst))
    srcs = {j.src.resolve() for j in jobs}
    for j in jobs:
        if j.dst.resolve() in srcs or any(_same_file(j.dst, s) for s in srcs):
            raise BatchError(f"{j.dst}: output would overwrite an input; choose another -o folder or --suffix")
    if len({j.dst.resolve() for j in jobs}) < len(jobs):
        raise BatchError("several inputs map to the same output name; use distinct names or separate runs")
    return jobs


def _same_file(a: Path, b: Path) -> bool:
    """True for hard links (or any other route) to the same existing file."""
    try:
        return a.exists() and a.samefile(b)
    except OSError:
        return False


def run_batch(jobs: list[Job], upscale_one: Callable, *, overwrite: bool = False,
              on_file: Callable[[int, int, Path], None] | None = None,
              should_stop: Callable[[], bool] | None = None) -> BatchReport:
    """Upscale each job's file with ``upscale_one(array) -> array``; never stop on one failure.

    Each result is written under a hidden partial name and renamed when complete, so an
    interrupted run never leaves a half-written file under the real name; outputs that
    exist are skipped unless ``overwrite``. A failure is recorded as ``(src, reason)``,
    the reason being one line without the path.
    """
    report, t0 = BatchReport(), time.perf_counter()
    for k, job in enumerate(jobs):
        if should_stop is not None and should_stop():
            break
        if job.dst.exists() and not overwrite:
            report.skipped.append(job.src)
        else:
            tmp = job.dst.with_name(f".{job.dst.stem}.partial{job.dst.suffix}")
            try:
                result = upscale_one(read_image(job.src))
                write_image(tmp, result)
                tmp.replace(job.dst)
                report.done.append(job.src)
            except (ImageIOError, ValueError, TypeError, MemoryError, RuntimeError, OSError) as exc:
                report.failed.append((job.src, _one_line(exc, job)))
                tmp.unlink(missing_ok=True)
        if on_file is not None:
            on_file(k + 1, len(jobs), job.src)
    report.seconds = time.perf_counter() - t0
    return report


def _one_line(exc: BaseException, job: Job) -> str:
    text = (str(exc).strip().splitlines() or [""])[0] or type(exc).__name__
    for p in (job.src, job.dst.with_name(f".{job.dst.stem}.partial{job.dst.suffix}")):
        if text.startswith(f"{p}: "):
            text = text[len(f"{p}: "):]
    if isinstance(exc, MemoryError) and "memory" not in text.lower():
        text = f"out of memory ({text})"
    return text


def cmd_upscale(args) -> int:
    """``napari-liif upscale``: 0 if every file succeeded (or was skipped), 1 if any failed.

    Bad arguments (missing inputs, an output that would overwrite an input, an unusable
    checkpoint or device) raise before any file is touched; ``cli.main`` turns them into
    one line and exit status 2.
    """
    if args.dask:
        from .dask_upscale import cmd_upscale_dask

        return cmd_upscale_dask(args)
    import sys

    from tqdm import tqdm

    from .api import get_model, upscale

    jobs = plan(args.inputs, args.output, scale=args.scale, size=args.size, fmt=args.fmt, suffix=args.suffix)
    model = get_model(args.checkpoint, args.device, args.precision)
    quiet = True if args.quiet else None  # None: a bar only on a terminal
    files = tqdm(total=len(jobs), unit="file", disable=True if len(jobs) < 2 else quiet)

    def one(a):
        ax = args.channel_axis
        if ax is None and a.ndim == 3 and a.shape[-1] == 2 and a.dtype in (np.uint8, np.uint16):
            ax = -1  # gray + alpha from PNG: two channels, each upscaled as gray
        # a pixel bar for the file, shown only if it takes more than two seconds
        with tqdm(total=1, unit="px", unit_scale=True, delay=2.0, leave=False, disable=quiet) as pixels:
            def tick(done, total):
                pixels.total = total
                pixels.update(done - pixels.n)

            return upscale(a, scale=args.scale, size=args.size, model=model, cell=args.cell,
                           channel_axis=ax, progress=tick)

    report = run_batch(jobs, one, overwrite=args.overwrite, on_file=lambda k, n, p: files.update(1))
    files.close()
    for src, why in report.failed:
        print(f"napari-liif: error: {src}: {why}", file=sys.stderr)
    if len(jobs) == 1:
        if report.done:
            print(f"wrote {jobs[0].dst}")
        elif report.skipped:
            print(f"skipped: {jobs[0].dst} exists (use --overwrite)")
    else:
        print(report.summary().splitlines()[0])
    return 1 if report.failed else 0
