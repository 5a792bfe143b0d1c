"""Fluorescence-like scenes seen through a microscope and a camera: data for the microscopy model.

One scene, step by step (all lengths in high-resolution (HR) camera pixels):

1. **Fluorophore density** on a fine grid (``SUPERSAMPLE`` points per HR pixel and axis), built from
   any mix of: nuclei (lobed discs with chromatin texture), filaments (persistent random curves,
   thinner than the optics resolve), membranes (cell outlines), puncta (point-like vesicles) and
   textured cytoplasm, over a dim, slowly varying autofluorescence. Each kind comes in several
   densities, sizes and brightness levels drawn per scene.
2. **Optics**: convolution with a point-spread function, an in-focus Airy pattern (widefield) or a
   Gaussian, of full width at half maximum 1.4-3.4 HR pixels (Nyquist-sampled to oversampled at HR).
3. **Camera area integration**: each HR pixel records the mean of the blurred density over its area
   (the mean of its ``SUPERSAMPLE**2`` fine points), times ``photons`` (expected photons per HR pixel at
   density 1): the clean HR photon flux.
4. **The low-resolution (LR) camera** has pixels ``s`` times larger: each collects the flux over its
   whole area (``s**2`` times the area average of the HR flux; exact fractional overlaps when ``s`` is not
   an integer), and only then is the noise drawn, once per LR pixel, as a real sensor does:
   ``electrons = Poisson(photons) + Normal(0, read_noise)``, ``ADU = round(offset + gain * electrons)``,
   clipped to 0..65535 and stored as uint16. (Binning noisy HR pixels instead would count the read
   noise ``s**2`` times.)
5. **The target** is the clean HR image in the LR image's units: ``offset + gain * s**2 * flux_hr``. Its
   area average over each LR pixel is exactly that pixel's expected (noise-free) value, so a model that
   learns it learns to upscale without reproducing the noise, and keeps the input's intensities.

Scenes are reproducible from their seed: :data:`HELD_OUT_SEEDS` are never used for training
(training draws from a separate seed sequence). ``python -m napari_liif.train.microscopy OUT`` writes
the held-out scenes as 16-bit TIFFs.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from ..flux import area_average

SUPERSAMPLE = 2  # fine points per HR pixel and axis
KINDS = ("nuclei", "filaments", "membranes", "puncta", "cytoplasm")
HELD_OUT_SEEDS = tuple(range(8))  # held-out scene k uses np.random.default_rng((13, 1, k)); training (13, 0, ...)
HELD_OUT_SHAPE = (192, 192)
ADU_MAX = 65535
FWHM_RANGE = (0.8, 6.0)  # PSF full width at half maximum, HR pixels (log-uniform)
PHOTON_RANGE = (2.0, 2e5)  # expected photons per HR pixel at density 1 (log-uniform): strong noise to nearly none
NOISELESS_SHARE = 0.15  # share of cameras that record the expected values (rounded), no noise at all


def _training_rng(seed: int, counter: int) -> np.random.Generator:
    return np.random.default_rng((13, 0, int(seed), int(counter)))


# ----------------------------------------------------------------------------------------------
# optics


def airy_kernel(fwhm: float, step: float = 1.0, radius_fwhm: float = 3.0) -> np.ndarray:
    """Normalised in-focus Airy intensity ``(2 J1(v) / v)**2`` sampled at ``step`` (same length unit
    as ``fwhm``), out to ``radius_fwhm`` FWHMs; each sample is the mean of 3 x 3 sub-samples."""
    from scipy.special import j1

    # v = 2 pi NA r / lambda; half maximum at v = 1.6163 (FWHM = 0.514 lambda / NA), first zero at v = 3.8317
    k = 2 * 1.616340 / fwhm
    n = int(math.ceil(radius_fwhm * fwhm / step))
    sub = (np.arange(3) - 1) / 3 * step
    c = np.arange(-n, n + 1) * step
    y = (c[:, None] + sub[None, :]).ravel()
    r = np.hypot(y[:, None], y[None, :])
    v = k * np.where(r == 0, 1e-12, r)
    intensity = (2 * j1(v) / v) ** 2
    kern = intensity.reshape(2 * n + 1, 3, 2 * n + 1, 3).mean(axis=(1, 3))
    return kern / kern.sum()


def gaussian_kernel(fwhm: float, step: float = 1.0, radius_fwhm: float = 2.5) -> np.ndarray:
    """Normalised Gaussian of the given FWHM (sigma = FWHM / 2.3548), sampled at ``step``."""
    sigma = fwhm / (2 * math.sqrt(2 * math.log(2)))
    n = int(math.ceil(radius_fwhm * fwhm / step))
    c = np.arange(-n, n + 1) * step
    g = np.exp(-c ** 2 / (2 * sigma ** 2))
    kern = np.outer(g, g)
    return kern / kern.sum()


def psf_kernel(kind: str, fwhm: float, step: float = 1.0) -> np.ndarray:
    if kind == "airy":
        return airy_kernel(fwhm, step)
    if kind == "gaussian":
        return gaussian_kernel(fwhm, step)
    raise ValueError(f"psf kind must be 'airy' or 'gaussian', got {kind!r}")


# ----------------------------------------------------------------------------------------------
# the fluorophore density


def _smooth_noise(shape, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian-filtered white noise, zero mean, unit standard deviation."""
    from scipy.ndimage import gaussian_filter

    x = gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    return (x - x.mean()) / (x.std() + 1e-12)


