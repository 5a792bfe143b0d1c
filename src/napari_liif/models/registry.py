"""The spec-driven registry of model builders: ``name`` -> class or function.

A *spec* is the official LIIF dictionary ``{"name": ..., "args": {...}}``; ``make(spec)``
builds the module it describes. Modules register themselves with ``@register(name)``; the
package imports every module once so that all names are known.
"""

from __future__ import annotations

import copy
from typing import Any, Callable

import torch.nn as nn

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register(name: str):
    """Class decorator: make ``name`` buildable from a spec."""

    def deco(cls):
        _REGISTRY[name] = cls
        return cls

    return deco


def available() -> list[str]:
    """Names that ``make`` can build."""
    return sorted(_REGISTRY)


def make(spec: dict[str, Any], **overrides: Any) -> nn.Module:
    """Build a module from ``{"name": str, "args": dict}``; ``overrides`` update the args."""
    if not isinstance(spec, dict) or "name" not in spec:
        raise ValueError(f"a model spec must be a dict with a 'name' key, got {spec!r}")
    name = spec["name"]
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(available())}")
    args = copy.deepcopy(spec.get("args") or {})
    args.update(overrides)
    return _REGISTRY[name](**args)
