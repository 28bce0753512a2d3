"""Closing napari's window while the fine-tune dock trains stops the run.

The guard watches the main window: when a close goes through (the window
is hidden after its close event, so a close the user cancelled in napari's
confirmation does not count), it calls the dock back, which asks the
training to stop after its current step -- the child saves the resumable
checkpoint and exits, also when the script or session that opened napari
goes on.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

from qtpy.QtCore import QEvent, QObject, QTimer
from qtpy.QtWidgets import QMainWindow, QWidget


def main_window(widget: QWidget) -> QMainWindow | None:
    """The main window ``widget`` is docked in, if any."""
    parent = widget.parentWidget()
    while parent is not None and not isinstance(parent, QMainWindow):
        parent = parent.parentWidget()
    return parent


class CloseGuard(QObject):
    """Calls ``on_close`` when the watched window's close goes through."""

    def __init__(self, on_close: Callable[[], object], parent=None):
        super().__init__(parent)
        self._on_close = on_close
        self._window = None  # weakly: a dock must not keep napari's window alive
        self._closing = False

    def watched(self) -> QMainWindow | None:
        return None if self._window is None else self._window()

    def watch(self, window: QMainWindow | None) -> None:
        """Watch ``window`` (once; None: nothing to watch)."""
        if window is not None and window is not self.watched():
            window.installEventFilter(self)
            self._window = weakref.ref(window)

    def eventFilter(self, obj, event) -> bool:
        """The main window's Close, then its Hide: napari is closing."""
        kind = event.type()
        if obj is self.watched():
            if kind == QEvent.Type.Close:
                self._closing = True
                # a cancelled close leaves the window shown: forget it then
                QTimer.singleShot(0, self._close_cancelled)
            elif kind == QEvent.Type.Hide and self._closing:
                self._closing = False
                self._on_close()
        return False

    def _close_cancelled(self) -> None:
        window = self.watched()
        if window is not None and window.isVisible():
            self._closing = False
