"""A slow, obvious LIIF written straight from the paper's equations (Chen et al., CVPR 2021).

Everything here is float64 NumPy and imports no code of napari_liif. It borrows from the
model only its *weights*: the encoder's state dict, run by the independent EDSR / RDN of
``reference_encoders``, and the matrices of the decoder MLP. The query procedure itself is
written out plainly:

for every query x_q and each of the four latents z_t around it (t = 00, 01, 10, 11)::

    I(x_q) = sum_t  S_t / S * f_theta( [ z_t* , x_q - v_t* , cell ] )

with ``v_t*`` the centre of latent ``z_t*``, relative coordinates and cell measured in units
of the latent grid (multiplied by (h, w)), ``S_t`` the area of the rectangle between x_q and
the latent diagonally opposite to t, and ``S`` the sum of the four areas. ``z*`` is the 3x3
neighbourhood of the latent (zero-padded, channel-major) when features are unfolded.
"""

from __future__ import annotations

import numpy as np
import torch

import reference_encoders as E


def to_input(image01: np.ndarray) -> np.ndarray:
    """(H, W, 3) image in [0, 1] -> (3, H, W) float64 on LIIF's [-1, 1] scale."""
    return (np.asarray(image01, np.float64).transpose(2, 0, 1) - 0.5) / 0.5


def encoder_weights(encoder: torch.nn.Module) -> dict[str, np.ndarray]:
    """The encoder's state dict as float64 arrays (name -> array)."""
    return {k: v.detach().double().numpy() for k, v in encoder.state_dict().items()}


def encode(encoder_spec: dict, weights: dict[str, np.ndarray], image01: np.ndarray) -> np.ndarray:
    """Latent grid z of an (H, W, 3) image in [0, 1] by the reference encoder of ``encoder_spec``
    (the spec's ``{'name', 'args'}``) with ``weights`` from ``encoder_weights``: float64 (C, H, W)."""
    return E.encode(encoder_spec, weights, to_input(image01))


def encode_net(net: torch.nn.Module, spec: dict, image01: np.ndarray) -> np.ndarray:
    """``encode`` with the encoder spec and weights of a LIIF / LM-LIIF network built from ``spec``."""
    return encode(spec["args"]["encoder_spec"], encoder_weights(net.encoder), image01)


def mlp_weights(imnet: torch.nn.Module) -> list[tuple[np.ndarray, np.ndarray]]:
    """(weight, bias) of every nn.Linear of the decoder, in order, as float64 arrays."""
    return [(m.weight.detach().double().numpy(), m.bias.detach().double().numpy())
            for m in imnet.modules() if isinstance(m, torch.nn.Linear)]


def mlp(layers: list[tuple[np.ndarray, np.ndarray]], x: np.ndarray) -> np.ndarray:
    """f_theta: Linear, ReLU, ..., Linear."""
    for i, (w, b) in enumerate(layers):
        x = x @ w.T + b
        if i < len(layers) - 1:
            x = np.maximum(x, 0.0)
    return x


def pixel_centre(i, n: int):
    """Centre of pixel (or latent) i of n along an axis spanning [-1, 1]."""
    return -1.0 + (2.0 * np.asarray(i, np.float64) + 1.0) / n


def nearest(c: np.ndarray, n: int) -> np.ndarray:
    """Index picked by nearest-neighbour sampling (grid_sample, align_corners=False) of an
    axis of n samples at coordinate c: pixel position ((c + 1) n - 1) / 2, rounded half to even."""
    p = ((c + 1.0) * n - 1.0) / 2.0
    return np.clip(np.rint(p), 0, n - 1).astype(np.int64)


def unfold3x3(z: np.ndarray) -> np.ndarray:
    """(C, h, w) -> (9 C, h, w): each latent followed by its 3x3 neighbours, zero outside the
    grid, ordered channel-major: output channel c * 9 + k, k = 3 (dy + 1) + (dx + 1)."""
    c, h, w = z.shape
    out = np.zeros((c, 9, h, w))
    for k, (dy, dx) in enumerate((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)):
        for y in range(h):
            for x in range(w):
                yy, xx = y + dy, x + dx
                if 0 <= yy < h and 0 <= xx < w:
                    out[:, k, y, x] = z[:, yy, xx]
    return out.reshape(c * 9, h, w)


