"""Pure-torch models: encoders (EDSR, RDN), families (LIIF, LM-LIIF) and their registries.

* :mod:`.registry`: ``make(spec)`` builds the module a spec ``{"name": ..., "args": {...}}``
  describes. Module names follow the official code so that official state dicts load unchanged.
* :mod:`.family`: how a family of networks decodes a sample grid (``family_for(net, name)``).
"""

from __future__ import annotations

from .registry import available, make, register  # first: the modules below register themselves
from .family import Family, families, family_for, register_family
from . import edsr, liif, liif_family, lmliif, lmliif_family, mlp, rdn  # noqa: E402,F401,I001  (register builders and families)

__all__ = ["Family", "available", "families", "family_for", "make", "register", "register_family"]