def _splat(canvas: np.ndarray, y: np.ndarray, x: np.ndarray, w: np.ndarray) -> None:
    """Add point weights at continuous fine-grid positions (pixel centres at integers), bilinearly."""
    y0, x0 = np.floor(y).astype(np.int64), np.floor(x).astype(np.int64)
    fy, fx = y - y0, x - x0
    h, wd = canvas.shape
    for dy, dx, ww in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx), (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
        yy, xx = y0 + dy, x0 + dx
        ok = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < wd)
        np.add.at(canvas, (yy[ok], xx[ok]), (w * ww)[ok])


def _lobed_shape(dy: np.ndarray, dx: np.ndarray, radius: float, rng) -> tuple[np.ndarray, np.ndarray]:
    """Distance from the centre and the boundary radius of a lobed, elongated disc, per point."""
    r = np.hypot(dy, dx)
    theta = np.arctan2(dy, dx)
    boundary = np.full_like(r, radius)
    elong, phase = rng.uniform(0, 0.25), rng.uniform(0, 2 * np.pi)
    boundary *= 1 + elong * np.cos(2 * (theta - phase))
    for k in (3, 4, 5):
        boundary *= 1 + rng.normal(0, 0.04) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    return r, boundary


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1 + np.tanh(0.5 * x))


@dataclass
class SceneParams:
    kinds: tuple
    psf: str
    fwhm: float  # HR pixels
    background: float
    cell_radius: float  # HR pixels
    cell_cover: float  # fraction of the area
    levels: dict  # brightness per kind
    filament_count: int
    puncta_count: int


def draw_params(rng: np.random.Generator, shape, wide: bool = True) -> SceneParams:
    """Random scene parameters: which structures, how many, how big, how bright, which optics.

    ``wide`` (the default since the second microscopy model): PSF FWHM log-uniform over
    ``FWHM_RANGE`` (sub-pixel to several pixels) and a background that is black (density below
    0.003) in 30 % of the scenes, otherwise log-uniform over 0.005-0.15. ``wide=False`` draws the
    first model's narrower scenes (FWHM 1.4-3.4, background uniform 0-0.06).
    """
    kinds = tuple(k for k in KINDS if rng.random() < 0.45)
    if not kinds:
        kinds = (KINDS[rng.integers(len(KINDS))],)
    area = shape[0] * shape[1]
    psf = "airy" if rng.random() < 0.6 else "gaussian"
    if wide:
        fwhm = float(np.exp(rng.uniform(*np.log(FWHM_RANGE))))
        black = rng.random() < 0.3
        background = float(rng.uniform(0, 0.003) if black else np.exp(rng.uniform(np.log(0.005), np.log(0.15))))
    else:
        fwhm, background = float(rng.uniform(1.4, 3.4)), float(rng.uniform(0.0, 0.06))
    return SceneParams(
        kinds=kinds,
        psf=psf,
        fwhm=fwhm,
        background=background,
        cell_radius=float(np.exp(rng.uniform(np.log(9), np.log(40)))),
        cell_cover=float(rng.uniform(0.15, 0.75)),
        levels={k: float(np.exp(rng.uniform(np.log(0.15), np.log(1.0)))) for k in KINDS},
        filament_count=int(rng.integers(3, 12) * area / 10_000 * np.exp(rng.uniform(0, 1.5))),
        puncta_count=int(rng.integers(5, 40) * area / 10_000 * np.exp(rng.uniform(0, 1.5))),
    )


