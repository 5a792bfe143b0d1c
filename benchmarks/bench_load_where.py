"""Does it matter on which thread the live-zoom model is loaded? (issue 18)

Two arms, each in a fresh process (``xvfb-run -a python benchmarks/bench_load_where.py``):

  main     the model is loaded on the main thread (``get_model``) and passed to ``attach(model=...)``,
           as ``napari-liif view`` does
  render   ``attach`` gets the model's name and the render thread loads it, as the widget does
  unprimed the same without :func:`napari_liif.loading.start_thread_pool` (how it was before: the
           process's first parallel torch op then ran on the render thread)

Each arm times a cold whole view (attach to every tile in full) and a half-screen pan, then two
more pans onto areas not seen before while one other process keeps one core busy. The arms alternate
(main, render, main, render, ...), so both see the same machine; the table gives each arm's median
and the ratio render / main. It also reports what each arm ran with: the precision ``auto`` chose,
the torch threads of the render thread, whether torch._dynamo was imported.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import time


ARMS = ("main", "render", "unprimed")


def spin(stop):
    while not stop.is_set():
        sum(range(10000))


def whole_view(live, action, timeout):
    t = time.perf_counter()
    action()
    live.wait_idle(timeout)
    return time.perf_counter() - t


def arm(where: str, model_name: str, timeout: float) -> dict:
    import napari
    import numpy as np
    import torch
    from qtpy.QtWidgets import QApplication
    from skimage import data

    import napari_liif
    from napari_liif._qt import controller
    from napari_liif.api import get_model

    seen, real_loader = {}, controller.model_loader

    def loader(*args):  # the widget's loader, noting what the render thread runs with
        m = real_loader(*args)
        seen.update(thread_threads=torch.get_num_threads(), thread=__import__("threading").current_thread().name)
        return m

    img = np.stack([data.camera()] * 3, axis=-1)  # a 512 x 512 RGB photo
    viewer = napari.Viewer(show=True)
    viewer.window._qt_viewer.canvas.native.setFixedSize(1024, 768)  # benchmark only: an exact canvas
    for _ in range(50):
        QApplication.processEvents()
    layer = viewer.add_image(img, rgb=True)
    cam = viewer.scene.camera
    cam.zoom, cam.center = 4.0, (256.0, 256.0)
    for _ in range(20):
        QApplication.processEvents()
    t = time.perf_counter()
    holder = {}
    if where == "unprimed":
        controller.start_thread_pool = lambda: None
    if where == "main":
        model = get_model(model_name, "auto", "auto")
        load_s = time.perf_counter() - t

        def start():
            holder["live"] = napari_liif.attach(viewer, layer, model)
    else:
        load_s = 0.0

        def start():
            controller.model_loader = loader  # attach binds the module's loader: this one notes the thread
            holder["live"] = napari_liif.attach(viewer, layer, model_name)  # loaded on the render thread

    t = time.perf_counter()
    start()
    holder["live"].wait_idle(timeout)
    cold = time.perf_counter() - t + load_s
    live = holder["live"]

    def look(cy, cx):
        return lambda: setattr(cam, "center", (cy, cx))

    half_w, half_h = 1024 / 2 / 4, 768 / 2 / 4  # half a screen, in image pixels
    pan = whole_view(live, look(256.0, 256.0 + half_w), timeout)  # each pan shows half a screen never seen
    stop = multiprocessing.Event()
    busy = multiprocessing.Process(target=spin, args=(stop,), daemon=True)
    busy.start()
    try:
        busy_pan = whole_view(live, look(256.0 + half_h, 256.0 + half_w), timeout)
        busy_pan2 = whole_view(live, look(256.0 + half_h, 256.0 - half_w), timeout)
    finally:
        stop.set()
        busy.join()
    model = get_model(model_name, "auto", "auto")
    live.detach()
    viewer.close()
    from napari_liif.device import cpu_bf16_speedup

    return {"arm": where, "cold": cold, "load": load_s, "pan": pan, "busy pan": busy_pan, "busy pan 2": busy_pan2,
            "precision": str(model.dtype).replace("torch.", ""), "bf16 speedup": round(cpu_bf16_speedup(), 2),
            "main threads": torch.get_num_threads(), "dynamo": "torch._dynamo" in sys.modules, **seen}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="fast")
    p.add_argument("--rounds", type=int, default=2, help="pairs of runs (default 2)")
    p.add_argument("--timeout", type=float, default=600)
    p.add_argument("--arm", choices=ARMS, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.arm:
        print("RESULT " + json.dumps(arm(args.arm, args.model, args.timeout)), flush=True)
        return 0
    up = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    results = {a: [] for a in ARMS}
    for _ in range(args.rounds):
        for where in ARMS:
            out = subprocess.run([sys.executable, __file__, "--arm", where, "--model", args.model,
                                  "--timeout", str(args.timeout)],
                                 capture_output=True, text=True, env=os.environ)
            line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
            if out.returncode or not line:
                print(f"{where}: failed ({out.returncode})\n{out.stderr[-2000:]}")
                return 1
            results[where].append(json.loads(line[0][7:]))
            print(where, results[where][-1], flush=True)
    import torch

    print(f"\nmodel {args.model}, auto device and precision, 1024x768 canvas, zoom 4, 512x512 RGB; torch "
          f"{torch.__version__}; medians of {args.rounds} alternating runs per arm")
    print(f"uptime before: {up}")
    print(f"uptime after:  {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    print(f"{'whole view s':16s} {'main':>8s} {'render':>8s} {'unprimed':>9s} {'render/main':>12s} {'unprimed/main':>14s}")
    for key in ("cold", "pan", "busy pan", "busy pan 2"):
        a, b, c = (statistics.median(r[key] for r in results[w]) for w in ARMS)
        print(f"{key:16s} {a:8.2f} {b:8.2f} {c:9.2f} {b / a:12.2f} {c / a:14.2f}")
    for key in ("load", "precision", "bf16 speedup", "main threads", "thread_threads", "dynamo"):
        print(f"{key:16s} " + " ".join(f"{[r.get(key) for r in results[w]]!s:>22s}" for w in ARMS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
