#!/usr/bin/env python
"""LM-LIIF render speed, the decoder before and after issue 18, quiet and beside a busy core.

One view of ``--shape`` samples at ``--zoom`` over a 512 x 512 photo, rendered a second time
on the same field (latents and per-cell products cached: the render alone), with the bundled
``fast`` model. For fp32 and the precision ``auto`` picks, prints samples/s of:

* ``before``: the decoder as it was (``benchmarks/lmliif_before.py``: all folded values
  gathered per sample, 64-sample blocks), on one thread that splits each operation over the
  intra-op threads (the old behaviour);
* ``after, 1 team``: today's decoder run the old way (one thread, ``N`` intra-op threads);
* ``after``: today's decoder and thread policy (``N`` block workers of one intra-op thread);

with 1 and 2 threads, on a quiet machine and beside one spinning Python process (started
and stopped here), each with its ratio to ``before`` in the same conditions and its slowdown
beside the busy process. The machine's load is printed with the table: on a shared machine
absolute numbers mean little, the ratios of one run are what to read. fp32 outputs of the two
decoders are compared (they are equal bit for bit).

Run ``python benchmarks/bench_render.py`` (a few minutes on 2 cores), ``--quick`` for one
repeat of each.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from lmliif_before import decode_block_before  # noqa: E402

SPIN = "while True: pass"


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "load average %.2f %.2f %.2f" % os.getloadavg()


def photo(n: int) -> np.ndarray:
    try:
        from skimage import data

        img = data.astronaut().astype(np.float32) / 255
    except ImportError:
        yy, xx = np.mgrid[0:512, 0:512] / 512
        img = (0.5 + 0.45 * np.stack([np.sin(9 * xx + 4 * yy), np.cos(7 * yy * xx), np.sin(25 * xx * yy)], -1))
    reps = -(-n // img.shape[0])
    return np.ascontiguousarray(np.tile(img, (reps, reps, 1))[:n, :n]).astype(np.float32)


class Paths:
    """The three ways to render. ``before`` runs on a model and field of its own, whose family
    stores cell products channels last and decodes with the old block decoder, as it was."""

    def __init__(self, model, before_model, image, region, shape):
        self.region, self.shape = region, shape
        self.field = model.encode(image)
        fam = before_model.family
        fam.cells_channels_first = False  # the old layout (an instance attribute: this model only)
        fam.decode_block = lambda p, b, s: decode_block_before(fam, p, b, s)
        self.before_field = before_model.encode(image)
        self.before_field.block = 64
        self.after_block = self.field.block

    def render(self, path: str, threads: int) -> np.ndarray:
        torch.set_num_threads(threads)
        field = self.before_field if path == "before" else self.field
        field.workers = threads if path == "after" else 1
        return field.render(self.region, self.shape)

    def best(self, path: str, threads: int, repeats: int) -> float:
        self.render(path, threads)  # caches, pools, oneDNN/MKL setup
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            self.render(path, threads)
            times.append(time.perf_counter() - t)
        return min(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", default="768,1024", help="samples H,W (default 768,1024)")
    p.add_argument("--zoom", type=float, default=4.0, help="samples per image pixel (default 4)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="one repeat")
    p.add_argument("--quiet-only", action="store_true", help="leave out the runs beside a busy process")
    p.add_argument("--no-team", action="store_true",
                   help="leave out 'after, 1 team' (on a loaded machine an OpenMP team of 2 takes minutes)")
    args = p.parse_args()
    repeats = 1 if args.quick else args.repeats
    shape = tuple(int(v) for v in args.shape.split(","))
    region = (64.0, 64.0, 64 + shape[0] / args.zoom, 64 + shape[1] / args.zoom)

    from napari_liif.device import precision_name
    from napari_liif.engine import load_model

    image = photo(512)
    auto = load_model("fast", device="cpu", precision="auto")
    precisions = {"fp32": torch.float32}
    if auto.dtype != torch.float32:
        precisions[f"auto ({precision_name(auto.dtype)})"] = auto.dtype
    paths = {name: Paths(*(load_model("fast", device="cpu", precision=precision_name(dt)) for _ in range(2)),
                         image, region, shape) for name, dt in precisions.items()}
    diff = float(np.abs(paths["fp32"].render("before", 1) - paths["fp32"].render("after", 1)).max())
    n = shape[0] * shape[1]
    print(f"LM-LIIF render, bundled 'fast' model, {shape[0]}x{shape[1]} samples at zoom {args.zoom:g}, "
          f"best of {repeats}; torch {torch.__version__}, {os.cpu_count()} CPUs")
    print(f"before: {uptime()}", flush=True)
    print(f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}", flush=True)
    rows = {}
    for busy in (False,) if args.quiet_only else (False, True):
        spinner = subprocess.Popen([sys.executable, "-c", SPIN]) if busy else None
        try:
            for prec, pa in paths.items():
                for threads in (1, 2):
                    for path in ("before", "after, 1 team", "after"):
                        if path == "after, 1 team" and (threads == 1 or args.no_team):
                            continue  # one thread: the same as "after"
                        t = rows[(busy, prec, threads, path)] = pa.best(path, threads, repeats)
                        print(f"  {'busy' if busy else 'quiet'} {prec} {threads} thread(s) {path}: {t:.3f} s",
                              flush=True)
        finally:
            if spinner is not None:
                spinner.kill()
                spinner.wait()
    print(f"after:  {uptime()}")
    head = f"{'precision':<12} {'threads':>7} {'path':<14} {'quiet M/s':>9} {'x before':>8} {'busy M/s':>9} {'x before':>8} {'busy/quiet':>10}"
    print(head)
    print("-" * len(head))
    for (busy, prec, threads, path), t in rows.items():
        if busy:
            continue
        q0 = rows[(False, prec, threads, "before")]
        line = f"{prec:<12} {threads:>7} {path:<14} {n / t / 1e6:>9.2f} {q0 / t:>8.2f}"
        if (True, prec, threads, path) in rows:
            tb, b0 = rows[(True, prec, threads, path)], rows[(True, prec, threads, "before")]
            line += f" {n / tb / 1e6:>9.2f} {b0 / tb:>8.2f} {tb / t:>10.2f}"
        print(line)
    print(f"fp32 output, after vs before: {'bit for bit equal' if diff == 0 else f'max abs difference {diff:.2e}'}")
    print("busy: one other process spinning on one core (this benchmark's own child). 'x before': speed over "
          "the old decoder in the same precision, threads and load.")


if __name__ == "__main__":
    main()