def _cell_centres(shape, p: SceneParams, rng) -> list[tuple[float, float, float]]:
    """(y, x, radius) of cells, spread out by rejection (cells barely overlap)."""
    h, w = shape
    n = max(1, int(round(p.cell_cover * h * w / (np.pi * p.cell_radius ** 2))))
    cells: list[tuple[float, float, float]] = []
    for _ in range(20 * n):
        if len(cells) >= n:
            break
        rad = p.cell_radius * rng.uniform(0.7, 1.3)
        y, x = rng.uniform(-0.2 * rad, h + 0.2 * rad), rng.uniform(-0.2 * rad, w + 0.2 * rad)
        if all(np.hypot(y - cy, x - cx) > 0.9 * (rad + cr) for cy, cx, cr in cells):
            cells.append((y, x, rad))
    return cells


def density(shape, p: SceneParams, rng: np.random.Generator) -> np.ndarray:
    """Fluorophore density on the fine grid of an HR ``shape`` (``SUPERSAMPLE`` x larger)."""
    ss = SUPERSAMPLE
    fh, fw = shape[0] * ss, shape[1] * ss
    bg = p.background * (1 + 0.4 * _smooth_noise((fh, fw), 30 * ss, rng))
    out = np.clip(bg, 0, None)
    texture = _smooth_noise((fh, fw), rng.uniform(1.0, 3.5) * ss, rng)
    chromatin = _smooth_noise((fh, fw), rng.uniform(0.6, 1.5) * ss, rng)
    # fine-point centres in HR pixel units
    yc, xc = (np.arange(fh) + 0.5) / ss, (np.arange(fw) + 0.5) / ss
    lv = p.levels
    cells = _cell_centres(shape, p, rng) if {"nuclei", "membranes", "cytoplasm"} & set(p.kinds) else []
    for cy, cx, rad in cells:
        reach = 1.6 * rad + 3
        y0, y1 = np.searchsorted(yc, cy - reach), np.searchsorted(yc, cy + reach)
        x0, x1 = np.searchsorted(xc, cx - reach), np.searchsorted(xc, cx + reach)
        if y1 <= y0 or x1 <= x0:
            continue
        dy, dx = yc[y0:y1, None] - cy, xc[None, x0:x1] - cx
        r, edge = _lobed_shape(dy, dx, rad, rng)
        box = out[y0:y1, x0:x1]
        tex = texture[y0:y1, x0:x1]
        bright = rng.uniform(0.5, 1.5)
        if "cytoplasm" in p.kinds:
            box += lv["cytoplasm"] * bright * 0.5 * _sigmoid((edge - r) / 0.7) * np.clip(1 + 0.6 * tex, 0, None)
        if "membranes" in p.kinds:
            width = rng.uniform(0.3, 0.9)
            ring = np.exp(-(r - edge) ** 2 / (2 * width ** 2))
            box += lv["membranes"] * bright * ring * np.clip(1 + 0.4 * tex, 0, None)
        if "nuclei" in p.kinds:
            ny, nx = rng.normal(0, 0.15 * rad, 2)
            nr, nedge = _lobed_shape(dy - ny, dx - nx, rad * rng.uniform(0.35, 0.6), rng)
            chrom = np.clip(1 + 0.5 * chromatin[y0:y1, x0:x1], 0, None)
            box += lv["nuclei"] * bright * _sigmoid((nedge - nr) / 0.5) * chrom
    if "filaments" in p.kinds:
        _add_filaments(out, shape, p, rng)
    if "puncta" in p.kinds:
        n = max(1, p.puncta_count)
        y, x = rng.uniform(0, fh, n) - 0.5, rng.uniform(0, fw, n) - 0.5
        amount = lv["puncta"] * np.exp(rng.normal(np.log(4.0), 0.6, n)) * ss * ss  # per HR pixel area
        _splat(out, y, x, amount)
    return out


