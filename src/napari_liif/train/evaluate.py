"""PSNR/SSIM of a model against bicubic interpolation on held-out images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .metrics import psnr, ssim
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


def evaluate(model, images: list[np.ndarray], scales=EVAL_SCALES, with_ssim: bool = True,
             cell: str = "on") -> list[dict]:
    """Mean PSNR (and SSIM) of LIIF and bicubic per scale; border of scale + 6 pixels shaved
    as in the official DIV2K evaluation."""
    rows = []
    for s in scales:
        acc = {"liif_psnr": [], "bicubic_psnr": [], "liif_ssim": [], "bicubic_ssim": []}
        for hr in images:
            h, w = hr.shape[:2]
            h, w = h - h % s, w - w % s
            hr = hr[:h, :w]
            lr = make_lr(hr, s)
            pred = model.encode(lr).render(shape=(h, w), cell=cell)
            base = bicubic_upscale(lr, (h, w))
            sh = s + 6
            acc["liif_psnr"].append(psnr(pred, hr, sh))
            acc["bicubic_psnr"].append(psnr(base, hr, sh))
            if with_ssim:
                acc["liif_ssim"].append(ssim(pred, hr, sh))
                acc["bicubic_ssim"].append(ssim(base, hr, sh))
        row = {"scale": s, **{k: float(np.mean(v)) for k, v in acc.items() if v}}
        row["gain_db"] = row["liif_psnr"] - row["bicubic_psnr"]
        rows.append(row)
    return rows


def format_table(rows: list[dict]) -> str:
    head = "| scale | LIIF PSNR | bicubic PSNR | gain dB | LIIF SSIM | bicubic SSIM |\n|---|---|---|---|---|---|"
    body = [f"| x{r['scale']} | {r['liif_psnr']:.2f} | {r['bicubic_psnr']:.2f} | {r['gain_db']:+.2f} | "
            f"{r.get('liif_ssim', float('nan')):.4f} | {r.get('bicubic_ssim', float('nan')):.4f} |" for r in rows]
    return "\n".join([head, *body])
