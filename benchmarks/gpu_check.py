#!/usr/bin/env python
"""The CUDA check: one command, under 5 minutes on a GPU, one table.

``python benchmarks/gpu_check.py`` on a machine with CUDA prints, for the bundled models:

* **checks** (pass/fail): the engine on CUDA at fp32 equals the CPU's fp32 within 1e-4 (every
  bundled model: LIIF and LM-LIIF); tiled encoding (small tiles, one per window) equals
  untiled on CUDA within 1e-4; a bf16 render of a dark, narrow ramp stays within 1 % of its
  span of fp32;
* **speeds**: engine output px/s at fp32, bf16 and fp16 (decoder only, latents cached; and end
  to end), encoder throughput (input px/s), the headless live-zoom path's time for a whole
  1920x1080 view at zoom 4 (render thread, 512-pixel screen tiles, model warm: cold image,
  then a zoom on the encoded one), and training steps/s over 60 s (batch 16, generated
  microscopy patches).

The exit status is 1 if a check fails, else 0. Without CUDA it says so and exits 0. Whenever a
session has a GPU, run it first and record the table in docs/performance.md.

Every part is a function taking the device, so the tests run them on the CPU with small sizes.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from time import sleep  # not through ``time``: tests replace that module with a fake clock
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT / "src"))


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _timed(fn, device) -> float:
    _sync(device)
    t = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t


def photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    """An (h, w, 3) float32 test image in [0, 1] with edges and texture."""
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    img = np.stack([np.sin(9 * xx + 4 * yy), np.cos(7 * yy * xx + 3 * xx), np.sin(25 * xx * yy)], -1)
    img = 0.5 + 0.4 * img + 0.05 * np.random.default_rng(seed).standard_normal((h, w, 3))
    img[h // 3: h // 2, w // 4: w // 2] = 0.9  # a sharp-edged block
    return np.clip(img, 0, 1).astype(np.float32)


# -- checks -----------------------------------------------------------------------------------
def check_devices_agree(name: str, device, reference="cpu", size=(96, 128), scale=2.5) -> tuple:
    """(row, passed): a render of model ``name`` at fp32 on ``device`` against ``reference``."""
    from napari_liif.engine import load_model

    img = photo(*size)
    out_hw = (round(size[0] * scale), round(size[1] * scale))
    a = load_model(name, device=device, precision="fp32").encode(img).render(shape=out_hw)
    b = load_model(name, device=reference, precision="fp32").encode(img).render(shape=out_hw)
    diff = float(np.abs(a - b).max())
    return (f"{name}: {device} fp32 = {reference} fp32", f"max |diff| {diff:.1e}", "< 1e-4", diff < 1e-4), diff < 1e-4


def check_tiled_equals_untiled(name: str, device, size=(150, 170), tile=40) -> tuple:
    from napari_liif.engine import load_model

    m = load_model(name, device=device, precision="fp32")
    img = photo(*size, seed=1)
    tiled = m.encode(img, tile=tile, window_px=1).render(shape=(2 * size[0], 2 * size[1]))
    whole = m.encode(img, tile=4096).render(shape=(2 * size[0], 2 * size[1]))
    diff = float(np.abs(tiled - whole).max())
    return (f"{name}: tiled = untiled on {device}", f"max |diff| {diff:.1e}", "< 1e-4", diff < 1e-4), diff < 1e-4


def check_bf16_ramp(device) -> tuple:
    """bf16 on a dark, narrow 16-bit ramp (one hot pixel sets the range) against fp32."""
    from napari_liif.api import upscale
    from napari_liif.engine import load_model

    img = np.tile(np.linspace(1000, 1200, 48), (32, 1)).astype(np.uint16)
    img[0, 0] = 65535
    a = upscale(img, scale=2, model=load_model("default", device=device, precision="fp32")).astype(float)
    b = upscale(img, scale=2, model=load_model("default", device=device, precision="bf16")).astype(float)
    worst = float(np.abs(a - b)[8:, 8:].max()) / 200
    return (f"default: bf16 ramp on {device}", f"{100 * worst:.2f} % of its span", "<= 1 %", worst <= 0.01), worst <= 0.01


# -- speeds -----------------------------------------------------------------------------------
def engine_speed(name: str, device, precision: str, size: int = 1024, scale: int = 2) -> list[tuple]:
    """Output px/s of a whole-image render: decoder only (second render) and end to end."""
    from napari_liif.engine import load_model

    m = load_model(name, device=device, precision=precision).warmup()
    img = photo(size, size, seed=2)
    out_hw = (size * scale, size * scale)
    fld = m.encode(img)
    e2e = _timed(lambda: fld.render(shape=out_hw), device)
    dec = min(_timed(lambda: fld.render(shape=out_hw), device) for _ in range(2))
    px = out_hw[0] * out_hw[1]
    return [(f"{name}: engine {precision}, decoder (latents cached)", f"{px / dec:,.0f} px/s", f"{size}^2 x{scale}", None),
            (f"{name}: engine {precision}, end to end", f"{px / e2e:,.0f} px/s", f"{size}^2 x{scale}", None)]


def encoder_speed(name: str, device, precision: str, size: int = 1024) -> tuple:
    from napari_liif.engine import load_model

    m = load_model(name, device=device, precision=precision).warmup()
    x = torch.rand(1, 3, size, size, device=m.device).to(m.dtype)
    with torch.inference_mode():
        m.net.encode(x)
        t = min(_timed(lambda: m.net.encode(x), device) for _ in range(3))
    return (f"{name}: encoder {precision}", f"{size * size / t:,.0f} input px/s", f"{size}^2 window", None)


def live_view(name: str, device, canvas=(1080, 1920), zoom: float = 4.0, size: int = 1024, tile: int = 512,
              precision: str = "auto") -> list[tuple]:
    """Seconds for the live core (no Qt) to finish a whole view: a cold image, then a zoom on
    the encoded one (a new lattice, latents cached). The model is warm."""
    from napari_liif.engine import load_model
    from napari_liif.live.planes import SourceState
    from napari_liif.live.session import Session
    from napari_liif.live.viewport import Camera2D, LayerGeometry

    model = load_model(name, device=device, precision=precision).warmup()
    img = photo(size, size, seed=3)
    state = SourceState(img, (), True, LayerGeometry(img.shape[:2]), (0.0, 1.0))
    session = Session(lambda: model, 1, tile=tile, preview=False, encoder_tile=32 if tile <= 128 else 128)
    rows = []
    try:
        for label, z in (("cold image", zoom), ("zoom on the encoded image", zoom * 1.25)):
            t0 = time.perf_counter()
            session.view(Camera2D((size / 2, size / 2), z, canvas), {0: state})
            while session.pending_tiles:
                got = session.collect()
                if got.error:
                    raise RuntimeError(got.error)
                sleep(0.001)
            n = len(session.sources[0].plan.tiles)
            rows.append((f"{name}: live view {canvas[1]}x{canvas[0]}, {label}", f"{time.perf_counter() - t0:.3f} s",
                         f"{n} tiles, {str(model.dtype).replace('torch.', '')}", None))
    finally:
        session.close(10)
    return rows


def training_speed(device, seconds: float = 60.0, **overrides) -> tuple:
    """Training steps per second over ``seconds`` (after three warm-up steps): the default
    recipe (batch 16, 48-px patches, 2304 samples) on generated microscopy patches."""
    from napari_liif.train.loop import TrainConfig, Trainer

    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(train_dirs=[], out_dir=str(Path(tmp) / "run"), data="microscopy", device=str(device),
                          val_every=0, save_every=10 ** 9, steps=10 ** 9, **overrides)
        trainer = Trainer(cfg, log=lambda *a: None)
        for _ in range(3):
            trainer.train_step()
        _sync(device)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            trainer.train_step()
            n += 1
        _sync(device)
        rate = n / (time.perf_counter() - t0)
    return (f"training, batch {cfg.batch_size}", f"{rate:.2f} steps/s", f"{n} steps in {seconds:g} s", None)


# -- the table --------------------------------------------------------------------------------
def format_table(rows: list[tuple]) -> str:
    """Rows ``(what, measured, condition, passed)`` (passed None for a speed) as aligned text."""
    head = ("what", "measured", "condition", "")
    cells = [head] + [(w, m, c, "" if p is None else ("pass" if p else "FAIL")) for w, m, c, p in rows]
    widths = [max(len(str(r[i])) for r in cells) for i in range(4)]
    lines = ["  ".join(str(v).ljust(n) for v, n in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def _guarded(rows: list, fn, *args, **kw) -> None:
    """Run one part; a failure becomes a failed row, so the table is always printed."""
    try:
        out = fn(*args, **kw)
    except Exception as exc:  # noqa: BLE001 - reported in the table
        rows.append((f"{fn.__name__}{args}", f"{type(exc).__name__}: {str(exc).splitlines()[0][:80]}", "", False))
        return
    if isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], bool):
        out = out[0]
    rows.extend(out if isinstance(out, list) else [out])


def run(device="cuda", models=("default", "fast"), train_seconds: float = 60.0) -> list[tuple]:
    from napari_liif.bundled import names

    have = [m for m in models if m in names()]
    rows: list[tuple] = []
    for name in have:
        _guarded(rows, check_devices_agree, name, device)
        _guarded(rows, check_tiled_equals_untiled, name, device)
    _guarded(rows, check_bf16_ramp, device)
    for name in have:
        for prec in ("fp32", "bf16", "fp16"):
            _guarded(rows, engine_speed, name, device, prec)
        _guarded(rows, encoder_speed, name, device, "fp32")
        _guarded(rows, encoder_speed, name, device, "bf16")
        _guarded(rows, live_view, name, device)
    if train_seconds > 0:
        _guarded(rows, training_speed, device, train_seconds)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train-seconds", type=float, default=60.0, help="training measurement (default 60 s; 0: skip)")
    ap.add_argument("--models", default="default,fast", help="bundled models to check (default: default,fast)")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print(f"gpu_check: no CUDA device here (torch {torch.__version__}, CUDA build "
              f"{torch.version.cuda or 'none'}); nothing to check")
        return 0
    print(f"gpu_check: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}",
          flush=True)
    t0 = time.perf_counter()
    rows = run("cuda", tuple(m for m in args.models.split(",") if m), args.train_seconds)
    print(format_table(rows))
    print(f"({time.perf_counter() - t0:.0f} s)")
    return 1 if any(r[3] is False for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
