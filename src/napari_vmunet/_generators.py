"""Driving a progress generator with plain callbacks: one loop for every engine.

The engines (prediction, measurements) are generators that yield progress
and return their result, so the napari docks can run them in a thread worker
and cancel at any yield.  Scripts and the CLI want callbacks instead; this
is the one loop that turns the first into the second.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator
from typing import Any, TypeVar

T = TypeVar('T')


def drive(
    gen: Generator[Any, None, T],
    progress: Callable[[Any], None] | None,
    should_cancel: Callable[[], bool] | threading.Event | None,
    cancelled: Callable[[], BaseException],
) -> T:
    """Run ``gen`` to the end, passing each step to ``progress``; when
    ``should_cancel()`` says so, close ``gen`` and raise ``cancelled()``."""
    if isinstance(should_cancel, threading.Event):
        should_cancel = should_cancel.is_set
    while True:
        if should_cancel is not None and should_cancel():
            gen.close()
            raise cancelled()
        try:
            step = next(gen)
        except StopIteration as stop:
            return stop.value
        if progress is not None:
            progress(step)
