#!/usr/bin/env python
"""Speed of the napari-liif decoder against a straightforward LIIF query, on one checkpoint.

Prints, for the same model and the same output grid:

* pixels/second of a straightforward implementation of the official LIIF query procedure
  (written below, independent of the package: whole-map ``F.unfold``, ``grid_sample``
  nearest lookups of features and latent centres for each of the four shifts,
  concatenation ``[feature, rel_coord, rel_cell]``, the MLP on each, area-weighted sum,
  queries in batches of 30 000 as the official ``batched_predict`` does);
* pixels/second of ``LiifModel.encode(img).render(shape=...)`` in fp32 and in bf16, decoder
  only (a second render of the same field, so the latent tiles and their first-layer
  projections are already cached) and end to end (encoding included);
* each one's ratio to the straightforward path, the PSNR of bf16 output against fp32, the
  machine's matrix-multiply peak and the fraction of it each path reaches;
* the encoder's work on wide, tall and square whole-image renders (input pixels through the
  encoder per input pixel, counted with a hook; the default model's geometry);
* wall time and peak resident memory of a 2048x2048 RGB image upscaled x2 (fp32), run in a
  subprocess so that its peak memory is its own.

Run ``python benchmarks/bench_engine.py`` (about 5 minutes, plus ~5 for the encoder count and
the big run on a 2-core CPU), ``--quick`` for a smoke run, ``--skip-big`` to leave out the
2048x2048 run, ``--skip-encoder-work`` the encoder count.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

#: the official EDSR-baseline-LIIF architecture, used when no checkpoint is given or bundled
OFFICIAL_SPEC = {
    "name": "liif",
    "args": {
        "encoder_spec": {"name": "edsr-baseline", "args": {"no_upsampling": True}},
        "imnet_spec": {"name": "mlp", "args": {"out_dim": 3, "hidden_list": [256, 256, 256, 256]}},
    },
}
QUERY_BATCH = 30000  # queries per call in the official batched_predict
#: the clock of every speed measurement; ``--cpu-time`` swaps in process CPU time
clock = time.perf_counter


# ---------------------------------------------------------------------------------------
# The straightforward path: the official query procedure, step by step.
# ---------------------------------------------------------------------------------------

def centre_grid(h: int, w: int) -> torch.Tensor:
    """Pixel centres of an h x w grid in [-1, 1], (row, col) order: (h, w, 2)."""
    ys = -1 + (2 * torch.arange(h, dtype=torch.float32) + 1) / h
    xs = -1 + (2 * torch.arange(w, dtype=torch.float32) + 1) / w
    return torch.stack(torch.meshgrid(ys, xs, indexing="ij"), dim=-1)


def straightforward_query(net, feat: torch.Tensor, inp: torch.Tensor, coord: torch.Tensor,
                          cell: torch.Tensor) -> torch.Tensor:
    """Values at ``coord`` (1, N, 2) with cells ``cell`` (1, N, 2): (1, N, 3), [-1, 1] scale.

    Done as the official ``query_rgb`` does it, including unfolding the whole latent map on
    every call. Assumes the official switches (local ensemble, unfolding, cell decoding).
    """
    _, c, h, w = feat.shape
    unfolded = F.unfold(feat, 3, padding=1).view(1, c * 9, h, w)
    latent_xy = centre_grid(h, w).permute(2, 0, 1).unsqueeze(0)  # (1, 2, h, w)
    scale = coord.new_tensor([h, w])
    preds, areas = [], []
    for dy in (-1, 1):
        for dx in (-1, 1):
            q = coord.clone()
            q[..., 0] += dy / h + 1e-6  # one latent radius (1/h in [-1, 1] units), plus eps
            q[..., 1] += dx / w + 1e-6
            q.clamp_(-1 + 1e-6, 1 - 1e-6)
            grid = q.flip(-1).unsqueeze(1)  # grid_sample wants (x, y)
            q_feat = F.grid_sample(unfolded, grid, mode="nearest", align_corners=False)
            q_xy = F.grid_sample(latent_xy, grid, mode="nearest", align_corners=False)
            q_feat = q_feat[:, :, 0, :].permute(0, 2, 1)
            q_xy = q_xy[:, :, 0, :].permute(0, 2, 1)
            rel = (coord - q_xy) * scale
            x = torch.cat([q_feat, rel, cell * scale], dim=-1)
            preds.append(net.imnet(x.view(-1, x.shape[-1])).view(1, -1, 3))
            areas.append((rel[..., 0] * rel[..., 1]).abs() + 1e-9)
    total = sum(areas)
    areas = areas[::-1]  # each prediction is weighted by the area of the opposite one
    out = sum(p * (a / total).unsqueeze(-1) for p, a in zip(preds, areas))
    if getattr(net, "bilinear_residual", False):  # the global residual of the bundled model
        bil = F.grid_sample(inp, coord.flip(-1).unsqueeze(1), mode="bilinear",
                            padding_mode="border", align_corners=False)
        out = out + bil[:, :, 0, :].permute(0, 2, 1)
    return out


def straightforward_decode(net, feat, inp, out_hw) -> np.ndarray:
    """The whole output grid in batches of ``QUERY_BATCH`` queries: (H, W, 3) in [0, 1]."""
    oh, ow = out_hw
    coord = centre_grid(oh, ow).view(1, -1, 2)
    cell = torch.tensor([2 / oh, 2 / ow]).expand(1, coord.shape[1], 2)
    parts = [straightforward_query(net, feat, inp, coord[:, i:i + QUERY_BATCH], cell[:, i:i + QUERY_BATCH])
             for i in range(0, coord.shape[1], QUERY_BATCH)]
    out = torch.cat(parts, dim=1).view(oh, ow, 3)
    return (out * 0.5 + 0.5).clamp(0, 1).numpy()


def straightforward_upscale(net, image: np.ndarray, out_hw) -> tuple[np.ndarray, float, float]:
    """Encode (untiled) then decode; returns (output, encoder seconds, decoder seconds)."""
    with torch.no_grad():
        t0 = clock()
        inp = ((torch.from_numpy(image).permute(2, 0, 1).unsqueeze(0) - 0.5) / 0.5).contiguous()
        feat = net.encode(inp)
        t1 = clock()
        out = straightforward_decode(net, feat, inp, out_hw)
        t2 = clock()
    return out, t1 - t0, t2 - t1


# ---------------------------------------------------------------------------------------
# Models, inputs, counts
# ---------------------------------------------------------------------------------------

def build_models(args):
    """(fp32 LiifModel, bf16 LiifModel, description) with identical weights."""
    from napari_liif.engine import DEFAULT_WEIGHTS, LiifModel, load_model
    from napari_liif.models import make

    path = args.checkpoint or (None if args.random or not DEFAULT_WEIGHTS.is_file() else DEFAULT_WEIGHTS)
    if path is not None:
        m32 = load_model(path, device="cpu", precision="fp32")
        m16 = load_model(path, device="cpu", precision="bf16")
        return m32, m16, f"{Path(path).name} (spec {json.dumps(m32.spec['args'], separators=(',', ':'))})"
    torch.manual_seed(0)
    net = make(OFFICIAL_SPEC)
    m16 = LiifModel(copy.deepcopy(net), OFFICIAL_SPEC, device="cpu", precision="bf16", name="random")
    m32 = LiifModel(net, OFFICIAL_SPEC, device="cpu", precision="fp32", name="random")
    return m32, m16, "random initialisation (seed 0) of the official EDSR-baseline-LIIF architecture"


def test_image(n: int) -> tuple[np.ndarray, str]:
    """An n x n RGB photograph in [0, 1] (scikit-image's astronaut, cropped or tiled)."""
    try:
        from skimage import data

        photo = data.astronaut().astype(np.float32) / 255
        name = "scikit-image astronaut"
    except ImportError:  # a smooth synthetic image with some texture
        yy, xx = np.mgrid[0:512, 0:512] / 512
        photo = np.stack([np.sin(9 * xx + 4 * yy), np.cos(7 * yy * xx + 3 * xx), np.sin(25 * xx * yy)], -1)
        photo = (0.5 + 0.45 * photo).astype(np.float32)
        name = "synthetic"
    reps = -(-n // photo.shape[0])
    img = np.tile(photo, (reps, reps, 1))[:n, :n]
    return np.ascontiguousarray(img), name


def encoder_macs_per_pixel(net) -> float:
    """Multiply-adds of the encoder's convolutions per input pixel (measured with hooks)."""
    total = [0]

    def hook(mod, inputs, out):
        k = mod.kernel_size[0] * mod.kernel_size[1]
        total[0] += out.numel() * (mod.in_channels // mod.groups) * k

    handles = [m.register_forward_hook(hook) for m in net.encoder.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        net.encode(torch.zeros(1, 3, 16, 16, dtype=next(net.parameters()).dtype))
    for h in handles:
        h.remove()
    return total[0] / 256


def decoder_macs(net) -> tuple[float, float, float]:
    """(straightforward MACs per output pixel, ours per output pixel, projection per latent).

    Counting matrix products only. Straightforward: four full MLP passes. Ours: four passes
    of the hidden and output layers per pixel (the first layer's coordinate and cell terms
    are a few hundred element-wise operations, not counted), plus the first layer's feature
    part once per latent.
    """
    linears = net.imnet.linears
    members = 4 if net.local_ensemble else 1
    full = sum(lin.in_features * lin.out_features for lin in linears)
    tail = sum(lin.in_features * lin.out_features for lin in linears[1:])
    return members * full, members * tail, net.feat_dim * linears[0].out_features


def matmul_peak(dtype, n: int, repeats: int) -> float:
    """Best GFLOP/s of an n x n x n torch.matmul."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    torch.matmul(a, b)
    best = min(_timed(lambda: torch.matmul(a, b)) for _ in range(repeats))
    return 2 * n ** 3 / best / 1e9


def fused_linear_peak(dtype, repeats: int) -> float:
    """Best GFLOP/s of the kernel our decoder runs: linear + bias + ReLU, 16384 x 256 x 256."""
    from napari_liif.models.liif import linear_relu

    layer = torch.nn.Linear(256, 256).to(dtype)
    x = torch.randn(16384, 256).to(dtype)
    with torch.inference_mode():
        linear_relu(x, layer)
        best = min(_timed(lambda: linear_relu(x, layer)) for _ in range(repeats))
    return 2 * 16384 * 256 * 256 / best / 1e9


def _timed(fn) -> float:
    t = clock()
    fn()
    return clock() - t


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1 / mse)


def machine() -> str:
    name = platform.processor() or "cpu"
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
        name = next(ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name"))
        if "avx512_bf16" in info:
            name += ", avx512_bf16"
    except (OSError, StopIteration):
        pass
    return (f"{name}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads, "
            f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}")


def other_load() -> str:
    """CPU use of other processes, so a reader knows how contended the numbers are."""
    try:
        import psutil

        me = os.getpid()
        procs = list(psutil.process_iter(["pid", "name", "cmdline"]))
        for p in procs:
            try:
                p.cpu_percent(None)
            except psutil.Error:
                pass
        time.sleep(1.0)
        busy = []
        for p in procs:
            try:
                pct = p.cpu_percent(None)
            except psutil.Error:
                continue
            if p.pid != me and pct > 20:
                cmd = " ".join(p.info["cmdline"] or [p.info["name"] or "?"])
                busy.append(f"pid {p.pid} at {pct:.0f}% ({cmd[:60]})")
        return "; ".join(busy) if busy else "none"
    except ImportError:
        return f"load average {os.getloadavg()[0]:.2f} (psutil not installed)"


# ---------------------------------------------------------------------------------------
# Encoder work of whole-image renders, by image shape
# ---------------------------------------------------------------------------------------

ENCODER_WORK_CASES = (((512, 8192), 2), ((8192, 512), 2), ((2048, 2048), 2))


def encoder_work(window_px=None, block=None, cases=ENCODER_WORK_CASES) -> list[tuple]:
    """Input pixels through the encoder per input pixel, for whole-image renders of each case.

    The geometry of the default model on this device (EDSR-baseline's 35-pixel halo, 256-pixel
    tiles, the 1 GiB cache of 256-channel fp32 projections, this device's encoder windows or
    ``window_px``, output blocks of ``block``), counted with a forward hook on a real encoder of
    that depth (16 residual blocks) but 4 features wide; its decoder is skipped (a family that
    decodes zeros): the plan and the windows are the engine's own. About a minute per case.
    """
    from napari_liif.engine import LiifModel
    from napari_liif.models import make
    from napari_liif.models.liif_family import LiifFamily

    class EncoderOnly(LiifFamily):
        def decode_block(self, products, block, state):
            return torch.zeros(block.shape + (self.out_dim,))

    spec = {"name": "liif", "args": {
        "encoder_spec": {"name": "edsr-baseline", "args": {"n_feats": 4, "no_upsampling": True}},
        "imnet_spec": {"name": "mlp", "args": {"out_dim": 3, "hidden_list": [256]}}}}
    torch.manual_seed(0)
    model = LiifModel(make(spec), spec, device="cpu")
    model.family = EncoderOnly(model.net)
    rows = []
    for (h, w), s in cases:
        seen = []
        hook = model.net.encoder.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[-2:].numel()))
        try:
            image = np.full((h, w), 0.5, np.float32)
            fld = model.encode(image, window_px=window_px)
            fld.block = block or fld.block
            fld.render(shape=(h * s, w * s))
        finally:
            hook.remove()
        rows.append(((h, w), s, sum(seen) / (h * w)))
    return rows


def print_encoder_work() -> None:
    from napari_liif.field import CPU_BLOCK, GPU_BLOCK
    from napari_liif.latents import GPU_WINDOW_PX, WINDOW_PX

    print()
    print("encoder work of whole-image renders (input pixels through the encoder per input pixel, halos "
          "included; the default model's geometry, 1 GiB cache) ...", flush=True)
    cpu, gpu = encoder_work(WINDOW_PX, CPU_BLOCK), encoder_work(GPU_WINDOW_PX, GPU_BLOCK)
    for (shape, s, a), (_, _, b) in zip(cpu, gpu):
        print(f"  {shape[0]}x{shape[1]} x{s}: {a:.2f}x with the CPU's windows (2^17 px: one 256-px tile each), "
              f"{b:.2f}x with a GPU's (2^21 px)")


# ---------------------------------------------------------------------------------------
# The big run, in a subprocess
# ---------------------------------------------------------------------------------------

def big_child(args) -> None:
    """Upscale a big x big RGB image x2 in fp32; print wall time and peak RSS as JSON."""
    m32, _, _ = build_models(args)
    image, _ = test_image(args.big)
    t = time.perf_counter()
    out = m32.encode(image).render(shape=(2 * args.big, 2 * args.big))
    wall = time.perf_counter() - t
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux
    print(json.dumps({"wall_s": wall, "peak_rss_bytes": peak_kb * 1024, "out_shape": list(out.shape),
                      "out_mean": float(out.mean())}))


def big_run(args) -> dict:
    cmd = [sys.executable, __file__, "--big-child", "--big", str(args.big)]
    if args.checkpoint:
        cmd += ["--checkpoint", str(args.checkpoint)]
    if args.random:
        cmd += ["--random"]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"the big run failed:\n{res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------

def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    ap.add_argument("--skip-big", action="store_true", help="leave out the 2048x2048 x2 run")
    ap.add_argument("--skip-families", action="store_true",
                    help="leave out the straightforward / exact LIIF / LM-LIIF table at x2, x4, x8")
    ap.add_argument("--skip-encoder-work", action="store_true",
                    help="leave out the count of encoder pixels for wide, tall and square images (~5 min)")
    ap.add_argument("--size", type=int, help="input side (default 256, 96 with --quick)")
    ap.add_argument("--scale", type=int, default=2, help="integer upscaling factor (default 2)")
    ap.add_argument("--repeats", type=int, help="runs of each measurement, best kept (default 3)")
    ap.add_argument("--big", type=int, help="input side of the big run (default 2048, 512 with --quick)")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    ap.add_argument("--cpu-time", action="store_true",
                    help="time with process CPU time instead of wall-clock: with --threads 1, a "
                         "measure that other processes on a busy machine barely disturb")
    ap.add_argument("--checkpoint", help="model file (default: the bundled one, else a random init)")
    ap.add_argument("--random", action="store_true", help="use a random init even if weights are bundled")
    ap.add_argument("--big-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.big = args.big or (512 if args.quick else 2048)
    if args.big_child:
        big_child(args)
        return
    global clock
    if args.cpu_time:
        if args.threads != 1:
            ap.error("--cpu-time needs --threads 1 (process CPU time adds up all threads)")
        clock = time.process_time
    n = args.size or (96 if args.quick else 256)
    repeats = args.repeats or (2 if args.quick else 3)
    s = args.scale

    print("napari-liif decoder benchmark")
    print(f"machine: {machine()}")
    busy = other_load()
    print(f"other busy processes: {busy}")
    if busy != "none" and os.environ.get("OMP_WAIT_POLICY", "").lower() != "passive" and torch.get_num_threads() > 1:
        print("  note: on a shared CPU, OpenMP threads that spin while waiting slow short parallel operations "
              "(ours more than the straightforward path's long ones); OMP_WAIT_POLICY=PASSIVE or --threads 1 "
              "measure what the code itself does")
    m32, m16, desc = build_models(args)
    if not (m32.net.local_ensemble and m32.net.feat_unfold and m32.net.cell_decode):
        raise SystemExit("the straightforward path implements the official switches only "
                         "(local_ensemble, feat_unfold and cell_decode all on)")
    image, img_name = test_image(n)
    out_hw = (n * s, n * s)
    npx = out_hw[0] * out_hw[1]
    print(f"model: {desc}")
    print(f"input: {img_name}, {n}x{n} RGB -> output {out_hw[0]}x{out_hw[1]} (x{s}), {npx:,} pixels; "
          f"best of {repeats} runs, interleaved; clock: {'process CPU time' if args.cpu_time else 'wall'}")

    mm_n = 1024 if args.quick else 2048
    peak = {"fp32": matmul_peak(torch.float32, mm_n, 3), "bf16": matmul_peak(torch.bfloat16, mm_n, 3)}
    fused = {k: fused_linear_peak(dt, 5) for k, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16))}
    print(f"matmul peak (torch.matmul {mm_n}^3): fp32 {peak['fp32']:.0f} GFLOP/s, bf16 {peak['bf16']:.0f} GFLOP/s; "
          f"the decoder's own kernel (linear_relu, 16384x256x256): fp32 {fused['fp32']:.0f}, "
          f"bf16 {fused['bf16']:.0f} GFLOP/s")

    best: dict[str, float] = {}
    outs: dict[str, np.ndarray] = {}

    def keep(key, seconds):
        best[key] = min(best.get(key, float("inf")), seconds)

    for _ in range(repeats):
        out, t_enc, t_dec = straightforward_upscale(m32.net, image, out_hw)
        keep("ref_dec", t_dec)
        keep("ref_e2e", t_enc + t_dec)
        outs["ref"] = out
        for prec, model in (("fp32", m32), ("bf16", m16)):
            t = clock()
            field = model.encode(image)
            outs[prec] = field.render(shape=out_hw)
            keep(f"{prec}_e2e", clock() - t)
            keep(f"{prec}_dec", _timed(lambda: field.render(shape=out_hw)))

    net = m32.net
    full, tail, proj = decoder_macs(net)
    enc = encoder_macs_per_pixel(net)
    in_per_out = (n * n) / npx
    macs = {"ref_dec": full, "ref_e2e": full + enc * in_per_out,
            "dec": tail, "e2e": tail + (proj + enc) * in_per_out}
    rows = [("straightforward fp32", "decoder: unfold + 30k-query batches", "ref_dec", "ref_dec", "fp32"),
            ("ours fp32", "decoder, latent tiles cached", "fp32_dec", "dec", "fp32"),
            ("ours bf16", "decoder, latent tiles cached", "bf16_dec", "dec", "bf16"),
            ("straightforward fp32", "end to end (encoder untiled)", "ref_e2e", "ref_e2e", "fp32"),
            ("ours fp32", "end to end (encode + render)", "fp32_e2e", "e2e", "fp32"),
            ("ours bf16", "end to end (encode + render)", "bf16_e2e", "e2e", "bf16")]
    print()
    head = f"{'path':<21} {'timed':<37} {'px/s':>9} {'x ref':>6} {'MMAC/px':>8} {'GFLOP/s':>8} {'% peak':>7}"
    print(head)
    print("-" * len(head))
    for name, what, key, mkey, dt in rows:
        ref_key = "ref_dec" if key.endswith("dec") else "ref_e2e"
        pps = npx / best[key]
        gflops = pps * 2 * macs[mkey] / 1e9
        print(f"{name:<21} {what:<37} {pps:>9,.0f} {best[ref_key] / best[key]:>6.2f} "
              f"{macs[mkey] / 1e6:>8.3f} {gflops:>8.1f} {100 * gflops / peak[dt]:>6.1f}%")
    print()
    print("MMAC/px: matrix-product multiply-adds per output pixel. Straightforward: 4 MLP passes "
          f"({full / 1e6:.3f} M). Ours: 4 passes of the hidden and output layers ({tail / 1e6:.3f} M), "
          f"plus end to end the first layer's feature part once per latent ({proj / 1e3:.0f} k per latent) "
          f"and the encoder ({enc / 1e6:.3f} M per input pixel), divided by {1 / in_per_out:g} output "
          "pixels per input pixel. % peak is against the torch.matmul peak of the path's own dtype; in fp32 "
          "torch.matmul goes to MKL, while our path's fused oneDNN kernel can run faster than that.")
    ref_pps = npx / best["ref_dec"]
    hidden = (4 if net.local_ensemble else 1) * sum(lin.in_features * lin.out_features
                                                     for lin in net.imnet.linears[1:-1])
    ceil = {k: fused[k] * 1e9 / (2 * hidden) for k in fused}  # the hidden layers only
    print(f"ceiling of an exact decoder: its hidden layers alone at the kernel's speed, nothing else: fp32 "
          f"{ceil['fp32']:,.0f} px/s ({ceil['fp32'] / ref_pps:.2f}x ref), bf16 {ceil['bf16']:,.0f} px/s "
          f"({ceil['bf16'] / ref_pps:.2f}x ref); ours reaches {npx / best['fp32_dec'] / ceil['fp32']:.0%} and "
          f"{npx / best['bf16_dec'] / ceil['bf16']:.0%} of it")
    print(f"bf16 cost: PSNR of bf16 output against fp32 output {psnr(outs['bf16'], outs['fp32']):.1f} dB "
          f"(max abs difference {np.abs(outs['bf16'] - outs['fp32']).max():.4f} on [0, 1])")
    print(f"check: ours fp32 vs straightforward, max abs difference "
          f"{2 * np.abs(outs['fp32'] - outs['ref']).max():.1e} on the [-1, 1] scale")

    if not (args.quick or args.skip_encoder_work):
        print_encoder_work()

    if not (args.quick or args.skip_families):
        from families import families_table

        families_table(straightforward_upscale, peak["fp32"], repeats)

    if not args.skip_big:
        print()
        print(f"big run: {args.big}x{args.big} RGB x2 end to end, fp32, in a subprocess ...", flush=True)
        big = big_run(args)
        gb = big["peak_rss_bytes"] / 1e9
        print(f"big run: {args.big}x{args.big} -> {big['out_shape'][0]}x{big['out_shape'][1]} in "
              f"{big['wall_s']:.1f} s ({big['out_shape'][0] * big['out_shape'][1] / big['wall_s']:,.0f} px/s), "
              f"peak resident memory {gb:.2f} GB (target < 4 GB: {'met' if gb < 4 else 'MISSED'})")


if __name__ == "__main__":
    main()
