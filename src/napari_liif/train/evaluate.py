"""PSNR/SSIM of a model against bicubic interpolation on held-out images."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .. import flux
from ..intensity import IntensityMap
from ..local_means import keep_local_means
from .metrics import background_noise_gain, dark_floor, mean_bias, psnr, psnr_lowpass, ssim
from .patches import downsample

EVAL_SCALES = (2, 3, 4, 6, 12)


def load_images(folder: str | Path, crop: int | None = 240, limit: int | None = None) -> list[np.ndarray]:
    """RGB float images in [0, 1] from a folder, centre-cropped to ``crop`` (divisible by every
    evaluation scale) so that the low-resolution input is exact."""
    from skimage import io as skio

    paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg", ".tif"})
    out = []
    for p in paths[:limit]:
        a = skio.imread(p)
        a = np.stack([a] * 3, -1) if a.ndim == 2 else a[..., :3]
        a = a.astype(np.float32) / (255.0 if a.dtype == np.uint8 else 65535.0)
        if crop:
            h, w = a.shape[:2]
            c = min(crop, h, w)
            c -= c % 12
            a = a[(h - c) // 2:(h - c) // 2 + c, (w - c) // 2:(w - c) // 2 + c]
        out.append(a)
    return out


def bicubic_upscale(lr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(lr)).permute(2, 0, 1)[None]
    up = F.interpolate(t, size=size, mode="bicubic", align_corners=False).clamp(0, 1)
    return up[0].permute(1, 2, 0).numpy()


def make_lr(hr: np.ndarray, scale: int) -> np.ndarray:
    h, w = hr.shape[:2]
    t = torch.from_numpy(np.ascontiguousarray(hr)).permute(2, 0, 1)
    return downsample(t, (h // scale, w // scale)).permute(1, 2, 0).numpy()


def _score(acc: dict, pred, base, hr, lr, s: int, with_ssim: bool, norm=(0.0, 1.0)) -> None:
    """Append one image's figures to ``acc``; PSNR/SSIM on ``(x - lo) / span`` with ``norm = (lo, span)``."""
    sh = math.ceil(s) + 6
    lo, span = norm
    p, b, t = ((x - lo) / span for x in (pred, base, hr))
    acc["liif_psnr"].append(psnr(p, t, sh))
    acc["bicubic_psnr"].append(psnr(b, t, sh))
    if with_ssim:
        acc["liif_ssim"].append(ssim(p, t, sh))
        acc["bicubic_ssim"].append(ssim(b, t, sh))
    acc["liif_bias_pct"].append(100 * mean_bias(pred, lr))
    acc["bicubic_bias_pct"].append(100 * mean_bias(base, lr))
    acc["noise_gain"].append(background_noise_gain(pred, base, hr, s, shave=sh))


def _score_floor(acc: dict, pred, base, hr, lr, s, norm, clean=None) -> None:
    """The low-passed PSNR and the dark floor of one scene (generated scenes: data units, ``norm`` as in
    :func:`_score`). Floors compare the output's interior (``ceil(s) + 6`` px shaved) with the input's
    interior (the same extent, in input pixels), in percent of the input's range; ``ref_floor_pct`` is the
    clean target's, where the scene has one (else the reference's): what a perfect model would give."""
    sh = math.ceil(s) + 6
    lo, span = norm
    p, b, t = ((x - lo) / span for x in (pred, base, hr))
    acc["liif_psnr_lp"].append(psnr_lowpass(p, t, sh))
    acc["bicubic_psnr_lp"].append(psnr_lowpass(b, t, sh))
    li = math.ceil(sh / s)
    inner_lr = lr[li:-li, li:-li] if min(lr.shape) > 2 * li + 1 else lr

    def inner(x):
        return x[sh:-sh, sh:-sh] if min(x.shape) > 2 * sh + 1 else x

    acc["liif_floor_pct"].append(dark_floor(inner(pred), inner_lr))
    acc["bicubic_floor_pct"].append(dark_floor(inner(base), inner_lr))
    acc["ref_floor_pct"].append(dark_floor(inner(hr if clean is None else clean), inner_lr))


