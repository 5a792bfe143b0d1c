"""The live-zoom controllers running, by viewer (widgets follow it, whoever started one)."""

from __future__ import annotations

import weakref

from psygnal import Signal


class Registry:
    """The live-zoom controllers running, by viewer: ``of(viewer)``; ``changed(viewer)`` is emitted
    when one starts, stops, or gains or loses a layer (widgets follow it, whoever started it)."""

    changed = Signal(object)

    def __init__(self):
        self._live: weakref.WeakSet = weakref.WeakSet()

    def add(self, ctl) -> None:
        self._live.add(ctl)
        self.changed.emit(ctl.viewer)

    def discard(self, ctl) -> None:
        self._live.discard(ctl)
        self.changed.emit(ctl.viewer)

    def of(self, viewer) -> list:
        target = getattr(viewer, "__wrapped__", viewer)
        return [c for c in list(self._live) if c.attached and getattr(c.viewer, "__wrapped__", c.viewer) is target]

    def layers_of(self, viewer) -> list:
        """Every source layer live in ``viewer``."""
        return [ly for c in self.of(viewer) for ly in c.layers]


registry = Registry()
