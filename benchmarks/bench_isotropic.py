"""Upscaling z through the CLI: time and peak memory of ``--scale 3,1,1`` on a uint16 stack, beside
the same stack's ``--scale 2`` (y and x only) in the same run, and ``--dask``.

Each command runs in a fresh process; peak memory is that process's maximum resident set.
Run: ``python benchmarks/bench_isotropic.py [--shape 64,512,512] [--model default]``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def run(cmd: list[str]) -> tuple[float, float]:
    """(seconds, peak RSS in GiB) of one command in a child process (its own rusage, by wait4)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    secs = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr.read().decode().strip()}")
    return secs, usage.ru_maxrss / 2**20  # KiB on Linux


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="64,512,512")
    ap.add_argument("--model", default="default")
    ap.add_argument("--skip-dask", action="store_true")
    args = ap.parse_args()
    from napari_liif.calibration import Calibration
    from napari_liif.io import write_image

    shape = tuple(int(v) for v in args.shape.split(","))
    rng = np.random.default_rng(0)
    a = (rng.normal(1000, 60, shape) + np.linspace(0, 2000, shape[-1])).clip(0, 65535).astype(np.uint16)
    exe = str(Path(sys.executable).with_name("napari-liif"))
    load = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "stack.tif"
        write_image(src, a, calibration=Calibration((0.5, 0.1625, 0.1625), (0.0,) * 3, ("micrometer",) * 3,
                                                    ("z", "y", "x")))
        common = ["--checkpoint", args.model, "--quiet"]
        cases = [("y,x x2 (baseline)", ["--scale", "2", "-o", f"{tmp}/xy.tif"]),
                 ("z x3", ["--scale", "3,1,1", "-o", f"{tmp}/z.tif"])]
        if not args.skip_dask:
            cases.append(("z x3 --dask", ["--scale", "3,1,1", "--dask", "--chunk", "256", "-o", f"{tmp}/z.zarr"]))
        for name, extra in cases:
            secs, gib = run([exe, "upscale", str(src), *extra, *common])
            rows.append((name, secs, gib))
    base = rows[0][1]
    print(f"# stack {shape} uint16 ({a.nbytes / 2**20:.0f} MiB), model {args.model}, torch threads default; "
          f"load average before: {load[0]:.2f}; {os.cpu_count()} CPUs")
    print("| run | seconds | / baseline | peak RSS GiB |")
    print("|---|---|---|---|")
    for name, secs, gib in rows:
        print(f"| {name} | {secs:.1f} | {secs / base:.2f} | {gib:.2f} |")
    print(f"# uptime after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