def _add_filaments(out: np.ndarray, shape, p: SceneParams, rng) -> None:
    """Persistent random curves as lines of fluorophores (line density per HR pixel of length)."""
    ss = SUPERSAMPLE
    fh, fw = out.shape
    step = 0.5  # fine pixels between points along a filament
    persistence = rng.uniform(20, 200) * ss  # fine pixels
    for _ in range(max(1, p.filament_count)):
        length = rng.uniform(0.2, 1.2) * max(shape) * ss
        n = int(length / step)
        turns = rng.normal(0, math.sqrt(step / persistence), n)
        theta = rng.uniform(0, 2 * np.pi) + np.cumsum(turns)
        y = rng.uniform(0, fh) + np.cumsum(step * np.sin(theta))
        x = rng.uniform(0, fw) + np.cumsum(step * np.cos(theta))
        line = p.levels["filaments"] * rng.uniform(0.8, 2.5)  # per HR pixel of length
        _splat(out, y - 0.5, x - 0.5, np.full(n, line * step * ss))


def blur(fine: np.ndarray, p: SceneParams) -> np.ndarray:
    """The density seen through the PSF (same fine grid; reflecting borders)."""
    from scipy.signal import fftconvolve

    kern = psf_kernel(p.psf, p.fwhm * SUPERSAMPLE)
    m = kern.shape[0] // 2
    padded = np.pad(fine, m, mode="reflect")
    return np.clip(fftconvolve(padded, kern, mode="valid"), 0, None)


def integrate_pixels(fine: np.ndarray) -> np.ndarray:
    """Camera area integration: the mean over each HR pixel's ``SUPERSAMPLE**2`` fine points."""
    ss = SUPERSAMPLE
    h, w = fine.shape[0] // ss, fine.shape[1] // ss
    return fine[:h * ss, :w * ss].reshape(h, ss, w, ss).mean(axis=(1, 3))


def scene(shape, rng: np.random.Generator, params: SceneParams | None = None) -> tuple[np.ndarray, SceneParams]:
    """A clean HR image (float64, arbitrary units: density ~0-1 seen through the optics) and its parameters."""
    p = params or draw_params(rng, shape)
    return integrate_pixels(blur(density(shape, p, rng), p)), p


# ----------------------------------------------------------------------------------------------
# the camera


