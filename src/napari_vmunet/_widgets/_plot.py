"""A small live plot of training loss and validation Dice, drawn with QPainter.

Two y axes (loss on the left, Dice 0-1 on the right) over whole-epoch ticks,
the x axis spanning the epochs the run is set to, before it starts too; the
validation curves are listed only when there is validation.  Drawing
a few hundred points with QPainter costs well under a millisecond, needs no
plotting library in napari's process, and never blocks the event loop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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

    def __init__(self, parent=None, total_epochs: int = 1):
        super().__init__(parent)
        self.setMinimumHeight(150)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.total_epochs = max(1, int(total_epochs))
        self.validation: bool | None = None  # unknown until a run starts
        self.clear()

    def sizeHint(self) -> QSize:
        return QSize(320, 190)

    def clear(self) -> None:
        self.steps: list[tuple[float, float]] = []
        self.train: list[tuple[float, float]] = []
        self.val_loss: list[tuple[float, float]] = []
        self.dice: list[tuple[float, float]] = []
        self.validation = None
        self.update()

    def set_total_epochs(self, epochs: int) -> None:
        """The epochs the x axis spans (the run's setting)."""
        self.total_epochs = max(1, int(epochs))
        self.update()

    def set_validation(self, present: bool) -> None:
        """Whether the run validates (its curves are then in the legend)."""
        self.validation = bool(present)
        self.update()

    # -------------------------------------------------------------- content
    def last_epoch(self) -> int:
        """The x axis' end: the epochs set, or the data if it goes further."""
        data = max((x for x, _ in self.steps + self.train), default=0)
        return max(self.total_epochs, math.ceil(data))

    def axis_label(self) -> str:
        return f'epoch (of {self.total_epochs})'

    def legend(self) -> list[tuple[str, QColor]]:
        """The curves listed: validation ones only when there is validation."""
        entries = [('loss', LOSS_COLOR)]
        if self.validation or self.val_loss or self.dice:
            entries += [('val loss', VAL_LOSS_COLOR), ('val Dice (right)', DICE_COLOR)]
        return entries

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
        text = self.palette().windowText().color()
        left, right = (
            fm.horizontalAdvance('0.000') + 8,
            fm.horizontalAdvance('1.0') + 10,
        )
        top, bottom = fm.height() + 6, 2 * fm.height() + 8
        area = QRectF(
            left, top, self.width() - left - right, self.height() - top - bottom
        )
        if area.width() < 20 or area.height() < 20:
            return
        p.setPen(
            QPen(text.darker(150) if text.lightness() > 128 else text.lighter(250))
        )
        p.drawRect(area)
        losses = [y for _, y in self.steps + self.train + self.val_loss]
        frame = _Frame(
            p, area, text, self.last_epoch(), max(losses, default=1.0) * 1.05 or 1.0
        )
        self._draw_axes(frame, left, right)
        frame.line(self.steps, STEP_COLOR, 1.0)
        frame.line(self.train, LOSS_COLOR)
        frame.line(self.val_loss, VAL_LOSS_COLOR, dashed=True)
        frame.line(self.dice, DICE_COLOR, 2.0, y_top=1.0)
        self._draw_legend(frame, top)
        p.end()

    def _draw_axes(self, frame: _Frame, left: float, right: float) -> None:
        """Loss on the left, Dice on the right, whole epochs below."""
        p, area, xmax = frame.painter, frame.area, frame.xmax
        fm = p.fontMetrics()
        p.setPen(frame.text)
        for frac in (0.0, 0.5, 1.0):
            y = area.bottom() - area.height() * frac
            p.drawText(
                QRectF(0, y - fm.height() / 2, left - 4, fm.height()),
                Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter,
                f'{frame.ymax * frac:.3g}',
            )
            p.drawText(
                QRectF(area.right() + 4, y - fm.height() / 2, right, fm.height()),
                Qt.AlignmentFlag.AlignLeft,
                f'{frac:.1f}',
            )
        label_w = fm.horizontalAdvance(str(xmax)) + 14
        for tick in epoch_ticks(xmax, int(area.width() // label_w)):
            x = area.left() + area.width() * tick / xmax
            p.drawLine(QPointF(x, area.bottom()), QPointF(x, area.bottom() + 3))
            p.drawText(
                QRectF(x - label_w / 2, area.bottom() + 3, label_w, fm.height()),
                Qt.AlignmentFlag.AlignCenter,
                str(tick),
            )
        p.drawText(
            QRectF(
                area.left(), area.bottom() + 3 + fm.height(), area.width(), fm.height()
            ),
            Qt.AlignmentFlag.AlignCenter,
            self.axis_label(),
        )

    def _draw_legend(self, frame: _Frame, top: float) -> None:
        p = frame.painter
        fm = p.fontMetrics()
        x = frame.area.left()
        for label, color in self.legend():
            p.setPen(QPen(color, 3))
            p.drawLine(QPointF(x, top / 2), QPointF(x + 12, top / 2))
            p.setPen(frame.text)
            p.drawText(QPointF(x + 15, top / 2 + fm.ascent() / 2 - 1), label)
            x += 22 + fm.horizontalAdvance(label)


@dataclass
class _Frame:
    """The plot area of one paint, and how data map into it."""

    painter: QPainter
    area: QRectF
    text: QColor  # the palette's text colour
    xmax: int  # the last epoch shown
    ymax: float  # the top of the loss axis

    def point(self, x: float, y: float, y_top: float) -> QPointF:
        area = self.area
        return QPointF(
            area.left() + area.width() * x / self.xmax,
            area.bottom() - area.height() * min(y, y_top) / y_top,
        )

    def line(self, points, color, width=1.6, dashed=False, y_top=None) -> None:
        """A curve through ``points`` (a dot for one); ``y_top``: the top
        of its axis (default: the loss axis)."""
        if not points:
            return
        y_top = self.ymax if y_top is None else y_top
        pen = QPen(color, width)
        if dashed:
            pen.setStyle(Qt.PenStyle.DashLine)
        p = self.painter
        p.setPen(pen)
        path = QPainterPath(self.point(*points[0], y_top))
        for x, y in points[1:]:
            path.lineTo(self.point(x, y, y_top))
        p.drawPath(path)
        if len(points) == 1:
            p.drawEllipse(self.point(*points[0], y_top), 2, 2)


def epoch_ticks(last: int, room: int) -> list[int]:
    """Whole epochs from 0 to ``last``, 1, 2, 5, 10, 20, 50, ... apart, so
    that at most ``room`` (at least 2) of them are labelled."""
    last = max(1, int(last))
    room = max(2, room)
    step, k = 1, 0
    while last // step + 1 > room:
        k += 1
        step = (1, 2, 5)[k % 3] * 10 ** (k // 3)
    return list(range(0, last + 1, step))
