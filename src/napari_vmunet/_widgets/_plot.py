"""A small live plot of training loss and validation Dice, drawn with QPainter.

Two y axes (loss on the left, Dice 0-1 on the right) over epochs.  Drawing
a few hundred points with QPainter costs well under a millisecond, needs no
plotting library in napari's process, and never blocks the event loop.
"""

from __future__ import annotations

import math

from qtpy.QtCore import QPointF, QRectF, QSize, Qt
from qtpy.QtGui import QColor, QFont, QPainter, QPainterPath, QPen
from qtpy.QtWidgets import QSizePolicy, QWidget

STEP_COLOR = QColor(120, 120, 120, 110)
LOSS_COLOR = QColor('#e69f00')
VAL_LOSS_COLOR = QColor('#d55e00')
DICE_COLOR = QColor('#56b4e9')


class TrainingPlot(QWidget):
    """Loss per step (grey), mean training loss per epoch (orange),
    validation loss (red, dashed) and mean validation Dice (blue, right axis)."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setMinimumHeight(150)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.clear()

    def sizeHint(self) -> QSize:
        return QSize(320, 190)

    def clear(self) -> None:
        self.steps: list[tuple[float, float]] = []
        self.train: list[tuple[float, float]] = []
        self.val_loss: list[tuple[float, float]] = []
        self.dice: list[tuple[float, float]] = []
        self.total_epochs = 1
        self.update()

    def add_step(self, epoch: float, loss: float) -> None:
        if math.isfinite(loss):
            self.steps.append((epoch, loss))
            self.update()

    def add_epoch(
        self, epoch: int, train_loss: float, val_loss: float | None, dice: float | None
    ) -> None:
        self.train.append((epoch, train_loss))
        if val_loss is not None and math.isfinite(val_loss):
            self.val_loss.append((epoch, val_loss))
        if dice is not None and math.isfinite(dice):
            self.dice.append((epoch, dice))
        self.update()

    # ------------------------------------------------------------ drawing
    def paintEvent(self, _event) -> None:
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        font = QFont(self.font())
        font.setPointSizeF(max(7.0, font.pointSizeF() - 1))
        p.setFont(font)
        fm = p.fontMetrics()
        pal = self.palette()
        text = pal.windowText().color()
        left, right = (
            fm.horizontalAdvance('0.000') + 8,
            fm.horizontalAdvance('1.0') + 10,
        )
        top, bottom = fm.height() + 6, fm.height() + 8
        area = QRectF(
            left, top, self.width() - left - right, self.height() - top - bottom
        )
        if area.width() < 20 or area.height() < 20:
            return
        p.setPen(
            QPen(text.darker(150) if text.lightness() > 128 else text.lighter(250))
        )
        p.drawRect(area)

        xmax = max(
            self.total_epochs, max((x for x, _ in self.steps + self.train), default=1)
        )
        losses = [y for _, y in self.steps + self.train + self.val_loss]
        ymax = max(losses, default=1.0) * 1.05 or 1.0

        def pt(x: float, y: float, y_top: float) -> QPointF:
            return QPointF(
                area.left() + area.width() * x / xmax,
                area.bottom() - area.height() * min(y, y_top) / y_top,
            )

        # axes labels
        p.setPen(text)
        for frac in (0.0, 0.5, 1.0):
            y = area.bottom() - area.height() * frac
            p.drawText(
                QRectF(0, y - fm.height() / 2, left - 4, fm.height()),
                Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter,
                f'{ymax * frac:.3g}',
            )
            p.drawText(
                QRectF(area.right() + 4, y - fm.height() / 2, right, fm.height()),
                Qt.AlignmentFlag.AlignLeft,
                f'{frac:.1f}',
            )
        p.drawText(
            QRectF(area.left(), area.bottom() + 2, area.width(), fm.height()),
            Qt.AlignmentFlag.AlignCenter,
            f'epoch (of {xmax:g})',
        )

        def line(points, color, width=1.6, dashed=False, y_top=ymax):
            if not points:
                return
            pen = QPen(color, width)
            if dashed:
                pen.setStyle(Qt.PenStyle.DashLine)
            p.setPen(pen)
            path = QPainterPath(pt(*points[0], y_top))
            for x, y in points[1:]:
                path.lineTo(pt(x, y, y_top))
            p.drawPath(path)
            if len(points) == 1:
                p.drawEllipse(pt(*points[0], y_top), 2, 2)

        line(self.steps, STEP_COLOR, 1.0)
        line(self.train, LOSS_COLOR)
        line(self.val_loss, VAL_LOSS_COLOR, dashed=True)
        line(self.dice, DICE_COLOR, 2.0, y_top=1.0)

        # legend
        x = area.left()
        for label, color in (
            ('loss', LOSS_COLOR),
            ('val loss', VAL_LOSS_COLOR),
            ('val Dice (right)', DICE_COLOR),
        ):
            p.setPen(QPen(color, 3))
            p.drawLine(QPointF(x, top / 2), QPointF(x + 12, top / 2))
            p.setPen(text)
            p.drawText(QPointF(x + 15, top / 2 + fm.ascent() / 2 - 1), label)
            x += 22 + fm.horizontalAdvance(label)
        p.end()
