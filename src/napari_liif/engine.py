"""``LiifModel``: a loaded network on a device, and ``load_model``."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch

from .bundled import BUNDLED
from .bundled import resolve as resolve_bundled
from .checkpoint import CheckpointError, build, describe, read_checkpoint
from .device import resolve_device, resolve_precision
from .field import EncodedField
from .loading import building
from .models.family import family_for
from .validate import check_unit_image

WEIGHTS_DIR = Path(__file__).parent / "weights"
DEFAULT_WEIGHTS = BUNDLED["default"].path


def default_checkpoint() -> Path:
    """Path of the bundled default model; a clear error if the package ships none."""
    if not DEFAULT_WEIGHTS.is_file():
        raise CheckpointError(f"{DEFAULT_WEIGHTS}: no bundled default model in this installation; "
                              "pass checkpoint=PATH in Python or --checkpoint PATH on the command line "
                              "(an official LIIF .pth or a napari-liif .safetensors)")
    return DEFAULT_WEIGHTS


class LiifModel:
    """A LIIF network ready for inference on one device at one precision.

    ``encode(image)`` returns an :class:`~napari_liif.field.EncodedField`.
    """

    def __init__(self, net: torch.nn.Module, spec: dict, *, device="auto", precision="fp32",
                 name: str = "<memory>", metadata: dict | None = None):
        self.spec = spec
        self.name = name
        self.metadata = dict(metadata or {})
        self.device = resolve_device(device)
        self.dtype = resolve_precision(precision, self.device)
        first = next(net.parameters())
        if first.device != self.device or first.dtype != self.dtype:
            net = copy.deepcopy(net)  # never convert the caller's network in place
        self.net = net.eval().to(self.device, self.dtype)
        self.net.requires_grad_(False)
        #: how this network decodes a sample grid (:mod:`napari_liif.models.family`)
        self.family = family_for(self.net, (spec or {}).get("name"))

    @property
    def receptive_radius(self) -> int:
        return self.net.encoder.receptive_radius

    def info(self) -> dict:
        d = describe(self.spec, self.net)
        d.update(name=str(self.name), device=str(self.device), precision=str(self.dtype).replace("torch.", ""))
        return d

    def warmup(self, size: int = 48) -> LiifModel:
        """Run one small encode and render, so that the first real one does not pay the
        device's start-up (CUDA context, cuDNN algorithm choice, kernel loading; on a CPU,
        oneDNN's kernel generation). About 0.1 s on a CPU; a GPU's start-up is seconds.
        Returns the model."""
        img = np.linspace(0, 1, size * size * 3, dtype=np.float32).reshape(size, size, 3)
        self.encode(img, tile=size).render(shape=(2 * size, 2 * size))
        return self

    def encode(self, image, *, tile: int = 256, cache_bytes: int = 1 << 30, window_px: int | None = None) -> EncodedField:
        """Encode an image already in [0, 1]: float array (H, W) gray or (H, W, 3) RGB, or a
        ``source(y0, y1, x0, x1)`` callable together with ``shape=(H, W)`` via ``encode_source``.

        Encoding is lazy: encoder tiles are computed when a render first needs them, several
        neighbouring tiles in one encoder window of at most about ``window_px`` input pixels
        (None: :func:`napari_liif.latents.default_window_px` of the model's device).
        """
        a = check_unit_image(image)  # real, finite, in [0, 1]: uint8 0..255 or complex data is refused
        if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] != 3):
            raise ValueError(f"encode expects (H, W) or (H, W, 3) data in [0, 1], got shape {a.shape}; "
                             "use napari_liif.upscale for other layouts")
        if a.shape[0] < 1 or a.shape[1] < 1:
            raise ValueError(f"cannot encode an empty image of shape {a.shape}")
        a = a.astype(np.float32, copy=False)
        return self.encode_source(lambda y0, y1, x0, x1: a[y0:y1, x0:x1], a.shape[:2], tile=tile,
                                  cache_bytes=cache_bytes, window_px=window_px)

    def encode_source(self, source, shape, *, tile: int = 256, cache_bytes: int = 1 << 30,
                      window_px: int | None = None) -> EncodedField:
        """Encode a lazily read image: ``source(y0, y1, x0, x1)`` returns that window in [0, 1]."""
        return EncodedField(self, source, shape, tile=tile, cache_bytes=cache_bytes, window_px=window_px)

    def __repr__(self):
        return f"LiifModel({self.name!s}, device={self.device}, dtype={self.dtype})"


def load_model(checkpoint: str | Path | None = None, device: str = "auto", precision: str = "fp32") -> LiifModel:
    """Load a LIIF or LM-LIIF model.

    Parameters
    ----------
    checkpoint : str, path or None
        A bundled model by name (``"default"``, ``"fast"``, ...: :mod:`napari_liif.bundled`,
        ``napari-liif models``), an official LIIF or LMF ``.pth`` (read with
        ``torch.load(weights_only=True)``) or a napari-liif ``.safetensors``; None is ``"default"``.
    device : {"auto", "cpu", "cuda", "mps"}
        ``auto`` picks CUDA, then MPS, then CPU.
    precision : {"fp32", "bf16", "fp16", "auto"}
        ``auto``: bf16 on CUDA (fp16 where bf16 is missing) and on CPUs with fast bf16 matrix
        products, fp32 elsewhere (:func:`napari_liif.device.auto_precision`). fp32 is exact
        (TF32 off on CUDA).
    """
    if checkpoint is None or checkpoint == "default":
        path = default_checkpoint()
    else:
        path = resolve_bundled(checkpoint)  # another bundled name, or a path as given
    with building():  # one load at a time per process, from any thread (napari_liif.loading)
        spec, sd, meta = read_checkpoint(path)
        net = build(spec, sd, path)
        return LiifModel(net, spec, device=device, precision=precision, name=path.name, metadata=meta)