def bilinear_border(image: np.ndarray, coord: np.ndarray) -> np.ndarray:
    """Bilinear interpolation of a (3, H, W) image at (N, 2) coordinates, positions outside the
    pixel-centre range clamped to the border (border padding, align_corners=False): (N, 3)."""
    _, hh, ww = image.shape
    py = np.clip(((coord[:, 0] + 1.0) * hh - 1.0) / 2.0, 0, hh - 1)
    px = np.clip(((coord[:, 1] + 1.0) * ww - 1.0) / 2.0, 0, ww - 1)
    out = np.zeros((len(coord), 3))
    for q in range(len(coord)):
        y0, x0 = int(np.floor(py[q])), int(np.floor(px[q]))
        y1, x1 = min(y0 + 1, hh - 1), min(x0 + 1, ww - 1)
        ty, tx = py[q] - y0, px[q] - x0
        out[q] = ((1 - ty) * (1 - tx) * image[:, y0, x0] + (1 - ty) * tx * image[:, y0, x1]
                  + ty * (1 - tx) * image[:, y1, x0] + ty * tx * image[:, y1, x1])
    return out


def query(z: np.ndarray, layers, coord: np.ndarray, cell: np.ndarray | None = None, *,
          local_ensemble: bool = True, feat_unfold: bool = True, cell_decode: bool = True,
          image: np.ndarray | None = None, opposite_area: bool = True) -> np.ndarray:
    """LIIF values at ``coord`` (N, 2) in [-1, 1] (row, col), on the [-1, 1] scale: (N, out).

    ``z`` (C, h, w) latents from ``encode``; ``layers`` from ``mlp_weights``; ``cell`` (N, 2)
    the size of the output pixel in [-1, 1] units; ``image`` (3, H, W) from ``to_input``
    switches on the bilinear global residual. ``opposite_area=False`` weights each prediction
    by its own area instead: wrong, and there only to show that the comparison can fail.
    """
    coord = np.asarray(coord, np.float64)
    _, h, w = z.shape
    feat = unfold3x3(z) if feat_unfold else z
    feat = np.ascontiguousarray(feat.transpose(1, 2, 0))  # (h, w, C): one latent vector per row
    if local_ensemble:
        # the four latents around the query: move the query half a latent up/down and
        # left/right (1/h, 1/w in [-1, 1] units), with a tiny push off exact ties
        shifts, eps = [(-1, -1), (-1, 1), (1, -1), (1, 1)], 1e-6
    else:
        shifts, eps = [(0, 0)], 0.0
    preds, areas = [], []
    for vy, vx in shifts:
        qy = np.clip(coord[:, 0] + vy / h + eps, -1 + 1e-6, 1 - 1e-6)
        qx = np.clip(coord[:, 1] + vx / w + eps, -1 + 1e-6, 1 - 1e-6)
        iy, ix = nearest(qy, h), nearest(qx, w)
        rel_y = (coord[:, 0] - pixel_centre(iy, h)) * h
        rel_x = (coord[:, 1] - pixel_centre(ix, w)) * w
        parts = [feat[iy, ix], rel_y[:, None], rel_x[:, None]]
        if cell_decode:
            parts += [cell[:, :1] * h, cell[:, 1:] * w]
        preds.append(mlp(layers, np.concatenate(parts, 1)))
        areas.append(np.abs(rel_y * rel_x) + 1e-9)
    if local_ensemble and opposite_area:
        # the prediction of latent t is weighted by the area spanned with the opposite latent
        opposite = {0: 3, 1: 2, 2: 1, 3: 0}
        weights = [areas[opposite[t]] for t in range(4)]
    else:
        weights = areas
    total = sum(weights)
    out = sum(p * (a / total)[:, None] for p, a in zip(preds, weights))
    if image is not None:
        out = out + bilinear_border(image, coord)
    return out


def grid_coords(region, shape, image_shape) -> np.ndarray:
    """Coordinates in [-1, 1] of the centres of a ``shape`` grid laid over ``region``
    (top, left, bottom, right, in input pixel-edge units) of an image of ``image_shape``: (N, 2)."""
    (top, left, bottom, right), (rows, cols), (hh, ww) = region, shape, image_shape
    y = top + (np.arange(rows) + 0.5) * (bottom - top) / rows
    x = left + (np.arange(cols) + 0.5) * (right - left) / cols
    yy, xx = np.meshgrid(-1 + 2 * y / hh, -1 + 2 * x / ww, indexing="ij")
    return np.stack([yy.ravel(), xx.ravel()], 1)
