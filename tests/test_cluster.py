"""``--dask`` on a real cluster: a ``dask scheduler`` and ``dask worker`` (two single-threaded
worker processes) started as separate processes on loopback, in another folder than the tests',
and the CLI run through them for every input format, bit-identical to the local run and to the
in-memory upscale. Plus the reader objects that make this possible (:mod:`napari_liif.lazy_read`)."""

from __future__ import annotations

import contextlib
import os
import pickle
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from batch_helpers import tiny_checkpoint, tiny_model
from napari_liif.api import upscale
from napari_liif.io import ImageIOError, read_image, write_image
from napari_liif.lazy_read import OPENED, LazyFile
from napari_liif.zarr_io import open_lazy, read_zarr, write_zarr

import dask.array as da  # noqa: E402
import tifffile  # noqa: E402

SRC = Path(__file__).resolve().parents[1] / "src"


def _inputs(folder: Path) -> dict[str, np.ndarray]:
    """One small file per input format, written into ``folder``; returns name -> the pixels."""
    rng = np.random.default_rng(22)
    gray = rng.integers(0, 65535, (48, 40)).astype(np.uint16)
    rgb = rng.integers(0, 256, (48, 40, 3)).astype(np.uint8)
    stack = rng.integers(100, 5000, (3, 48, 40)).astype(np.uint16)
    flt = rng.random((48, 40)).astype(np.float32)
    tifffile.imwrite(folder / "gray.tif", gray)  # strips
    tifffile.imwrite(folder / "cells.ome.tif", flt, ome=True, tile=(16, 16), compression="zlib",
                     metadata={"axes": "YX", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5})
    for page in stack:  # three pages appended one by one: a multi-page TIFF without shape metadata
        tifffile.imwrite(folder / "pages.tif", page, append=True, metadata=None)
    tifffile.imwrite(folder / "hyper.tif", stack, imagej=True, metadata={"axes": "ZYX"})
    write_image(folder / "rgb.png", rgb)
    write_image(folder / "rgb16.png", rgb.astype(np.uint16) * 257)  # our own 16-bit colour PNG codec
    write_image(folder / "photo.jpg", rgb)
    np.save(folder / "fortran.npy", np.asfortranarray(gray.astype(np.float64)))
    write_zarr(da.from_array(gray, chunks=(20, 20)), folder / "plain.zarr")
    write_zarr(da.from_array(stack[:2], chunks=(1, 24, 24)), folder / "stack.ome.zarr", axes=["z", "y", "x"],
               scale=[2.0, 0.5, 0.5])
    names = ["gray.tif", "cells.ome.tif", "pages.tif", "hyper.tif", "rgb.png", "rgb16.png", "photo.jpg",
             "fortran.npy", "plain.zarr", "stack.ome.zarr"]
    return {n: (read_zarr(folder / n).compute() if n.endswith(".zarr") else read_image(folder / n)) for n in names}


# -- the reader objects ----------------------------------------------------------------------
def test_lazy_file_pickles_a_path_and_reads_regions(tmp_path):
    img = np.arange(300 * 200, dtype=np.uint16).reshape(300, 200)
    tifffile.imwrite(tmp_path / "big.tif", img, tile=(64, 64), compression="zlib")
    f = LazyFile(tmp_path / "big.tif", "TIFF")
    assert (f.shape, f.dtype) == ((300, 200), np.dtype(np.uint16))
    blob = pickle.dumps(f)
    assert len(blob) < 1000  # the path and a few numbers, never the pixels or an open file
    back = pickle.loads(blob)
    assert np.array_equal(back[10:150, 70:199], img[10:150, 70:199])
    arr = open_lazy(tmp_path / "big.tif", chunk=96)
    assert arr.chunks == ((96, 96, 96, 12), (96, 96, 8))
    graph = pickle.dumps(dict(arr.__dask_graph__()))
    assert len(graph) < 20000  # 12 chunk tasks and one reader, no pixels (the image is 120 kB)
    assert np.array_equal(pickle.loads(pickle.dumps(arr)).compute(), img)


