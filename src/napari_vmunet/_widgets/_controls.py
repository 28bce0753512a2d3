"""Controls the docks (and the export form) build the same way.

One builder each for the device picker, a field with its browse button, a
row of buttons, the status line and the run/stop/progress cluster, and the
list of files chosen in earlier sessions, so that the docks look and behave
alike and a change to one of them is made once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from qtpy.QtCore import QSettings, Qt
from qtpy.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QWidget,
)

#: where napari-vmunet keeps what it remembers between sessions
SETTINGS = ('napari-vmunet', 'napari-vmunet')


def device_picker() -> QComboBox:
    """*auto* (CUDA, then MPS, then the CPU) and every device this machine
    has, each item's data the device string the core takes."""
    from ..devices import available_devices

    combo = QComboBox()
    combo.setToolTip('Where the model runs; auto: CUDA, then Apple MPS, then the CPU')
    combo.addItem('auto', 'auto')
    for name in available_devices():
        combo.addItem(name, name)
    return combo


def button(
    text: str,
    clicked: Callable | None = None,
    *,
    tooltip: str = '',
    enabled: bool = True,
) -> QPushButton:
    """A push button, connected, with its tooltip and initial state."""
    widget = QPushButton(text)
    if clicked is not None:
        widget.clicked.connect(clicked)
    if tooltip:
        widget.setToolTip(tooltip)
    widget.setEnabled(enabled)
    return widget


def button_row(*widgets: QWidget) -> QHBoxLayout:
    """The widgets side by side (each row adds its widest button to the
    dock's width: rows of three at most keep the image view wide)."""
    row = QHBoxLayout()
    for widget in widgets:
        row.addWidget(widget)
    return row


def browse_row(
    field: QWidget, browse: Callable, *, text: str = 'Browse…'
) -> tuple[QHBoxLayout, QPushButton]:
    """``field`` (a path or a list of models) taking the row's width, with
    its browse button beside it; ``text='…'`` makes a narrow button."""
    row = QHBoxLayout()
    pick = button(text, browse)
    if text == '…':
        pick.setMaximumWidth(30)
    row.addWidget(field, 1)
    row.addWidget(pick)
    return row, pick


def status_label(text: str = '') -> QLabel:
    """The line that says what is going on: wrapped, and selectable so that
    an error can be copied into a report."""
    label = QLabel(text)
    label.setWordWrap(True)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    return label


class RunControls:
    """The run cluster of a dock: a start button, the buttons that end a run
    (Cancel, or Stop and Resume), and a progress bar if the dock has one.

    :meth:`set_running` is the one place that says which of them may be
    pressed while a job runs and while none does.
    """

    def __init__(
        self,
        start: QPushButton,
        stops: Sequence[QPushButton],
        *,
        progress: bool = True,
    ):
        self.start = start
        self.stops = tuple(stops)
        for stop in self.stops:
            stop.setEnabled(False)
        self.row = button_row(start, *self.stops)
        self.progress: QProgressBar | None = None
        if progress:
            self.progress = QProgressBar()
            self.show_progress(0, 1)

    def set_running(self, running: bool) -> None:
        """Start while idle, the first stop button while running; the
        others (Resume) are the dock's to enable when they apply."""
        self.start.setEnabled(not running)
        self.stops[0].setEnabled(running)
        for other in self.stops[1:]:
            other.setEnabled(False)

    def show_progress(self, done: int, total: int) -> None:
        self.progress.setRange(0, total)
        self.progress.setValue(done)

    def show_busy(self) -> None:
        """A moving bar: work whose size is not known yet."""
        self.progress.setRange(0, 0)


class RecentFiles:
    """Files chosen in earlier sessions (``QSettings``), newest first.

    ``usable`` decides which remembered paths are offered: a file that is
    gone, or no longer what it was chosen as, is left out.
    """

    def __init__(self, key: str, usable: Callable[[str], bool], most: int = 8):
        self.key = key
        self.usable = usable
        self.most = most

    def _stored(self) -> list[str]:
        value = QSettings(*SETTINGS).value(self.key, [])
        if isinstance(value, str):  # QSettings returns a str for one item
            value = [value]
        return list(value or [])

    def paths(self) -> list[str]:
        return [p for p in self._stored() if self.usable(p)]

    def remember(self, path: str) -> None:
        items = [path] + [p for p in self.paths() if p != path]
        QSettings(*SETTINGS).setValue(self.key, items[: self.most])

    def forget(self, path: str) -> None:
        items = [p for p in self._stored() if p != path]
        QSettings(*SETTINGS).setValue(self.key, items)
