"""napari-liif: LIIF continuous super-resolution for napari, Python and the command line.

The public API is imported lazily so that ``import napari_liif`` pulls in neither torch
nor Qt until something is used.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "load_model": ".engine",
    "LiifModel": ".engine",
    "EncodedField": ".field",
    "upscale": ".api",
    "upscale_dask": ".dask_upscale",
    "attach": "._qt.attach",
    "CheckpointError": ".checkpoint",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'napari_liif' has no attribute {name!r}")


def __dir__():
    return __all__
