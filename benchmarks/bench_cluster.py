"""``napari-liif upscale --dask`` on a real dask cluster vs the local scheduler.

One TIFF is upscaled x2 by the command line, as a user runs it, three ways in one run:

* the local threaded scheduler (no ``DASK_SCHEDULER_ADDRESS``);
* a ``dask scheduler`` with one ``dask worker`` process (1 thread), started as separate processes
  on loopback, then ``DASK_SCHEDULER_ADDRESS=tcp://127.0.0.1:P napari-liif upscale ...``;
* the same with two worker processes (``--nworkers 2 --nthreads 1``).

Each cluster is used twice: the first run pays each worker's start-up (importing torch and
building the model once, on its first chunk), the second finds them warm. Every output store is
checked equal to the local one, bit for bit. Also timed: a fresh Python process importing torch and
loading the model (what each worker pays once), and the worker processes' own start (until the
scheduler knows them). The machine is usually shared: compare the ratios within one run.

Usage: python benchmarks/bench_cluster.py [--size 256] [--chunk 64] [--model full|tiny]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_batch import SPECS, make_model, table  # noqa: E402

BIN = Path(sys.executable).parent


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return f"load average {os.getloadavg()}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed(cmd: list[str], **kw) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)
    return time.perf_counter() - t


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 15)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()


@contextlib.contextmanager
def cluster(n_workers: int, home: Path, env: dict):
    """A scheduler and ``n_workers`` single-threaded worker processes; yields (address, seconds
    from launching the workers until the scheduler knows all of them)."""
    import distributed

    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    log = open(home / f"cluster{n_workers}.log", "w")  # noqa: SIM115
    procs = [subprocess.Popen([str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                               "--no-dashboard"], cwd=home, env=env, stdout=log, stderr=log, start_new_session=True)]
    try:
        with distributed.Client(address, timeout=120) as client:
            t = time.perf_counter()
            procs.append(subprocess.Popen([str(BIN / "dask"), "worker", address, "--nworkers", str(n_workers),
                                           "--nthreads", "1", "--no-dashboard", "--local-directory", str(home)],
                                          cwd=home, env=env, stdout=log, stderr=log, start_new_session=True))
            client.wait_for_workers(n_workers, timeout=300)
            started = time.perf_counter() - t
        yield address, started
    finally:
        for p in reversed(procs):
            stop(p)
        log.close()


def main(argv=None) -> int:
    import tifffile
    import torch

    from napari_liif.checkpoint import save_safetensors
    from napari_liif.zarr_io import read_zarr

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--chunk", type=int, default=64, help="--chunk of the command (input pixels)")
    p.add_argument("--model", choices=sorted(SPECS), default="full")
    args = p.parse_args(argv)
    print(f"start: {uptime()}")
    print(f"{os.cpu_count()} cores, torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        home = tmp / "workers"  # the workers run in a folder of their own
        home.mkdir()
        m = make_model(args.model)
        save_safetensors(tmp / "model.safetensors", m.net, m.spec)
        img = (np.random.default_rng(1).random((args.size, args.size)) * 60000).astype(np.uint16)
        tifffile.imwrite(tmp / "in.tif", img, tile=(64, 64))
        src = Path(__file__).resolve().parents[1] / "src"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")])}
        load = ("import time; t = time.perf_counter(); import torch; from napari_liif.api import get_model; "
                "get_model('model.safetensors', 'cpu'); print(time.perf_counter() - t)")
        fresh = float(subprocess.run([sys.executable, "-c", load], cwd=tmp, env=env, check=True,
                                     capture_output=True, text=True).stdout)

        def cli(out: str, address: str | None) -> float:
            e = dict(env)
            e.pop("DASK_SCHEDULER_ADDRESS", None)
            if address:
                e["DASK_SCHEDULER_ADDRESS"] = address
            return timed([str(BIN / "napari-liif"), "upscale", "in.tif", "--scale", "2", "--dask", "--chunk",
                          str(args.chunk), "--checkpoint", "model.safetensors", "--device", "cpu", "--quiet",
                          "--overwrite", "-o", out], cwd=tmp, env=e)

        runs = {"local": [cli("local.zarr", None), cli("local.zarr", None)]}
        starts = {}
        for n in (1, 2):
            with cluster(n, home, env) as (address, started):
                starts[n] = started
                runs[n] = [cli(f"c{n}_cold.zarr", address), cli(f"c{n}_warm.zarr", address)]
        local = read_zarr(tmp / "local.zarr").compute()
        same = {n: all(np.array_equal(read_zarr(tmp / f"c{n}_{k}.zarr").compute(), local) for k in ("cold", "warm"))
                for n in (1, 2)}
    base = runs["local"][1]
    out_px = (2 * args.size) ** 2
    n_chunks = (-(-args.size // args.chunk)) ** 2
    rows = [["local threaded scheduler", "-", f"{runs['local'][0]:.1f}", f"{base:.1f}", "-", "1.00", "yes"]]
    for n in (1, 2):
        cold, warm = runs[n]
        rows.append([f"cluster, {n} worker process{'es' * (n > 1)} x 1 thread", f"{starts[n]:.1f}", f"{cold:.1f}",
                     f"{warm:.1f}", f"{cold - warm:.1f}", f"{base / warm:.2f}", "yes" if same[n] else "NO"])
    print(table(f"napari-liif upscale --dask: {args.size}x{args.size} uint16 TIFF -> x2 ({out_px / 1e6:.2f} Mpx, "
                f"{n_chunks} input chunks of {args.chunk} px), model {args.model}; seconds of the whole command",
                ["scheduler", "worker processes start s", "run 1 s", "run 2 s",
                 "run 1 - run 2 s (workers: torch + model)", "speed vs local (run 2)", "equal to local"], rows))
    print(f"\na fresh process importing torch and loading the model: {fresh:.1f} s "
          "(the command pays it in every run; each worker once)")
    print(f"end: {uptime()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
