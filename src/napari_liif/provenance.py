"""What made an output: the digest of its input's bytes and the parameters of the run.

An output of ours is reused (skipped) only when the record it was written with equals the one
the run would write now (:func:`napari_liif.outputs.check_file`). A record is a JSON object:
``{"input": "sha256:...", "napari_liif": version, "scale": ..., "model": "sha256:...", ...}``.
"""

from __future__ import annotations

import hashlib
import json
import os
import weakref
from pathlib import Path

_BLOCK = 1 << 20
_MODELS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_FILES: dict[tuple, str] = {}  # digests of files by path and full stat (ctime included): one read per version


def normalize(record: dict) -> dict:
    """``record`` as it reads back from JSON (tuples become lists), for comparisons."""
    return json.loads(json.dumps(record, sort_keys=True))


def content_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read in blocks; of a folder (a zarr store), of every file's
    relative name, size and bytes, in sorted order. A file's digest is kept for this process
    while its inode, size and times (ctime included, which no user can set) stay the same."""
    path = Path(path)
    try:
        st = os.stat(path)
    except OSError:
        st = None
    key = None if st is None or path.is_dir() else \
        (str(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    if key in _FILES:
        return _FILES[key]
    h = hashlib.sha256()
    if path.is_dir():
        for root, dirs, files in os.walk(path):
            dirs.sort()
            for f in sorted(files):
                p = Path(root) / f
                h.update(f"{p.relative_to(path).as_posix()}\0{p.stat().st_size}\0".encode())
                _feed(h, p)
    else:
        _feed(h, path)
    digest = "sha256:" + h.hexdigest()
    if key is not None:
        if len(_FILES) > 4096:
            _FILES.clear()
        _FILES[key] = digest
    return digest


def _feed(h, path: Path) -> None:
    with open(path, "rb") as f:
        while block := f.read(_BLOCK):
            h.update(block)


def model_digest(model) -> str:
    """SHA-256 of a model's spec and weights as it runs them (names, dtypes, shapes, bytes)."""
    cached = _MODELS.get(model)
    if cached is not None:
        return cached
    import torch

    h = hashlib.sha256(json.dumps(model.spec, sort_keys=True, default=str).encode())
    for name, t in model.net.state_dict().items():
        t = t.detach().to("cpu").contiguous().reshape(-1)
        h.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    _MODELS[model] = digest = "sha256:" + h.hexdigest()
    return digest


def base_recipe(*, scale=None, size=None, channel_axis=None) -> dict:
    """The parameters every upscale records: this version, the output scale or size and the
    channel axis as given (None: decided from the input, whose bytes are recorded)."""
    from . import __version__

    return normalize({"napari_liif": __version__, "scale": scale, "size": size, "channel_axis": channel_axis})


def model_recipe(model, *, cell="on", limits=None, percentiles=None, preserve_flux=False, **more) -> dict:
    """The parameters of a run that a model and the rendering options decide."""
    return normalize({"model": model_digest(model), "precision": str(model.dtype).replace("torch.", ""),
                      "cell": cell, "limits": limits, "percentiles": percentiles,
                      "preserve_flux": preserve_flux if preserve_flux == "local" else bool(preserve_flux), **more})
