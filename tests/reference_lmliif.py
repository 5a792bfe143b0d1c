"""A slow, obvious LM-LIIF (He and Jin, CVPR 2024) written straight from its equations.

float64 NumPy; it never imports ``napari_liif.models.lmliif`` or the engine. From the model
it borrows only weights: the encoder's latents (``reference_liif.encode``) and the matrices
of the two MLPs. The geometry helpers (pixel centres, nearest lookup, 3x3 unfolding,
bilinear border sampling) are those of the LIIF reference, which is equally independent.

For a query x_q and each of the four latents z_t around it::

    m_t        = H( [ unfold(z)_t , cell * (h, w) ] )          latent MLP, once per latent
    scale_k, shift_k, u_t = split(m_t)                         depth*d, depth*d, d
    a_0        = [ u_t (or z_t itself without mod_input), (x_q - v_t) * (h, w), cell * (h, w) ]
    a_k        = relu( (W_k a_{k-1} + b_k) * (1 + scale_k) + shift_k )   k = 1..depth
    f_t        = W_out a_depth + b_out
    I(x_q)     = sum_t  S_opposite(t) / S * f_t     (+ bilinear input with the residual)
"""

from __future__ import annotations

import numpy as np

import reference_liif as R


def linears(module) -> list[tuple[np.ndarray, np.ndarray]]:
    return R.mlp_weights(module)


def latent_mlp(layers, x: np.ndarray) -> np.ndarray:
    """Linear, ReLU, ..., Linear (no activation at the end)."""
    return R.mlp(layers, x)


def render_mlp(layers, x: np.ndarray, scale, shift) -> np.ndarray:
    """The modulated MLP: every layer but the last is modulated, then ReLU'd.
    x (N, in); scale/shift (N, depth, d) or None."""
    for k, (w, b) in enumerate(layers[:-1]):
        x = x @ w.T + b
        if scale is not None:
            x = x * (1.0 + scale[:, k, :])
        if shift is not None:
            x = x + shift[:, k, :]
        x = np.maximum(x, 0.0)
    w, b = layers[-1]
    return x @ w.T + b


def query(z: np.ndarray, hyper, render, coord: np.ndarray, cell, *, hidden_dim: int, hidden_depth: int,
          local_ensemble=True, feat_unfold=True, cell_decode=True, mod_input=True, mod_scale=True,
          mod_shift=True, image: np.ndarray | None = None) -> np.ndarray:
    """LM-LIIF values at ``coord`` (N, 2) on the [-1, 1] scale: (N, out).

    ``z`` (C, h, w) latents; ``hyper``/``render`` the (weight, bias) lists of the latent and
    render MLPs; ``cell`` a single (cell_y, cell_x) in [-1, 1] units (one render, one cell);
    ``image`` (3, H, W) on [-1, 1] switches the bilinear residual on.
    """
    coord = np.asarray(coord, np.float64)
    c, h, w = z.shape
    d, depth = hidden_dim, hidden_depth
    feat = (R.unfold3x3(z) if feat_unfold else z).transpose(1, 2, 0)  # (h, w, C')
    rel_cell = np.array([cell[0] * h, cell[1] * w], np.float64)
    hin = feat.reshape(h * w, -1)
    if cell_decode:
        hin = np.concatenate([hin, np.tile(rel_cell, (h * w, 1))], 1)
    mods = latent_mlp(hyper, hin).reshape(h, w, -1)  # one row of modulations per latent
    n = d * depth
    shifts, eps = ([(-1, -1), (-1, 1), (1, -1), (1, 1)], 1e-6) if local_ensemble else ([(0, 0)], 0.0)
    preds, areas = [], []
    for vy, vx in shifts:
        qy = np.clip(coord[:, 0] + vy / h + eps, -1 + 1e-6, 1 - 1e-6)
        qx = np.clip(coord[:, 1] + vx / w + eps, -1 + 1e-6, 1 - 1e-6)
        iy, ix = R.nearest(qy, h), R.nearest(qx, w)
        m = mods[iy, ix]
        scale = m[:, :n].reshape(-1, depth, d) if mod_scale else None
        shift = m[:, n:2 * n].reshape(-1, depth, d) if mod_shift else None
        u = m[:, 2 * n:2 * n + d] if mod_input else z[:, iy, ix].T
        rel_y = (coord[:, 0] - R.pixel_centre(iy, h)) * h
        rel_x = (coord[:, 1] - R.pixel_centre(ix, w)) * w
        parts = [u, rel_y[:, None], rel_x[:, None]]
        if cell_decode:
            parts.append(np.tile(rel_cell, (len(coord), 1)))
        preds.append(render_mlp(render, np.concatenate(parts, 1), scale, shift))
        areas.append(np.abs(rel_y * rel_x) + 1e-9)
    weights = [areas[3], areas[2], areas[1], areas[0]] if local_ensemble else areas
    total = sum(weights)
    out = sum(p * (a / total)[:, None] for p, a in zip(preds, weights))
    if image is not None:
        out = out + R.bilinear_border(image, coord)
    return out