def test_each_process_opens_a_file_once_and_a_changed_file_is_refused(tmp_path):
    img = np.arange(64 * 48, dtype=np.float64).reshape(64, 48)
    np.save(tmp_path / "a.npy", img)
    before = OPENED["count"]
    arr = open_lazy(tmp_path / "a.npy", chunk=16)  # 12 chunks
    assert np.array_equal(arr.compute(), img)
    assert OPENED["count"] - before == 1  # one memory map for every chunk
    os.utime(tmp_path / "a.npy", ns=(0, 10**9))  # another modification time: not the file planned for
    with pytest.raises(ImageIOError, match=r"a\.npy: the file changed while it was being read; run again"):
        arr.compute()


def test_the_graph_carries_the_weights_once_and_no_pixels(tmp_path):
    from napari_liif.dask_upscale import upscale_dask

    m = tiny_model(seed=3)
    weights = sum(p.numel() * 4 for p in m.net.state_dict().values())
    img = np.arange(384 * 320, dtype=np.uint16).reshape(384, 320)  # 245 kB of pixels
    tifffile.imwrite(tmp_path / "a.tif", img)
    lazy = upscale_dask(open_lazy(tmp_path / "a.tif", chunk=128), scale=2, model=m, chunks=256)
    sizes = sorted(len(pickle.dumps(v)) for v in dict(lazy.__dask_graph__()).values())
    assert len(sizes) > 20 and weights < sizes[-1] < weights + 20000  # one node holds the weights
    assert sizes[-2] < 2000  # every other task: keys, slices and numbers
    assert len(pickle.dumps(lazy)) < weights + 100000  # not the pixels, not a copy of the weights per chunk


def test_the_handle_cache_is_bounded_and_reopens_what_it_dropped(tmp_path):
    from napari_liif.lazy_read import CACHE_SIZE

    imgs = [np.full((8, 6), k, np.int16) for k in range(CACHE_SIZE + 2)]
    arrays = []
    for k, img in enumerate(imgs):
        np.save(tmp_path / f"{k}.npy", img)
        arrays.append(open_lazy(tmp_path / f"{k}.npy", chunk=4))
    before = OPENED["count"]
    assert all(np.array_equal(a.compute(), img) for a, img in zip(arrays[-CACHE_SIZE:], imgs[-CACHE_SIZE:]))
    assert OPENED["count"] == before  # the last CACHE_SIZE files opened are still open
    assert np.array_equal(arrays[0].compute(), imgs[0])
    assert OPENED["count"] == before + 1  # the first was dropped, and is opened again


def test_png_is_decoded_once_per_process_and_sliced(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (40, 30, 3)).astype(np.uint8)
    write_image(tmp_path / "a.png", rgb)
    before = OPENED["count"]
    arr = pickle.loads(pickle.dumps(open_lazy(tmp_path / "a.png", chunk=16)))
    assert arr.chunks == ((16, 16, 8), (16, 14), (3,))
    assert np.array_equal(arr.compute(), rgb)
    assert OPENED["count"] - before == 1


# -- a real cluster --------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    """Terminate a process we started (and its own process group: the worker's nannies)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 15)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 9)
            proc.wait(10)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """``tcp://127.0.0.1:P`` of a scheduler with two single-threaded worker processes, started with
    the ``dask`` command as a user would, in a folder of their own, importing the code under test."""
    import distributed  # the testing extra installs it, and with it the dask command

    exe = Path(sys.executable).parent / "dask"
    if not exe.exists():
        exe = shutil.which("dask")
    assert exe, f"the dask command of distributed is neither beside {sys.executable} nor on PATH"
    home = tmp_path_factory.mktemp("cluster-home")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    log = open(home / "cluster.log", "w")  # noqa: SIM115 - closed at teardown
    procs = []
    try:
        procs.append(subprocess.Popen([str(exe), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                                       "--no-dashboard"], cwd=home, env=env, stdout=log, stderr=log,
                                      start_new_session=True))
        procs.append(subprocess.Popen([str(exe), "worker", address, "--nworkers", "2", "--nthreads", "1",
                                       "--no-dashboard", "--local-directory", str(home)], cwd=home, env=env,
                                      stdout=log, stderr=log, start_new_session=True))
        with distributed.Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
        yield address
    finally:
        for p in reversed(procs):
            _stop(p)
        log.close()


