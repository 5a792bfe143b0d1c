"""The families side by side, for ``bench_engine.py``: the straightforward (official-style) LIIF
path, our exact LIIF and LM-LIIF, upscaling one 64 x 64 input at x2, x4 and x8 in one run.

Columns: output px/s end to end (encode + decode, the encoder included for every path),
speed-up over the straightforward path and over our exact LIIF, decoder multiply-adds per
output pixel (per-latent work divided by the output pixels each latent serves, s^2), and
the share of the fp32 matmul peak that the decoder's multiply-adds reach.
"""

from __future__ import annotations

import time

import numpy as np
import torch

SIZE = 64
SCALES = (2, 4, 8)


def _best(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def families_table(straightforward_upscale, peak_fp32: float, repeats: int = 2) -> None:
    """Print the table; ``straightforward_upscale(net, image, out_hw)`` is bench_engine's."""
    from napari_liif.bundled import names
    from napari_liif.checkpoint import decoder_macs
    from napari_liif.engine import load_model

    if not {"default", "fast"} <= set(names()):
        print("families: the bundled default and fast models are needed; skipped")
        return
    liif, lm = load_model("default", device="cpu"), load_model("fast", device="cpu")
    image = np.random.default_rng(0).random((SIZE, SIZE, 3)).astype(np.float32)
    print()
    print(f"families, fp32, {SIZE}x{SIZE} RGB input, end to end, best of {repeats}:")
    head = (f"{'scale':>5} {'path':<22} {'px/s':>10} {'x straightf.':>12} {'x exact LIIF':>12} "
            f"{'kMAC/px':>9} {'% peak':>7}")
    print(head)
    print("-" * len(head))
    for s in SCALES:
        out_hw = (SIZE * s, SIZE * s)
        npx = out_hw[0] * out_hw[1]
        t_ref = _best(lambda: straightforward_upscale(liif.net, image, out_hw), 1)
        t_liif = _best(lambda: liif.encode(image).render(shape=out_hw), repeats)
        t_lm = _best(lambda: lm.encode(image).render(shape=out_hw), repeats)
        ml, mm = decoder_macs(liif.net), decoder_macs(lm.net)
        full = ml["per_pixel"] + 4 * liif.net.feat_dim * liif.net.imnet.linears[0].out_features
        rows = [("straightforward LIIF", t_ref, full),
                ("ours, exact LIIF", t_liif, ml["per_pixel"] + ml["per_latent"] / s ** 2),
                ("ours, LM-LIIF (fast)", t_lm, mm["per_pixel"] + mm["per_latent"] / s ** 2)]
        for name, t, macs in rows:
            pps = npx / t
            share = 100 * pps * 2 * macs / (peak_fp32 * 1e9)
            print(f"{'x' + str(s):>5} {name:<22} {pps:>10,.0f} {t_ref / t:>12.1f} {t_liif / t:>12.1f} "
                  f"{macs / 1e3:>9.1f} {share:>6.1f}%")
    print("kMAC/px: decoder multiply-adds per output pixel (straightforward: four full MLP passes; ours: the "
          "per-sample layers plus per-latent work / s^2); the encoder is timed but not counted")


if __name__ == "__main__":
    import bench_engine

    torch.set_num_threads(torch.get_num_threads())
    families_table(bench_engine.straightforward_upscale, bench_engine.matmul_peak(torch.float32, 1024, 3))
