"""How our docks sit in napari's window: scrollable, and tabbed together.

napari stacks every dock opened from the Plugins menu below the previous
one, and a ``QMainWindow`` grows until all of its docks' minimum heights
fit: Inference + Fine-tune made a 1089x1154 window on a 1000-pixel screen,
with the plot, the status line and napari's status bar off-screen.  Two
things keep the window on a laptop screen (1280x800):

* each dock's content lives in a vertical scroll area whose minimum height
  is small (:func:`scrolling_layout`), so a dock can shrink instead of
  pushing the window taller;
* the second of our docks opened joins the first as a tab
  (:func:`tabify_with_siblings`) instead of halving its height.
"""

from __future__ import annotations

import contextlib

from qtpy.QtCore import QEvent, QObject, QSize, Qt, QTimer
from qtpy.QtWidgets import (
    QComboBox,
    QDockWidget,
    QFrame,
    QMainWindow,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

#: The tallest size hint a dock asks for: it leaves napari's title bar,
#: menus, status bar and the layer controls room on a 1280x800 screen.
MAX_HINT_HEIGHT = 560
#: The smallest height a dock can be squeezed to (then it scrolls).
MIN_HEIGHT = 160

#: Characters a choice box shows before it elides (its list opens wider).
COMBO_CHARS = 14

#: Attribute marking the widgets of ours that share one tab group.
_SIBLING_FLAG = '_vmunet_tabbed_dock'


class _VerticalScrollArea(QScrollArea):
    """Scrolls vertically only; as wide as its content needs.

    Qt's scroll area reports a tiny minimum width as well, so a dock could be
    squeezed until its controls scroll sideways; here the content's minimum
    width (plus the scroll bar) is the area's.  Qt does not tell a scroll
    area when its content's size hints change (a longer status line, a new
    section), so the dock kept the width of its first layout and cut the
    grown controls off on the right; the area now watches its content's
    layout requests and updates its own geometry.
    """

    def __init__(self, content: QWidget, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setWidget(content)
        self._content_width = content.minimumSizeHint().width()
        content.installEventFilter(self)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802
        # only a change of the minimum width reaches napari's window: a
        # progress line rewritten ten times a second must not relayout it
        if watched is self.widget() and event.type() == QEvent.Type.LayoutRequest:
            width = watched.minimumSizeHint().width()
            if width != self._content_width:
                self._content_width = width
                self.updateGeometry()
        return super().eventFilter(watched, event)

    def _bar(self) -> int:
        """Width the area adds to its content: the vertical scroll bar and
        the frame (napari's style sheet draws one, 1 px a side, whatever
        the frame shape says)."""
        margins = self.contentsMargins()
        return (
            self.verticalScrollBar().sizeHint().width()
            + margins.left()
            + margins.right()
        )

    def sizeHint(self) -> QSize:
        hint = self.widget().sizeHint()
        return QSize(hint.width() + self._bar(), min(hint.height(), MAX_HINT_HEIGHT))

    def minimumSizeHint(self) -> QSize:
        hint = self.widget().minimumSizeHint()
        return QSize(hint.width() + self._bar(), min(hint.height(), MIN_HEIGHT))


def scrolling_layout(widget: QWidget) -> QVBoxLayout:
    """Give ``widget`` a scroll area filling it; returns the layout inside.

    Build the dock's controls into the returned layout as if it were the
    widget's own.  The widget also joins our other docks as a tab when
    napari docks it (see :func:`tabify_with_siblings`).
    """
    outer = QVBoxLayout(widget)
    outer.setContentsMargins(0, 0, 0, 0)
    content = QWidget()
    layout = QVBoxLayout(content)
    outer.addWidget(_VerticalScrollArea(content, widget))
    setattr(widget, _SIBLING_FLAG, True)
    widget.installEventFilter(_TabWhenDocked(widget))
    return layout


class _TabWhenDocked(QObject):
    """Tabifies its widget with our other docks once napari has docked it.

    napari sets the widget into a ``QDockWidget`` first and adds that dock
    to the main window afterwards, so the tab is made one event-loop turn
    after the widget gets its new parent.
    """

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:
        if event.type() == QEvent.Type.ParentChange:
            QTimer.singleShot(0, lambda: _tabify_if_alive(obj))
        return False


def _tabify_if_alive(widget: QWidget) -> None:
    with contextlib.suppress(RuntimeError):  # deleted meanwhile
        tabify_with_siblings(widget)


def tabify_with_siblings(widget: QWidget) -> bool:
    """Put ``widget``'s dock into a tab group with our other docks.

    Only docks of ours in the same dock area that are shown (not floating,
    not hidden) count; the newly opened dock stays in front.  Returns
    whether a tab was made.
    """
    dock = widget.parentWidget()
    if not isinstance(dock, QDockWidget) or dock.isFloating():
        return False
    main = dock.parentWidget()
    if not isinstance(main, QMainWindow):
        return False
    area = main.dockWidgetArea(dock)
    if _tab_group(main, dock):
        return False  # already tabbed with one of ours
    siblings = [
        d
        for d in main.findChildren(QDockWidget)
        if d is not dock
        and getattr(d.widget(), _SIBLING_FLAG, False)
        and not d.isFloating()
        and d.isVisibleTo(main)
        and main.dockWidgetArea(d) == area
    ]
    if not siblings:
        return False
    main.tabifyDockWidget(siblings[-1], dock)
    dock.show()
    dock.raise_()
    return True


def _tab_group(main: QMainWindow, dock: QDockWidget) -> list[QDockWidget]:
    """Our docks that ``dock`` already shares a tab group with."""
    return [
        d
        for d in main.tabifiedDockWidgets(dock)
        if getattr(d.widget(), _SIBLING_FLAG, False)
    ]


def compact(combo: QComboBox, chars: int = COMBO_CHARS) -> QComboBox:
    """Let ``combo`` be as narrow as ``chars`` characters.

    By default a combo box is as wide as its longest entry, and one long
    layer or model name widened the whole dock at the expense of the image
    view; the opened list still shows the entries in full.
    """
    combo.setMinimumContentsLength(chars)
    combo.setSizeAdjustPolicy(
        QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
    )
    return combo
