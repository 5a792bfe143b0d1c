"""Batch and dask benchmarks for napari-liif.

Prints three tables:

1. **Batch throughput**: the same N images upscaled by one ``napari-liif upscale`` process per
   image (the single-image path), by one process for the whole folder (the batch path), by
   :func:`napari_liif.batch.run_batch` in-process, and by a bare :func:`napari_liif.upscale`
   loop (compute only, no files);
2. **Dask**: one image upscaled by ``upscale_dask`` with the local threaded scheduler and on
   ``dask.distributed`` LocalClusters of one and of two single-threaded worker processes
   (cluster start-up timed separately); every result is checked equal to the local one;
3. **Peak memory** of a chunked ``upscale_dask`` of a 4096 x 4096 uint8 image at x2 written to
   zarr (an 8192 x 8192 output), for two chunk sizes, each in a fresh process, against the
   memory the in-memory path would need.

Models have random weights: speed does not depend on the weights. ``--model full`` is the
official EDSR-baseline-LIIF architecture (16 residual blocks, 64 features, 4 x 256 MLP);
``tiny`` is the test model (2 blocks, 16 features, 2 x 32 MLP). The memory run always uses
``tiny`` (the full model would take hours on a laptop-class CPU; memory is set by the
chunking, not the weights).

Usage: python benchmarks/bench_batch.py [--quick] [--model full|tiny]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SPECS = {
    "tiny": {"n_resblocks": 2, "n_feats": 16, "hidden": [32, 32]},
    "full": {"n_resblocks": 16, "n_feats": 64, "hidden": [256, 256, 256, 256]},
}


def make_model(kind: str, seed: int = 0):
    import torch

    from napari_liif import models
    from napari_liif.engine import LiifModel

    s = SPECS[kind]
    spec = {"name": "liif", "args": {
        "encoder_spec": {"name": "edsr-baseline",
                         "args": {"no_upsampling": True, "n_resblocks": s["n_resblocks"], "n_feats": s["n_feats"]}},
        "imnet_spec": {"name": "mlp", "args": {"out_dim": 3, "hidden_list": s["hidden"]}}}}
    torch.manual_seed(seed)
    return LiifModel(models.make(spec).eval(), spec, device="cpu", name=f"random-{kind}")


def table(title: str, header: list[str], rows: list[list]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda r: "| " + " | ".join(str(x).ljust(w) for x, w in zip(r, widths)) + " |"  # noqa: E731
    out = [f"\n{title}\n", line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    return "\n".join(out + [line(r) for r in rows])


# -- 1. batch throughput -------------------------------------------------------------------
def bench_batch(kind: str, n: int, size: int, tmp: Path, repeat: int = 2) -> str:
    import imageio.v3 as iio

    from napari_liif.api import upscale
    from napari_liif.batch import plan, run_batch
    from napari_liif.checkpoint import save_safetensors

    model = make_model(kind)
    ckpt = save_safetensors(tmp / "model.safetensors", model.net, model.spec)
    rng = np.random.default_rng(0)
    src = tmp / "in"
    src.mkdir()
    images = []
    for k in range(n):
        a = (rng.random((size, size, 3)) * 255).astype(np.uint8)
        iio.imwrite(src / f"img{k:02d}.png", a)
        images.append(a)
    mpx = n * (2 * size) ** 2 / 1e6
    cli = [sys.executable, "-m", "napari_liif.cli", "upscale"]
    common = ["--scale", "2", "--checkpoint", str(ckpt), "--device", "cpu", "--quiet"]
    rows = []
    upscale(images[0], scale=2, model=model)  # warm-up: first-call costs are not throughput

    def row(name, seconds):
        rows.append([name, f"{seconds:.2f}", f"{n / seconds:.2f}", f"{mpx / seconds:.3f}"])

    t = time.perf_counter()
    for k in range(n):
        subprocess.run(cli + [str(src / f"img{k:02d}.png"), "-o", str(tmp / "single" / f"img{k:02d}.png")] + common,
                       check=True, capture_output=True)
    row("CLI, one process per image (single-image path)", time.perf_counter() - t)

    t = time.perf_counter()
    subprocess.run(cli + [str(src), "-o", str(tmp / "folder")] + common, check=True, capture_output=True)
    row("CLI, one process for the folder (batch path)", time.perf_counter() - t)

    best = []
    for rep in range(repeat):  # best of `repeat`: the in-process runs are short and the machine is shared
        jobs = plan([str(src)], str(tmp / f"inproc{rep}"), scale=2)
        t = time.perf_counter()
        report = run_batch(jobs, lambda a: upscale(a, scale=2, model=model))
        best.append(time.perf_counter() - t)
        assert len(report.done) == n, report.summary()
    row(f"run_batch in-process (model loaded once), best of {repeat}", min(best))

    best = []
    for rep in range(repeat):
        t = time.perf_counter()
        for a in images:
            upscale(a, scale=2, model=model)
        best.append(time.perf_counter() - t)
    row(f"upscale() loop, compute only (no files), best of {repeat}", min(best))
    return table(f"Batch throughput: {n} RGB images {size}x{size} -> x2, model {kind}",
                 ["path", "seconds", "images/s", "output Mpx/s"], rows)


# -- 2. dask, local and distributed ------------------------------------------------------------
def bench_dask(kind: str, size: int, chunk: int) -> str:
    import dask
    import distributed

    from napari_liif.dask_upscale import ModelRef, upscale_dask

    model = make_model(kind)
    img = (np.random.default_rng(1).random((size, size)) * 60000).astype(np.uint16)
    lazy = upscale_dask(img, scale=2, model=model, chunks=chunk)
    n_chunks = int(np.prod(lazy.numblocks))
    rows = []
    with dask.config.set(scheduler="threads"):
        lazy[:chunk, :chunk].compute()  # warm-up
        t = time.perf_counter()
        ref = lazy.compute()
    local = time.perf_counter() - t
    rows.append(["local threaded scheduler (2 threads)", "-", f"{local:.2f}", "1.00", "yes"])
    for workers in (1, 2):
        t = time.perf_counter()
        with distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                      dashboard_address=None) as cluster, distributed.Client(cluster) as client:
            client.run(_warm, ModelRef(model))  # each worker imports torch and builds the model once
            start = time.perf_counter() - t
            t = time.perf_counter()
            out = lazy.compute()
            seconds = time.perf_counter() - t
        rows.append([f"LocalCluster, {workers} worker process{'es' * (workers > 1)} x 1 thread",
                     f"{start:.1f}", f"{seconds:.2f}", f"{local / seconds:.2f}",
                     "yes" if np.array_equal(out, ref) else "NO"])
    return table(f"Dask: {size}x{size} uint16 -> x2, {n_chunks} chunks of {chunk}x{chunk} output px, model {kind}",
                 ["scheduler", "start-up s (cluster, torch, model)", "compute s", "speed vs local threads",
                  "equal to local"], rows)


def _warm(ref) -> None:
    ref.get()


# -- 3. peak memory ----------------------------------------------------------------------------
_MEMORY_CHILD = r"""
import json, sys, time, numpy as np, dask
sys.path.insert(0, {bench_dir!r})
from bench_batch import make_model
from napari_liif.dask_upscale import upscale_dask
from napari_liif.zarr_io import write_zarr
import dask.array as da
size, chunk, out = {size}, {chunk}, {out!r}
model = make_model("tiny")
src = da.random.default_rng(2).integers(0, 256, (size, size), chunks=1024, dtype=np.uint8)
lazy = upscale_dask(src, scale=2, model=model, chunks=chunk)
def status(key):
    with open("/proc/self/status") as f:
        return next(int(ln.split()[1]) * 1024 for ln in f if ln.startswith(key))