@dataclass(frozen=True)
class Camera:
    """Photon budget and sensor: ``photons`` expected per HR pixel at scene intensity 1. ``noise``
    False records the expected values, rounded (an ideal, noiseless camera: the clean end of real
    acquisitions, e.g. a bright, long exposure binned further)."""

    photons: float
    gain: float  # ADU per electron
    offset: float  # ADU
    read_noise: float  # electrons rms
    noise: bool = True

    @classmethod
    def random(cls, rng: np.random.Generator, wide: bool = True, photons=None) -> "Camera":
        """Dim to bright samples, sCMOS-like sensors.

        ``wide`` (default): photons log-uniform over ``PHOTON_RANGE`` (2 to 200,000 per HR pixel at
        density 1: from strong shot noise to nearly none), ``NOISELESS_SHARE`` of the cameras
        noiseless, gain log-uniform 0.2-5 ADU/e (``observe`` lowers it where the brightest pixel would
        pass 16 bits), offset 0 in 10 % of the cameras (background-subtracted data, the noise clipped
        at 0), otherwise log-uniform 10-2000 ADU, read noise 0.5-3 e. ``photons=(lo, hi)`` narrows the
        photon range (the held-out low-noise and noisy scenes). ``wide=False``: the first model's
        cameras (photons 4-1000, gain 0.25-4, offset 50-499, read noise 0.8-3, always noisy).
        """
        if not wide:
            return cls(photons=float(np.exp(rng.uniform(np.log(4.0), np.log(1000.0)))),
                       gain=float(np.exp(rng.uniform(np.log(0.25), np.log(4.0)))),
                       offset=float(rng.integers(50, 500)),
                       read_noise=float(rng.uniform(0.8, 3.0)))
        lo, hi = photons or PHOTON_RANGE
        noise = bool(rng.random() >= NOISELESS_SHARE) if photons is None else True
        offset = 0.0 if rng.random() < 0.1 else float(np.rint(np.exp(rng.uniform(np.log(10), np.log(2000)))))
        return cls(photons=float(np.exp(rng.uniform(np.log(lo), np.log(hi)))),
                   gain=float(np.exp(rng.uniform(np.log(0.2), np.log(5.0)))),
                   offset=offset, read_noise=float(rng.uniform(0.5, 3.0)), noise=noise)

    def within_range(self, peak_electrons: float, rng: np.random.Generator | None = None) -> "Camera":
        """This camera, its gain lowered where ``offset + gain * peak_electrons`` would pass 90 % of 16 bits
        (to put the peak at 30-90 % of the range, at random with ``rng``, else at 90 %)."""
        top = 0.9 * ADU_MAX
        if self.offset + self.gain * peak_electrons <= top or peak_electrons <= 0:
            return self
        frac = rng.uniform(0.3, 0.9) if rng is not None else 0.9
        return replace(self, gain=max(frac * ADU_MAX - self.offset, 1.0) / peak_electrons)

    def expose(self, photons: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Record expected photon counts per pixel: Poisson shot noise, Gaussian read noise, gain, offset,
        rounding and clipping to uint16 (noiseless cameras: only gain, offset, rounding, clipping)."""
        if not self.noise:
            return np.clip(np.rint(self.expected(photons)), 0, ADU_MAX).astype(np.uint16)
        electrons = rng.poisson(np.clip(photons, 0, None)) + rng.normal(0, self.read_noise, np.shape(photons))
        return np.clip(np.rint(self.offset + self.gain * electrons), 0, ADU_MAX).astype(np.uint16)

    def expected(self, photons: np.ndarray) -> np.ndarray:
        """The noise-free recorded value (ADU, float64)."""
        return self.offset + self.gain * np.asarray(photons, np.float64)


def observe(clean: np.ndarray, lr_shape, camera: Camera, rng: np.random.Generator) -> dict:
    """What a camera with larger pixels records of the clean HR image, and the training target.

    Returns ``lr`` (uint16, noisy), ``lr_clean`` (float64, expected ADU), ``hr`` (float64 target: the
    clean HR image in the LR units, ``offset + gain * area * flux``) and ``area`` (HR pixels per LR pixel).
    """
    h, w = clean.shape
    area = (h / lr_shape[0]) * (w / lr_shape[1])
    flux_hr = camera.photons * np.asarray(clean, np.float64)
    photons_lr = area * area_average(flux_hr, lr_shape)
    return {"lr": camera.expose(photons_lr, rng), "lr_clean": camera.expected(photons_lr),
            "hr": camera.expected(area * flux_hr), "area": area}


HELD_OUT_KINDS = ("low", "noisy", "binned")
# photons per HR pixel at density 1 of the held-out cameras: low-noise ("low"), strong noise ("noisy"),
# and the HR camera whose noisy image is binned in software ("binned": the reference keeps its noise)
HELD_OUT_PHOTONS = {"low": (2e4, 2e5), "noisy": (2.0, 50.0), "binned": (10.0, 1000.0)}


def held_out_scene(k: int, scale: int, shape=HELD_OUT_SHAPE, tag: int = 1, kind: str = "drawn") -> dict:
    """Held-out scene ``k`` (seed fixed, never trained on) seen at ``scale``: ``lr``, ``hr`` (the
    reference), ``clean`` (the clean target, same units), ``camera``, ``params``, ``kind``. The same ``k``
    gives the same clean scene at every scale and kind; the noise differs.

    ``tag`` picks the seed sequence (1: held-out test scenes, 3: validation scenes). ``kind``:

    * ``"drawn"``: a camera with ``scale`` times larger pixels drawn as for training (any noise level);
    * ``"low"`` / ``"noisy"``: the same, its photons narrowed to ``HELD_OUT_PHOTONS[kind]`` (nearly
      clean / strong shot noise);
    * ``"binned"``: what the real-data check does to a real image: a noisy HR camera image (photons
      ``HELD_OUT_PHOTONS["binned"]``) is the reference, ``hr``, and its mean over each ``scale x scale``
      block the input (software binning: the input is cleaner than the reference);
    * ``"legacy"``: the first microscopy model's held-out scenes (narrow scene and camera ranges).
    """
    if shape[0] % scale or shape[1] % scale:
        raise ValueError(f"held-out scene shape {shape} is not divisible by scale {scale}")
    if kind not in ("drawn", "legacy", *HELD_OUT_KINDS):
        raise ValueError(f"held-out scene kind must be drawn, legacy, {', '.join(HELD_OUT_KINDS)}; got {kind!r}")
    wide = kind != "legacy"
    rng = np.random.default_rng((13, int(tag), int(k)))
    params = draw_params(rng, shape, wide=wide)
    clean, params = scene(shape, rng, params)
    cam = Camera.random(rng, wide=wide, photons=HELD_OUT_PHOTONS.get(kind))
    code = (HELD_OUT_KINDS.index(kind) + 1) if kind in HELD_OUT_KINDS else 0
    noise = np.random.default_rng((13, 2, int(tag), int(k), int(scale)) + ((code,) if code else ()))
    lr_shape = (shape[0] // scale, shape[1] // scale)
    if kind == "binned":
        cam = cam.within_range(cam.photons * clean.max())
        ref = cam.expose(cam.photons * clean, noise).astype(np.float64)
        return {"lr": area_average(ref, lr_shape), "hr": ref, "clean": cam.expected(cam.photons * clean),
                "camera": cam, "params": params, "seed": k, "scale": scale, "kind": kind}
    if wide:
        cam = cam.within_range(scale * scale * cam.photons * clean.max())
    obs = observe(clean, lr_shape, cam, noise)
    return {**obs, "clean": obs["hr"], "camera": cam, "params": params, "seed": k, "scale": scale, "kind": kind}


def held_out_scenes(scale: int, n: int = len(HELD_OUT_SEEDS), shape=HELD_OUT_SHAPE, kinds=HELD_OUT_KINDS) -> list[dict]:
    """The held-out test set at ``scale``: the first ``n`` scenes, each seen as every one of ``kinds``."""
    return [held_out_scene(k, scale, shape, kind=kind) for kind in kinds for k in HELD_OUT_SEEDS[:n]]


#: the held-out kinds the validation scenes cycle through: scene ``k`` is of kind ``k % 3``
VALIDATION_KINDS = ("low", "noisy", "binned")


def validation_scenes(scales=(2, 4), n: int = 6, shape=(144, 144)) -> list[dict]:
    """Scenes for choosing checkpoints during training: a third seed sequence, neither the training
    scenes nor the held-out ones (those stay untouched until the final evaluation); scene ``k`` of
    kind ``VALIDATION_KINDS[k % 3]``: a low-noise camera, a noisy one, a noisy image binned in
    software (the kind closest to real data, missing before: a checkpoint chosen without it was
    0.8 dB worse there at x2)."""
    return [held_out_scene(k, s, shape, tag=3, kind=VALIDATION_KINDS[k % len(VALIDATION_KINDS)])
            for s in scales for k in range(n)]


# ----------------------------------------------------------------------------------------------
# training patches


class MicroscopyPatches:
    """Training samples for ``Trainer`` (the layout of :func:`..patches.sample_patch`) from a pool of
    generated scenes; ``refresh()`` replaces the oldest scene by a new one.

    LR patch: a random crop of a pool scene seen by a random camera with ``s`` times larger pixels
    (noise drawn per LR pixel), mapped to [0, 1] as ``upscale`` maps a whole image (data range), the
    range widened a little at random because a whole image spans more than one patch. Target: the clean
    HR crop under the same map, clipped to [0, 1].
    """

    def __init__(self, seed: int = 0, pool: int = 24, side: int = 208, start: int = 0):
        self.seed, self.side, self.counter = seed, side, start
        self.pool = [self._new_scene() for _ in range(pool)]
        self.oldest = 0

    def _new_scene(self) -> np.ndarray:
        rng = _training_rng(self.seed, self.counter)
        self.counter += 1
        return scene((self.side, self.side), rng)[0]

    def refresh(self) -> None:
        self.pool[self.oldest] = self._new_scene()
        self.oldest = (self.oldest + 1) % len(self.pool)

    @staticmethod
    def draw_scale(scale_range, rng) -> float:
        lo, hi = scale_range
        ints = [s for s in (2, 3, 4) if lo <= s <= hi]
        if ints and rng.random() < 0.6:
            return float(rng.choice(ints))
        return rng.uniform(lo, hi)

    def sample(self, inp_size: int, scale_range, n_samples: int, rng) -> dict:
        import torch

        from .patches import augment, grid_coords

        s = self.draw_scale(scale_range, rng)
        hr_size = round(inp_size * s)
        if hr_size > self.side:
            raise ValueError(f"scale {s:.2f} needs {hr_size}px crops; the scene pool has {self.side}px scenes")
        img = self.pool[rng.randrange(len(self.pool))]
        y0, x0 = rng.randint(0, self.side - hr_size), rng.randint(0, self.side - hr_size)
        crop = img[y0:y0 + hr_size, x0:x0 + hr_size]
        nrng = np.random.default_rng(rng.getrandbits(64))
        cam = Camera.random(nrng)
        cam = cam.within_range((hr_size / inp_size) ** 2 * cam.photons * float(crop.max()), nrng)
        obs = observe(crop, (inp_size, inp_size), cam, nrng)
        lr, hr = obs["lr"].astype(np.float64), obs["hr"]
        span = max(lr.max() - lr.min(), 1.0)
        # half the patches in the input's exact range (what upscale() uses for an image without outliers,
        # so a clean image's dark floor sits at 0), half widened a little (a whole image spans more)
        exact = rng.random() < 0.5
        lo = lr.min() - (0.0 if exact else rng.uniform(0, 0.05)) * span
        hi = lr.max() + (0.0 if exact else rng.uniform(0, 0.3)) * span
        hi = max(hi, lo + span)  # a flat patch (a noiseless camera over black) would divide 0 by 0: NaN
        inp = torch.from_numpy(np.clip((lr - lo) / (hi - lo), 0, 1).astype(np.float32))
        gt = torch.from_numpy(np.clip((hr - lo) / (hi - lo), 0, 1).astype(np.float32))
        flips = (rng.random() < 0.5, rng.random() < 0.5, rng.random() < 0.5)
        inp, gt = augment(inp, *flips), augment(gt, *flips)
        coord = grid_coords(hr_size, hr_size)
        vals = gt.reshape(-1)
        k = int(s) if s == int(s) else 0
        block = 0
        if n_samples and n_samples < coord.shape[0]:
            if k > 1 and n_samples % (k * k) == 0:  # whole LR pixels: the flux term can compare their means
                pick = _block_pixels(rng.sample(range(inp_size * inp_size), n_samples // (k * k)), inp_size, k)
                block = k * k
            else:
                pick = torch.tensor(rng.sample(range(coord.shape[0]), n_samples))
            coord, vals = coord[pick], vals[pick]
        cell = torch.full_like(coord, 2 / hr_size)
        inp3 = inp[None].expand(3, -1, -1)
        return {"inp": (inp3 - 0.5) / 0.5, "coord": coord, "cell": cell,
                "gt": ((vals - 0.5) / 0.5)[:, None].expand(-1, 3).contiguous(), "scale": torch.tensor(s),
                "block": torch.tensor(block)}


def _block_pixels(lr_pixels: list[int], lr_side: int, k: int):
    """Flat HR indices of the ``k x k`` blocks under the given flat LR pixel indices, block by block."""
    import torch

    lr = torch.tensor(lr_pixels)
    rows, cols = (lr // lr_side) * k, (lr % lr_side) * k
    dy, dx = torch.meshgrid(torch.arange(k), torch.arange(k), indexing="ij")
    hr_side = lr_side * k
    return ((rows[:, None] + dy.reshape(1, -1)) * hr_side + cols[:, None] + dx.reshape(1, -1)).reshape(-1)


# weight of the block-mean term in the microscopy training loss (the shipped model: 1.0 for its
# steps 251-1200, 3.0 for 1201-1500)
FLUX_WEIGHT = 3.0


def block_flux_loss(pred, gt, block):
    """``FLUX_WEIGHT`` times the mean absolute difference between the means of predicted and target values
    over whole LR-pixel blocks, for the samples whose targets come in blocks (``block``: pixels per block,
    0 for none); 0 when no sample does.

    Per-pixel L1 alone lets the model lower sparse bright structures whose exact position it cannot
    know (the median of an uncertain peak is below its mean), which loses flux; the block means are
    certain, so this term keeps the output's local means on the input's.
    """
    terms = []
    for p, g, k in zip(pred, gt, block.tolist()):
        if k > 1:
            terms.append((p.reshape(-1, k, p.shape[-1]).mean(1) - g.reshape(-1, k, g.shape[-1]).mean(1)).abs().mean())
    if not terms:
        return pred.sum() * 0.0
    return FLUX_WEIGHT * sum(terms) / len(terms)


# weight of the dark-floor term (the second microscopy model)
FLOOR_WEIGHT = 1.0
FLOOR_QUANTILE = 0.01


def floor_loss(pred, gt):
    """``FLOOR_WEIGHT`` times the mean over samples of ``|q(pred) - q(gt)|``, ``q`` the ``FLOOR_QUANTILE``
    (1st percentile) of a sample's target pixels (the first channel). The first model lifted the dark
    floor of clean images (its darkest pixels came out brighter than the input's); per-pixel L1 barely
    sees a handful of dark pixels, this term looks at them directly."""
    import torch

    q = torch.quantile(pred[..., 0].float(), FLOOR_QUANTILE, dim=1)
    qt = torch.quantile(gt[..., 0].float(), FLOOR_QUANTILE, dim=1)
    return FLOOR_WEIGHT * (q - qt).abs().mean()


# ----------------------------------------------------------------------------------------------
# files


def write_held_out(out: str | Path, scales=(2, 4), shape=HELD_OUT_SHAPE) -> list[Path]:
    """Write every held-out scene of every set (``HELD_OUT_KINDS``): ``scene{k}_{kind}_x{s}_lr.tif`` (the
    input: uint16 as the camera recorded it, float32 for ``binned``), ``..._hr.tif`` (float32, the
    reference: clean, or the noisy HR image for ``binned``) and ``..._clean.tif`` (float32, the clean target),
    plus ``scenes.json`` (parameters)."""
    import json

    import tifffile

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written, meta = [], {}
    for s in scales:
        for sc in held_out_scenes(s, shape=shape):
            stem = out / f"scene{sc['seed']}_{sc['kind']}_x{s}"
            lr = sc["lr"] if sc["lr"].dtype == np.uint16 else sc["lr"].astype(np.float32)
            hr, clean = sc["hr"].astype(np.float32), sc["clean"].astype(np.float32)
            for part, img in (("lr", lr), ("hr", hr), ("clean", clean)):
                tifffile.imwrite(f"{stem}_{part}.tif", img)
                written.append(Path(f"{stem}_{part}.tif"))
            meta[stem.name] = {"camera": asdict(sc["camera"]), "params": asdict(sc["params"])}
    (out / "scenes.json").write_text(json.dumps(meta, indent=1))
    return written


if __name__ == "__main__":  # pragma: no cover
    import sys

    if len(sys.argv) != 2:
        sys.exit("usage: python -m napari_liif.train.microscopy OUT_DIR")
    for p in write_held_out(sys.argv[1]):
        print(p)