@pytest.fixture(scope="module")
def formats(tmp_path_factory):
    folder = tmp_path_factory.mktemp("formats")
    pixels = _inputs(folder)
    tiny_checkpoint(folder / "tiny.safetensors", seed=3)
    return folder, pixels


def _cli(folder: Path, names: list[str], out: str, address: str | None) -> int:
    """The CLI from ``folder`` with relative paths (the workers run elsewhere)."""
    import dask

    from napari_liif.cli import main

    args = ["upscale", *names, "--scale", "2", "--dask", "--chunk", "32", "--checkpoint", "tiny.safetensors",
            "--device", "cpu", "--quiet", "-o", out]
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        with dask.config.set({"scheduler-address": address}):
            return main(args)
    finally:
        os.chdir(cwd)


def test_every_input_format_on_a_cluster_equals_the_local_run(cluster, formats, capsys):
    from distributed import Client

    folder, pixels = formats
    names = list(pixels)
    assert _cli(folder, names, "remote", cluster) == 0
    assert capsys.readouterr().out.startswith(f"{len(names)} upscaled, 0 skipped (output exists), 0 failed in ")
    assert _cli(folder, names, "local", None) == 0
    m = tiny_model(seed=3)
    for name, img in pixels.items():
        stem = Path(name).stem
        remote = read_zarr(folder / "remote" / f"{stem}.zarr").compute()
        local = read_zarr(folder / "local" / f"{stem}.zarr").compute()
        assert remote.dtype == local.dtype and np.array_equal(remote, local), name
        assert np.array_equal(remote, upscale(img, scale=2, model=m)), name  # the in-memory result
    assert not list(Path.cwd().glob(".*partial*"))  # nothing written relative to another folder

    def worker_state():
        from napari_liif.dask_upscale import _WORKER_MODELS
        from napari_liif.lazy_read import OPENED
        return len(_WORKER_MODELS), OPENED["count"]

    with Client(cluster) as client:
        state = client.run(worker_state)
    assert len(state) == 2
    models, opened = [s[0] for s in state.values()], [s[1] for s in state.values()]
    assert all(n <= 1 for n in models) and sum(models) >= 1  # the model was built once per worker
    n_files = len(names) - 2  # zarr stores are read through zarr, not our reader
    assert all(n <= n_files for n in opened) and sum(opened) >= n_files  # each file once per worker


def test_the_installed_command_with_dask_scheduler_address(cluster, formats):
    """The issue's exact command line: a separate process, the address in the environment."""
    folder, pixels = formats
    exe = Path(sys.executable).parent / "napari-liif"
    env = {**os.environ, "DASK_SCHEDULER_ADDRESS": cluster,
           "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([str(exe), "upscale", "cells.ome.tif", "--scale", "2", "--dask", "--chunk", "32",
                          "--checkpoint", "tiny.safetensors", "--device", "cpu", "-o", "env.zarr"],
                         cwd=folder, env=env, capture_output=True, text=True, timeout=300)
    assert (run.returncode, run.stderr) == (0, "") and run.stdout == "wrote env.zarr\n"
    out = read_zarr(folder / "env.zarr").compute()
    assert np.array_equal(out, upscale(pixels["cells.ome.tif"], scale=2, model=tiny_model(seed=3)))


def test_an_unreachable_scheduler_is_one_line(formats, capsys):
    import dask

    folder, _ = formats
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        rc = _cli(folder, ["gray.tif"], "never", f"tcp://127.0.0.1:{_free_port()}")
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert err[0].startswith("napari-liif: error: cannot reach the dask scheduler at tcp://127.0.0.1:")
    assert "unset DASK_SCHEDULER_ADDRESS" in err[0]
    assert not (folder / "never").exists()
