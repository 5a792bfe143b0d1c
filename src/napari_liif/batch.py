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

from .io import READ_SUFFIXES, ImageIOError, read_image, write_image


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
    """Expand files, folders and globs into a sorted list of image files."""
    found: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found += sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in READ_SUFFIXES)
        elif p.exists():
            found.append(p)
        elif any(ch in item for ch in "*?["):
            found += sorted(Path(q) for q in glob.glob(item) if Path(q).suffix.lower() in READ_SUFFIXES)
        else:
            raise BatchError(f"{item}: no such file or folder")
    if not found:
        raise BatchError(f"no image files ({', '.join(READ_SUFFIXES)}) found in {', '.join(items)}")
    return list(dict.fromkeys(found))


def scale_tag(scale=None, size=None) -> str:
    if size is not None:
        return f"_liif_{size[0]}x{size[1]}"
    s = scale if isinstance(scale, (tuple, list)) else (scale,)
    return "_liif_x" + "x".join(f"{v:g}" for v in s)


def plan(items: list[str], output: str | None, *, scale=None, size=None, fmt: str | None = None,
         suffix: str | None = None) -> list[Job]:
    """Pair each input with its output path; refuse any output that is an input."""
    inputs = find_inputs(items)
    many = len(inputs) > 1 or any(Path(i).is_dir() for i in items)
    out = Path(output) if output else None
    tag = scale_tag(scale, size) if suffix is None else suffix
    jobs = []
    for src in inputs:
        ext = f".{fmt}" if fmt else src.suffix
        if out is None:
            dst = src.with_name(f"{src.stem}{tag}{ext}")
        elif many or out.is_dir() or not out.suffix:
            dst = out / f"{src.stem}{ext}"
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


def run_batch(jobs: list[Job], upscale_one: Callable, *, overwrite: bool = False,
              on_file: Callable[[int, int, Path], None] | None = None,
              should_stop: Callable[[], bool] | None = None) -> BatchReport:
    """Upscale each job's file with ``upscale_one(array) -> array``; never stop on one failure."""
    report, t0 = BatchReport(), time.perf_counter()
    for k, job in enumerate(jobs):
        if should_stop is not None and should_stop():
            break
        if job.dst.exists() and not overwrite:
            report.skipped.append(job.src)
        else:
            try:
                result = upscale_one(read_image(job.src))
                tmp = job.dst.with_name(f".{job.dst.stem}.partial{job.dst.suffix}")
                write_image(tmp, result)
                tmp.replace(job.dst)  # a crash never leaves a half-written file under the real name
                report.done.append(job.src)
            except (ImageIOError, ValueError, TypeError, MemoryError, RuntimeError) as exc:
                report.failed.append((job.src, str(exc).splitlines()[0] if str(exc) else type(exc).__name__))
        if on_file is not None:
            on_file(k + 1, len(jobs), job.src)
    report.seconds = time.perf_counter() - t0
    return report


def cmd_upscale(args) -> int:
    """``napari-liif upscale``: returns 0 if every file succeeded, 1 otherwise."""
    if args.dask:
        from .dask_upscale import cmd_upscale_dask

        return cmd_upscale_dask(args)
    from tqdm import tqdm

    from .api import get_model, upscale

    jobs = plan(args.inputs, args.output, scale=args.scale, size=args.size, fmt=args.fmt, suffix=args.suffix)
    model = get_model(args.checkpoint, args.device, args.precision)
    bar = tqdm(total=len(jobs), unit="file", disable=args.quiet or len(jobs) < 2)

    def one(a):
        return upscale(a, scale=args.scale, size=args.size, model=model, cell=args.cell,
                       channel_axis=args.channel_axis)

    report = run_batch(jobs, one, overwrite=args.overwrite, on_file=lambda k, n, p: bar.update(1))
    bar.close()
    if len(jobs) == 1:
        if report.failed:
            raise BatchError(f"{report.failed[0][0]}: {report.failed[0][1]}")
        print(f"wrote {jobs[0].dst}" if report.done else f"skipped: {jobs[0].dst} exists (use --overwrite)")
        return 0
    print(report.summary())
    return 1 if report.failed else 0
