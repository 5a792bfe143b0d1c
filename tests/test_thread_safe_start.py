"""Starting is safe from any number of threads, with the CPU wheel and torch's default (CUDA, triton)
wheel alike (issue 17 item 6).

The crash this guards against: once napari has shown a canvas, Mesa's OpenGL driver has loaded
its LLVM into the process; building a model ran torch ops without meta kernels, whose first call
imports torch._dynamo and with it triton, whose own LLVM then crashed the process inside dlopen
(:mod:`napari_liif.loading`). With the CPU wheel (no triton) these tests check the locking, the
shared cache and the values; with the default wheel (CI's focused run, ``scripts/ci_torch_default.sh``)
they also crash without the fix.
"""

from __future__ import annotations

import importlib.util
import os
import pickle
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import napari_liif

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")

BUILD_EVERY_MODEL = """
import sys, torch
from napari_liif import models
from napari_liif.bundled import names
from napari_liif.engine import load_model
for name in names():
    load_model(name, device="cpu", precision="fp32")
with torch.device("meta"):
    for enc in ("edsr-baseline", "edsr", "rdn"):
        models.make({"name": enc, "args": {}})
print("torch._dynamo imported:", "torch._dynamo" in sys.modules, "triton imported:", "triton" in sys.modules)
"""


def test_building_any_model_never_imports_torch_dynamo():
    """torch.eye or a number times a tensor on the meta device run torch's Python references,
    whose first call imports torch._dynamo (seconds) and triton (the crash): no model may need
    them. In a fresh interpreter, so no earlier test has imported them already."""
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", BUILD_EVERY_MODEL], capture_output=True, text=True, env=env,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "torch._dynamo imported: False triton imported: False"


# -- many controllers and loaders at once, from a script, in a shown viewer ------------------------

NO_DISPLAY = sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


class BuildCounter:
    """Wraps ``checkpoint.build``: counts builds, the most at once, and the threads that built."""

    def __init__(self, build):
        self._build, self._lock = build, threading.Lock()
        self.calls, self.now, self.most, self.threads = 0, 0, 0, set()

    def __call__(self, *args, **kwargs):
        with self._lock:
            self.calls += 1
            self.now += 1
            self.most = max(self.most, self.now)
            self.threads.add(threading.current_thread().name)
        try:
            time.sleep(0.05)  # widen the window in which another build could start
            return self._build(*args, **kwargs)
        finally:
            with self._lock:
                self.now -= 1


@pytest.mark.gui
@pytest.mark.skipif(NO_DISPLAY, reason="needs a display: run under xvfb-run -a")
def test_attach_from_a_script_with_controllers_and_loaders_starting_at_once(make_napari_viewer, tmp_path,
                                                                              monkeypatch):
    from gui_helpers import set_canvas, tiny_checkpoint

    from napari_liif import checkpoint, engine
    from napari_liif._qt.layer_state import read_source
    from napari_liif.api import get_model
    from napari_liif.dask_upscale import ModelRef

    viewer = make_napari_viewer(show=True)  # the canvas: Mesa's OpenGL driver is loaded from here on
    set_canvas(viewer, 120, 160)
    a = tiny_checkpoint(tmp_path / "a.safetensors", seed=3)
    b = tiny_checkpoint(tmp_path / "b.safetensors", seed=4)
    rng = np.random.default_rng(0)
    layers = [viewer.add_image(rng.random((24, 30)).astype(np.float32), name=f"c{i}") for i in range(3)]
    cam = viewer.scene.camera
    cam.zoom, cam.center = 4.0, (12.0, 15.0)
    reference = {p: engine.load_model(p, device="cpu", precision="fp32") for p in (a, b)}  # main thread, first
    shipped = pickle.dumps(ModelRef(reference[b]))  # as dask sends a model to a worker

    counter = BuildCounter(checkpoint.build)
    monkeypatch.setattr(engine, "build", counter)
    monkeypatch.setattr(checkpoint, "build", counter)  # what a dask worker's ModelRef.get builds with
    start, got, errors = threading.Barrier(5), {}, []

    def loader(name, fn):
        def run():
            try:
                start.wait(30)
                got[name] = fn()
            except Exception as exc:  # noqa: BLE001 - reported by the assert below
                errors.append(f"{name}: {type(exc).__name__}: {exc}")
        return threading.Thread(target=run, name=name)

    threads = [loader("get a 1", lambda: get_model(str(a), "cpu", "fp32")),
               loader("get a 2", lambda: get_model(str(a), "cpu", "fp32")),
               loader("load b", lambda: engine.load_model(b, device="cpu", precision="fp32")),
               loader("worker b", lambda: pickle.loads(shipped).get())]
    for t in threads:
        t.start()
    start.wait(30)  # the loaders go now, and so do the controllers' render threads:
    lives = [napari_liif.attach(viewer, layers[0], a, device="cpu", precision="fp32", tile=32),
             napari_liif.attach(viewer, layers[1], a, device="cpu", precision="fp32", tile=32),
             napari_liif.attach(viewer, layers[2], b, device="cpu", precision="fp32", tile=32)]
    try:
        for t in threads:
            t.join(60)
        for live in lives:
            live.wait_idle(120)
        assert errors == []
        # (a, cpu, fp32) was asked for by two render threads and two loaders: built once, one object;
        # (b, cpu, fp32) once for the cache, once by load_model, once in the worker: 4 builds, never two at once
        assert got["get a 1"] is got["get a 2"] is get_model(str(a), "cpu", "fp32")
        assert (counter.calls, counter.most) == (4, 1)
        assert "napari-liif-live-zoom" in counter.threads  # models were built on render threads
        # every overlay equals an independent engine render of its tiles with the model loaded first
        for live, layer, path in zip(lives, layers, (a, a, b)):
            source, shape, to_data = read_source(viewer, layer).prepare()
            fld = reference[path].encode_source(source, shape)
            plan = live.plan
            assert plan.tiles
            for t in plan.tiles:
                want = to_data(fld.render(plan.region(t), t.shape))
                assert np.abs(live.overlay.data[plan.slot(t)] - want).max() < 1e-5, (layer.name, t)
    finally:
        for live in lives:
            live.detach()
    if importlib.util.find_spec("triton") is not None:
        # anyone's later import of triton (torch.compile, torch._dynamo) is safe with the canvas shown
        done = threading.Thread(target=lambda: __import__("torch._dynamo"))
        done.start()
        done.join(120)
        assert "triton" in sys.modules and "torch._dynamo" in sys.modules