def _rows(per_scale: dict) -> list[dict]:
    rows = []
    for key, acc in per_scale.items():
        kind, s = key if isinstance(key, tuple) else (None, key)
        row = {"scale": s, **({"kind": kind} if kind else {}), **{k: float(np.mean(v)) for k, v in acc.items() if v}}
        row["gain_db"] = row["liif_psnr"] - row["bicubic_psnr"]
        if "liif_psnr_lp" in row:
            row["gain_lp_db"] = row["liif_psnr_lp"] - row["bicubic_psnr_lp"]
        rows.append(row)
    return rows


def _new_acc() -> dict:
    keys = ("liif_psnr", "bicubic_psnr", "liif_ssim", "bicubic_ssim", "liif_bias_pct", "bicubic_bias_pct",
            "noise_gain", "liif_psnr_lp", "bicubic_psnr_lp", "liif_floor_pct", "bicubic_floor_pct", "ref_floor_pct")
    return {k: [] for k in keys}


def evaluate(model, images: list[np.ndarray], scales=EVAL_SCALES, with_ssim: bool = True,
             cell: str = "on", preserve_flux: bool = False) -> list[dict]:
    """Per scale, the mean over images of: PSNR (and SSIM) of LIIF and bicubic, border of scale + 6
    pixels shaved as in the official DIV2K evaluation; the mean-intensity bias of each against the
    input (``liif_bias_pct``, ``bicubic_bias_pct``: percent); the background noise gain of LIIF over
    bicubic (:func:`~napari_liif.train.metrics.background_noise_gain`). ``preserve_flux`` corrects
    LIIF's output first (:func:`correct_flux`: "local" keeps local means, True is exact)."""
    per_scale = {}
    for s in scales:
        acc = per_scale[s] = _new_acc()
        for hr in images:
            h, w = hr.shape[:2]
            h, w = h - h % s, w - w % s
            hr = hr[:h, :w]
            lr = make_lr(hr, s)
            pred = model.encode(lr).render(shape=(h, w), cell=cell)
            if preserve_flux:
                pred = correct_flux(pred, lr, preserve_flux)
            _score(acc, pred, bicubic_upscale(lr, (h, w)), hr, lr, s, with_ssim)
    return _rows(per_scale)


def correct_flux(pred: np.ndarray, lr: np.ndarray, how) -> np.ndarray:
    """``pred`` corrected as ``upscale(..., preserve_flux=how)`` corrects: ``"local"`` keeps local
    means (:func:`napari_liif.local_means.keep_local_means`), anything else true is exact."""
    return keep_local_means(pred, lr) if how == "local" else flux.preserve_flux(pred, lr)


def upscale_gray(model, lr: np.ndarray, size: tuple[int, int], cell: str = "on") -> np.ndarray:
    """A gray image upscaled by :func:`napari_liif.upscale` (its intensity map and all, as a user gets
    it), in float64 data units."""
    from ..api import upscale

    return upscale(np.asarray(lr, np.float64), size=tuple(size), model=model, cell=cell)


