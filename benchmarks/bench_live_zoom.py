"""Live zoom's core without Qt: how long a view takes, against the engine's single call, in one run.

Defaults are the issue's scenario: a 1024x768 canvas at zoom 4 on a 512x512 image (scikit-image
``camera``), the bundled default model at ``auto`` precision, driven through
:class:`napari_liif.live.session.Session` exactly as the napari front end drives it (minus Qt).
``bench_live_zoom_napari.py`` measures the same in a real viewer, with UI stalls.

Rows (seconds from the moment the view is asked for):
  covered     every tile shown at least as its coarse preview (the first full coverage)
  whole       every tile rendered in full
  engine      the engine's single call for the same view: ``encode(plane).render(view)`` cold,
              a render of the encoded plane for pan and zoom
Phases: cold (nothing encoded), pan 1/2 screen (whole screen pixels; the plane encoded in the
background first), zoom x1.25; the same pan and zoom with one busy competitor process (a spinning
Python process this benchmark starts); three channels cold, pan, zoom. Timing is only valid
against other rows of the same run: ratios are printed, with ``uptime``, and each view's work
(input pixels encoded, samples rendered). ``--channels N`` runs only 1 against 3 channels, N
alternating rounds, the best of each row: on a machine whose load drifts, the fairer ratio.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import numpy as np


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--canvas", default="768,1024", help="canvas H,W in screen pixels (default 768,1024)")
    p.add_argument("--zoom", type=float, default=4.0, help="screen pixels per image pixel (default 4)")
    p.add_argument("--size", type=int, default=512, help="image side in pixels (default 512)")
    p.add_argument("--tile", type=int, default=None, help="screen tile size (default: the device's)")
    p.add_argument("--checkpoint", default=None, help="model (default: bundled default)")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto")
    p.add_argument("--no-preview", action="store_true", help="no coarse pass")
    p.add_argument("--timeout", type=float, default=600, help="seconds allowed per view")
    p.add_argument("--channels", type=int, default=0, metavar="N",
                   help="only 1 vs 3 channels, alternating N rounds, best of each (a drifting load slows both)")
    return p.parse_args(argv)


def images(size: int, n: int) -> list[np.ndarray]:
    """``n`` different uint8 photographs of ``size`` x ``size`` (camera, then its flips)."""
    from skimage import data, transform

    img = data.camera()
    if img.shape != (size, size):
        img = (transform.resize(img, (size, size), anti_aliasing=True) * 255).astype(np.uint8)
    return [np.ascontiguousarray(v) for v in (img, img[::-1], img[:, ::-1])[:n]]


def states(imgs):
    from napari_liif.live.planes import SourceState
    from napari_liif.live.viewport import LayerGeometry

    return {k: SourceState(im, (), False, LayerGeometry(im.shape), (0.0, 255.0)) for k, im in enumerate(imgs)}


def run_view(session, cam, planes, timeout) -> tuple[float, float]:
    """(covered s, whole s) for ``cam``: collected as the front end collects, every 10 ms."""
    t0 = time.perf_counter()
    session.view(cam, planes)
    while session.pending_tiles or not session.settled:
        got = session.collect()
        session.refresh_due()
        if got.error:
            raise RuntimeError(got.error)
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError(f"view not rendered in {timeout} s: {session.tiles_done()}")
        time.sleep(0.01)
    whole = time.perf_counter() - t0
    return (session.covered_time or time.perf_counter()) - t0, whole


def wait_encoded(session, timeout: float) -> None:
    t0 = time.perf_counter()
    while not session.renderer.plane_encoded and time.perf_counter() - t0 < timeout:
        time.sleep(0.01)


def engine_call(model, state, cam, encoded=None) -> tuple[float, object]:
    """Seconds for the engine to render the view's whole buffer in one call (encoding first if
    ``encoded`` is None), and the encoded field; run on a thread of its own, as the renderer
    runs (torch's thread pools are per thread: the main thread's would not compare)."""
    import threading

    out = []
    worker = threading.Thread(target=lambda: out.append(_engine_call(model, state, cam, encoded)))
    worker.start()
    worker.join()
    return out[0]


def _engine_call(model, state, cam, encoded):
    from napari_liif.live.viewport import Tile, plan_view

    plan = plan_view(cam, state.geometry, 128)
    whole = Tile((0, 0), plan.rows[0], plan.rows[1], plan.cols[0], plan.cols[1])
    prep = state.prepare()
    t0 = time.perf_counter()
    fld = encoded or model.encode_source(prep.fields[0][1], prep.shape)
    fld.render(plan.region(whole), whole.shape)
    return time.perf_counter() - t0, fld


def scenario(model, args, planes, views, label) -> list[tuple]:
    """Cold, pan and zoom through one session; rows ``(label phase, covered, whole)``, then
    ``(label work, pixels encoded, samples rendered, engine calls)`` and each phase's share
    ``(label phase work, pixels, samples)``."""
    from napari_liif.live.session import Session

    session = Session(lambda: model, len(planes), tile=args.tile, preview=not args.no_preview)
    rows, work = [], []
    try:
        for phase, cam in views:
            if phase != "cold":
                wait_encoded(session, args.timeout)
            eng = session.renderer.engine
            before = (eng.pixels_encoded, eng.samples_rendered) if eng is not None else (0, 0)
            rows.append((f"{label} {phase}",) + run_view(session, cam, planes, args.timeout))
            eng = session.renderer.engine
            work.append((f"{label} {phase} work", eng.pixels_encoded - before[0], eng.samples_rendered - before[1]))
        eng = session.renderer.engine
        rows.append((f"{label} work", eng.pixels_encoded, eng.samples_rendered, eng.render_calls))
    finally:
        session.close()
    return rows + work


def channels_only(model, args, quiet) -> int:
    """``--channels N``: 1 and 3 channels alternately, N rounds, the best of each row (a machine
    whose load drifts slows both alike), with each phase's work."""
    one, three = states(images(args.size, 1)), states(images(args.size, 3))
    best: dict = {}
    work: dict = {}
    for _ in range(args.channels):
        for planes, label in ((one, "1 ch"), (three, "3 ch")):
            for r in scenario(model, args, planes, quiet, label):
                if r[0].endswith(" work") and len(r) == 3:
                    work[r[0]] = r[1:]
                elif not r[0].endswith("work"):
                    old = best.get(r[0])
                    best[r[0]] = r if old is None or r[2] < old[2] else old
    print(f"live core: 1 and 3 channels, best of {args.channels} alternating rounds; canvas {args.canvas}, zoom "
          f"{args.zoom:g}, image {args.size}^2, tile {args.tile}, model {model.name} ({model.dtype})")
    print(f"{'view':16s} {'covered s':>10s} {'whole s':>9s} {'px encoded':>11s} {'samples':>10s}")
    for name, (_, covered, whole) in best.items():
        px, n = work[f"{name} work"]
        print(f"{name:16s} {covered:10.2f} {whole:9.2f} {px:11,d} {n:10,d}")
    print("3 channels / 1 (whole view): " + "; ".join(
        f"{ph} {best['3 ch ' + ph][2] / best['1 ch ' + ph][2]:.2f}" for ph in ("cold", "pan 1/2", "zoom x1.25")))
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    h, w = (int(v) for v in args.canvas.split(","))
    import torch

    from napari_liif.live.session import default_tile
    from napari_liif.api import get_model
    from napari_liif.live.viewport import Camera2D

    model = get_model(args.checkpoint, args.device, args.precision)
    args.tile = args.tile or default_tile(model.device)
    c, z, half = (args.size - 1) / 2, args.zoom, w / 2 / args.zoom

    def cam(cy, cx, zoom):
        return Camera2D((cy, cx), zoom, (h, w))

    quiet = [("cold", cam(c, c, z)), ("pan 1/2", cam(c, c + half, z)), ("zoom x1.25", cam(c, c + half, z * 1.25))]
    busy = [("cold", cam(c, c, z)), ("pan 1/2", cam(c, c - half, z)), ("zoom x1.25", cam(c, c - half, z * 1.25))]
    if args.channels:
        channels_only(model, args, quiet)
        print(f"torch threads {torch.get_num_threads()}; uptime: "
              f"{subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
        return 0
    one = states(images(args.size, 1))
    three = states(images(args.size, 3))
    state = one[0]
    rows = scenario(model, args, one, quiet, "1 ch")
    engine = {"cold": [], "pan": [], "zoom": []}
    for _ in range(2):  # the best of two, after the live views (both warm)
        t, fld = engine_call(model, state, quiet[0][1])
        engine["cold"].append(t)
        engine["pan"].append(engine_call(model, state, quiet[1][1], fld)[0])
        engine["zoom"].append(engine_call(model, state, quiet[2][1], fld)[0])
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        rows += scenario(model, args, one, busy, "1 ch busy")[1:]  # its cold view only sets the stage
    finally:
        spinner.kill()
        spinner.wait()
    rows += scenario(model, args, three, quiet, "3 ch")
    report(model, args, (h, w), rows, {k: min(v) for k, v in engine.items()})
    print(f"torch threads {torch.get_num_threads()}; uptime: "
          f"{subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    return 0


def report(model, args, canvas, rows, engine) -> None:
    h, w = canvas
    print(f"live core: canvas {w}x{h}, zoom {args.zoom:g}, image {args.size}^2, tile {args.tile}, model "
          f"{model.name} on {model.device} ({args.precision}: {str(model.dtype).replace('torch.', '')})")
    print(f"{'view':22s} {'covered s':>10s} {'whole s':>9s} {'engine s':>9s} {'live/engine':>12s}")
    timed = {r[0]: r for r in rows if not r[0].endswith("work")}
    phase_work = [r for r in rows if r[0].endswith(" work") and len(r) == 3]
    rows = [r for r in rows if len(r) != 3]
    for name, (_, covered, whole) in timed.items():
        kind = "cold" if "cold" in name else "pan" if "pan" in name else "zoom"
        print(f"{name:22s} {covered:10.2f} {whole:9.2f} {engine[kind]:9.2f} {whole / engine[kind]:12.2f}")
    for name, pixels, samples, calls in (r for r in rows if r[0].endswith("work")):
        print(f"{name}: {pixels:,d} input px encoded, {samples:,d} samples rendered in {calls} engine calls")
    print("per view: " + "; ".join(f"{n[:-5]} {px:,d} px, {k:,d} samples" for n, px, k in phase_work))
    ratio = [("pan busy / quiet", "1 ch busy pan 1/2", "1 ch pan 1/2"),
             ("zoom busy / quiet", "1 ch busy zoom x1.25", "1 ch zoom x1.25"),
             ("3 channels / 1: cold", "3 ch cold", "1 ch cold"), ("pan", "3 ch pan 1/2", "1 ch pan 1/2"),
             ("zoom", "3 ch zoom x1.25", "1 ch zoom x1.25")]
    print("; ".join(f"{label} {timed[a][2] / timed[b][2]:.2f}" for label, a, b in ratio))
    print("engine: the whole view in one call (cold: encode + render; pan, zoom: render of the encoded plane)")


if __name__ == "__main__":
    sys.exit(main())
