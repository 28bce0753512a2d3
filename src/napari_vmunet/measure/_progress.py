"""Progress reports and the driver that turns a generator into callbacks.

Objects and measurements are generators, like
:meth:`napari_vmunet.inference.Predictor.iter_predict`: napari runs them in a
generator thread worker (the viewer keeps painting, Cancel acts at the next
yield) and scripts or the CLI drive them with plain callbacks through
:func:`drive`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import TypeVar

from .._generators import drive as drive_generator

T = TypeVar('T')

#: Seconds between two reports: often enough for a live progress bar, rare
#: enough that the GUI's signal handling costs nothing measurable.
REPORT_INTERVAL_S = 0.05


class Cancelled(Exception):
    """Raised by the callback drivers when ``should_cancel`` said so."""


@dataclass
class Progress:
    """One step of finding objects or measuring them."""

    stage: str  # 'objects' or 'measure'
    done: int  # components (objects stage) or objects (measure stage) so far
    total: int
    message: str = ''

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0


class _Reporter:
    """Yields a :class:`Progress` at most every ``REPORT_INTERVAL_S``."""

    def __init__(self, stage: str, total: int, message: str = ''):
        self.stage, self.total, self.message = stage, total, message
        self._last = time.monotonic()

    def due(self) -> bool:
        now = time.monotonic()
        if now - self._last >= REPORT_INTERVAL_S:
            self._last = now
            return True
        return False

    def step(self, done: int, message: str | None = None) -> Progress:
        return Progress(self.stage, done, self.total, message or self.message)


def drive(
    gen: Generator[Progress, None, T],
    progress: Callable[[Progress], None] | None = None,
    should_cancel: Callable[[], bool] | threading.Event | None = None,
) -> T:
    """Run ``gen`` to the end, passing each step to ``progress``; raises
    :class:`Cancelled` (after closing ``gen``) when ``should_cancel()``."""
    return drive_generator(gen, progress, should_cancel, lambda: Cancelled('cancelled'))
