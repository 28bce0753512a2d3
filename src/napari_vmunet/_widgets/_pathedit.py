"""A path field that shows the end of a long path, where the file name is."""

from __future__ import annotations

from qtpy.QtCore import QRect, Qt
from qtpy.QtGui import QPainter, QPalette
from qtpy.QtWidgets import QLineEdit, QStyle, QStyleOptionFrame, QWidget

#: QLineEdit's own horizontal text margin (qlineedit_p.h: horizontalMargin)
_MARGIN = 2


class PathEdit(QLineEdit):
    """A ``QLineEdit`` for a file path that, while it is not being edited,
    elides a path too long for it on the left (``…/models/cells.safetensors``)
    and keeps the full path in its tooltip.

    A plain line edit shows the start of the text, so the *Save to* field
    showed the home folder and hid the file name; while it has the focus it
    is an ordinary line edit.
    """

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.textChanged.connect(self.setToolTip)

    def _text_rect(self) -> QRect:
        opt = QStyleOptionFrame()
        self.initStyleOption(opt)
        rect = self.style().subElementRect(
            QStyle.SubElement.SE_LineEditContents, opt, self
        )
        m = self.textMargins()
        return rect.adjusted(
            m.left() + _MARGIN, m.top(), -(m.right() + _MARGIN), -m.bottom()
        )

    def is_elided(self) -> bool:
        """Whether the text is too long to be shown whole."""
        width = self.fontMetrics().horizontalAdvance(self.text())
        return width > self._text_rect().width()

    def shown_text(self) -> str:
        """What the field shows while it is not being edited."""
        if self.hasFocus() or not self.is_elided():
            return self.text()
        return self.fontMetrics().elidedText(
            self.text(), Qt.TextElideMode.ElideLeft, self._text_rect().width()
        )

    def paintEvent(self, event) -> None:
        if self.hasFocus() or not self.is_elided():
            super().paintEvent(event)
            return
        painter = QPainter(self)
        opt = QStyleOptionFrame()
        self.initStyleOption(opt)
        self.style().drawPrimitive(
            QStyle.PrimitiveElement.PE_PanelLineEdit, opt, painter, self
        )
        group = (
            QPalette.ColorGroup.Active
            if self.isEnabled()
            else QPalette.ColorGroup.Disabled
        )
        painter.setPen(self.palette().color(group, QPalette.ColorRole.Text))
        painter.drawText(
            self._text_rect(),
            int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter),
            self.shown_text(),
        )
        painter.end()