def bicubic_gray(lr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bicubic upscaling of a gray image through the same intensity map, clamped to its range."""
    imap = IntensityMap.fit(np.asarray(lr, np.float64))
    u = imap.forward(lr)
    return imap.inverse(bicubic_upscale(np.stack([u] * 3, -1), size).mean(-1))


def evaluate_scenes(model, scenes: list[dict], with_ssim: bool = True, cell: str = "on",
                    preserve_flux: bool = False) -> list[dict]:
    """As :func:`evaluate`, on generated microscopy scenes (``napari_liif.train.microscopy``): each a
    dict with ``lr`` (the camera's 16-bit image), ``hr`` (the clean target, same units) and ``scale``
    (fractional scales too: the border shaved is ceil(scale) + 6). PSNR and SSIM are computed after
    mapping the target's range to [0, 1].

    Rows come per scale, or per (``kind``, scale) where the scenes carry a ``kind`` (the held-out
    sets of :func:`napari_liif.train.microscopy.held_out_scenes`). Besides :func:`evaluate`'s figures:
    PSNR of the low-passed output against the low-passed reference (``liif_psnr_lp``, ``bicubic_psnr_lp``,
    ``gain_lp_db``; :func:`~napari_liif.train.metrics.psnr_lowpass`) and the dark floor of the output,
    of bicubic and of the clean target (``*_floor_pct``; :func:`~napari_liif.train.metrics.dark_floor`).
    ``hr`` is the reference (noisy for ``binned`` scenes), ``clean`` (optional) the clean target."""
    per_scale: dict = {}
    order = {"legacy": 0, "drawn": 1, "low": 2, "noisy": 3, "binned": 4}
    for sc in sorted(scenes, key=lambda d: (order.get(d.get("kind"), 5), d["scale"])):
        s, hr = float(sc["scale"]), np.asarray(sc["hr"], np.float64)
        s = int(s) if s.is_integer() else s
        lr = np.asarray(sc["lr"], np.float64)
        pred = upscale_gray(model, lr, hr.shape, cell)
        if preserve_flux:
            pred = correct_flux(pred, lr, preserve_flux)
        base = bicubic_gray(lr, hr.shape)
        norm = (float(hr.min()), float(hr.max() - hr.min()) or 1.0)
        acc = per_scale.setdefault((sc["kind"], s) if sc.get("kind") else s, _new_acc())
        _score(acc, pred, base, hr, lr, s, with_ssim, norm)
        _score_floor(acc, pred, base, hr, lr, s, norm, sc.get("clean"))
    return _rows(per_scale)


def format_floor_table(rows: list[dict]) -> str:
    """Markdown table of the generated scenes' honesty figures: PSNR gain over bicubic against the
    reference and against the low-passed reference, mean bias, dark floor (output, bicubic, clean
    target; percent of the input's range above the input's 1st percentile) and background noise gain."""
    head = ("| set | scale | gain dB | low-passed: LIIF PSNR | bicubic | gain dB | LIIF bias % | LIIF floor % | "
            "bicubic floor % | clean floor % | noise gain |\n|---|---|---|---|---|---|---|---|---|---|---|")
    body = [f"| {r.get('kind', '')} | x{r['scale']} | {r['gain_db']:+.2f} | {r['liif_psnr_lp']:.2f} | "
            f"{r['bicubic_psnr_lp']:.2f} | {r['gain_lp_db']:+.2f} | {r['liif_bias_pct']:+.3f} | "
            f"{r['liif_floor_pct']:+.3f} | {r['bicubic_floor_pct']:+.3f} | {r['ref_floor_pct']:+.3f} | "
            f"{r['noise_gain']:.2f}x |" for r in rows]
    return "\n".join([head, *body])


def format_table(rows: list[dict]) -> str:
    """Markdown table: PSNR, gain, SSIM, mean bias (percent, against the input) and background noise gain."""
    nan = float("nan")
    head = ("| scale | LIIF PSNR | bicubic PSNR | gain dB | LIIF SSIM | bicubic SSIM | LIIF bias % | "
            "bicubic bias % | noise gain |\n|---|---|---|---|---|---|---|---|---|")
    body = [f"| {r['kind'] + ' ' if 'kind' in r else ''}x{r['scale']} | {r['liif_psnr']:.2f} | "
            f"{r['bicubic_psnr']:.2f} | {r['gain_db']:+.2f} | "
            f"{r.get('liif_ssim', nan):.4f} | {r.get('bicubic_ssim', nan):.4f} | "
            f"{r.get('liif_bias_pct', nan):+.3f} | {r.get('bicubic_bias_pct', nan):+.3f} | "
            f"{r.get('noise_gain', nan):.2f}x |" for r in rows]
    return "\n".join([head, *body])
