"""What the LIIF dock widgets share: image-layer pickers, napari notifications and their lifetime.

The forms are magicgui widgets inside a ``QWidget`` that takes ``napari_viewer`` (the napari
plugin template's style). A layer picker is a magicgui combo box made from the type annotation
``napari.layers.Image``; it lists the viewer's image layers except the live-zoom overlays
(``<name> [LIIF]``). napari keeps the pickers in sync: ``add_dock_widget`` connects the layer
list's ``inserted``, ``removed``, ``reordered`` and ``renamed`` events to the widget's
``reset_choices``. napari does not disconnect them when the widget is removed, so
:meth:`ViewerDockWidget.shutdown` does.
"""

from __future__ import annotations

from magicgui.widgets import ComboBox, create_widget
from qtpy.QtCore import QEvent
from qtpy.QtWidgets import QVBoxLayout, QWidget

#: the metadata key that marks a live-zoom overlay (set by the controller on the layer it adds)
OVERLAY_KEY = "napari_liif_overlay_of"
#: the layer-list events napari connects to a docked widget's ``reset_choices``
LAYER_EVENTS = ("inserted", "removed", "reordered", "renamed")


#: Qt binding releases known to break long napari sessions (also excluded from every install we make)
BAD_QT = {("PySide6", "6.12.0"): "it leaks a reference per Signal.emit, so long sessions grow until they crash"}
_warned_qt = False


def qt_binding_problem(api_name: str | None = None, version: str | None = None) -> str | None:
    """Why the running Qt binding (or ``api_name`` ``version``) is unsafe, or None."""
    import qtpy

    api_name = qtpy.API_NAME if api_name is None else api_name
    if version is None:
        version = qtpy.PYSIDE_VERSION if api_name.startswith("PySide") else qtpy.PYQT_VERSION
    why = BAD_QT.get((api_name, str(version)))
    if why is None:
        return None
    return (f"{api_name} {version} is known to crash long sessions ({why}); "
            f"install another version, e.g. pip install \"{api_name}-Essentials!={version}\"")


def is_overlay(layer) -> bool:
    """Whether ``layer`` is a live-zoom overlay made by napari-liif (never a source)."""
    return OVERLAY_KEY in getattr(layer, "metadata", {})


def image_layer_picker(viewer, *, label: str = "layer", tooltip: str = "") -> ComboBox:
    """A combo box of ``viewer``'s image layers (not Labels, Points, ..., nor our overlays)."""
    from napari.layers import Image

    def sources(widget=None) -> list:
        return [ly for ly in viewer.layers if isinstance(ly, Image) and not is_overlay(ly)]

    return create_widget(annotation=Image, label=label, options={"choices": sources, "tooltip": tooltip})


def notify_error(message: str) -> None:
    """Show ``message`` as an error in napari's notifications (besides the widget's status line)."""
    from napari.utils.notifications import show_error

    show_error(message)


def _warn_about_qt() -> None:
    """Once per session: a napari warning if the Qt binding is one known to crash (installed by hand)."""
    global _warned_qt
    problem = None if _warned_qt else qt_binding_problem()
    if problem:
        from napari.utils.notifications import show_warning

        _warned_qt = True
        show_warning(f"napari-liif: {problem}")


def notify_info(message: str) -> None:
    """Show ``message`` as information in napari's notifications."""
    from napari.utils.notifications import show_info

    show_info(message)


class ViewerDockWidget(QWidget):
    """A ``QWidget`` holding a magicgui form, for ``viewer.window.add_dock_widget``.

    Subclasses build ``form`` (a magicgui ``Container``) and pass it to :meth:`_set_form`;
    they extend :meth:`shutdown` to stop their work. ``shutdown`` runs once, when the widget
    is closed or napari's ``remove_dock_widget`` takes it out of its dock.
    """

    def __init__(self, napari_viewer, parent=None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.form = None
        self._alive = True
        _warn_about_qt()

    def _set_form(self, form) -> None:
        self.form = form
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(form.native)
        lay.addStretch(1)

    def reset_choices(self, *_) -> None:
        """Re-list the layer pickers' choices (napari calls this on layer-list changes)."""
        if self.form is not None:
            self.form.reset_choices()

    def shutdown(self) -> None:
        """Disconnect from the viewer (idempotent); subclasses stop their work first."""
        if not self._alive:
            return
        self._alive = False
        events = self.viewer.layers.events
        for name in LAYER_EVENTS:
            getattr(events, name).disconnect(self.reset_choices)

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        self.shutdown()
        super().closeEvent(event)

    def event(self, ev) -> bool:
        # napari's remove_dock_widget un-parents the widget rather than closing it
        if ev.type() == QEvent.Type.ParentChange and self.parent() is None and getattr(self, "_alive", False):
            self.shutdown()
        return super().event(ev)