base = status("VmRSS:")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the high-water mark (VmHWM) to the current RSS
t = time.perf_counter()
with dask.config.set(scheduler="threads", num_workers=2):
    write_zarr(lazy, out, axes=["y", "x"])
secs = time.perf_counter() - t
peak = status("VmHWM:")
print(json.dumps({{"base": base, "peak": peak, "seconds": secs, "shape": list(lazy.shape)}}))
"""


def bench_memory(size: int, chunks: list[int], tmp: Path) -> str:
    rows = []
    out_px = (2 * size) ** 2
    for chunk in chunks:
        code = _MEMORY_CHILD.format(bench_dir=str(Path(__file__).parent), size=size, chunk=chunk,
                                    out=str(tmp / f"mem{chunk}.zarr"))
        done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
        r = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append([f"upscale_dask -> zarr, chunks {chunk}", f"{r['base'] / 2**20:.0f}",
                     f"{r['peak'] / 2**20:.0f}", f"{(r['peak'] - r['base']) / 2**20:.0f}", f"{r['seconds']:.1f}"])
    # what napari_liif.upscale would hold at once: the uint8 output, the float32 RGB render of the
    # plane and ~3 float64 planes while mapping back (its own check_allocatable estimate)
    need = out_px * (1 + 12 + 24)
    rows.append(["in-memory upscale() (estimate, not run)", "-", "-", f"{need / 2**20:.0f}", "-"])
    return table(f"Peak memory: {size}x{size} uint8 -> x2 ({2 * size}x{2 * size} = {out_px / 1e6:.0f} Mpx output, "
                 f"{out_px / 2**20:.0f} MiB), model tiny, 2 threads",
                 ["run", "RSS before compute MiB", "peak RSS MiB", "peak - before MiB", "seconds"], rows)


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"load average at start {load:.1f}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes and the tiny model (a minute or so)")
    p.add_argument("--model", choices=sorted(SPECS), default=None, help="model for the batch and dask tables")
    p.add_argument("--skip", nargs="*", default=[], choices=["batch", "dask", "memory"])
    args = p.parse_args(argv)
    kind = args.model or ("tiny" if args.quick else "full")
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if "batch" not in args.skip:
            (tmp / "b").mkdir()
            print(bench_batch(kind, n=4 if args.quick else 6, size=64 if args.quick else 96, tmp=tmp / "b"))
        if "dask" not in args.skip:
            print(bench_dask(kind, size=256, chunk=128))
        if "memory" not in args.skip:
            (tmp / "m").mkdir()
            size = 1024 if args.quick else 4096
            print(bench_memory(size, [256, 512] if not args.quick else [256], tmp / "m"))
    if hasattr(os, "getloadavg"):
        print(f"\nload average at the end: {os.getloadavg()[0]:.1f} (other jobs share these cores)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
