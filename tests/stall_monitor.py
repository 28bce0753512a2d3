"""Measuring how responsive the viewer stays while work runs.

"Never freeze the viewer" is a claim to measure, not assume (micro-sam's
thread workers turned out to slow napari down, #740).  A ``QTimer`` ticks
every ``interval_ms`` on the GUI thread; the longest gap between ticks,
minus the interval, is the longest time the event loop could not react.
Used by the GUI tests and by ``benchmarks/responsiveness.py``; it lives
beside the tests because the installed plugin has no use for it.
"""

from __future__ import annotations

import time

from qtpy.QtCore import QObject, QTimer


class StallMonitor(QObject):
    def __init__(self, interval_ms: int = 10, parent=None):
        super().__init__(parent)
        self.interval = interval_ms / 1000
        self._timer = QTimer(self)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self._tick)
        self.gaps: list[float] = []
        self.ends: list[float] = []  # perf_counter() at the end of each gap
        self._last: float | None = None

    def start(self) -> None:
        self.gaps.clear()
        self.ends.clear()
        self._last = time.perf_counter()
        self._timer.start()

    def stop(self) -> None:
        self._timer.stop()

    def _tick(self) -> None:
        now = time.perf_counter()
        if self._last is not None:
            self.gaps.append(now - self._last)
            self.ends.append(now)
        self._last = now

    @property
    def longest_stall_ms(self) -> float:
        """Longest time the GUI thread did not get to run, in ms."""
        return self.longest_stall_between_ms()

    def longest_stall_between_ms(
        self, start: float = float('-inf'), end: float = float('inf')
    ) -> float:
        """Longest stall that ended within ``[start, end)`` (perf_counter
        seconds): separates the phases of one measured run."""
        gaps = [
            g for g, t in zip(self.gaps, self.ends, strict=True) if start <= t < end
        ]
        if not gaps:
            return 0.0
        return max(0.0, (max(gaps) - self.interval) * 1000)

    def percentile_stall_ms(self, q: float = 99) -> float:
        if not self.gaps:
            return 0.0
        gaps = sorted(self.gaps)
        k = min(len(gaps) - 1, int(round(q / 100 * (len(gaps) - 1))))
        return max(0.0, (gaps[k] - self.interval) * 1000)
