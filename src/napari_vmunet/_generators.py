"""Driving a progress generator with plain callbacks: one loop for every engine.

The engines (prediction, measurements) are generators that yield progress
and return their result, so the napari docks can run them in a thread worker
and cancel at any yield.  Scripts and the CLI want callbacks instead; this
is the one loop that turns the first into the second.  A stop request --
an Event of ``threading`` or ``multiprocessing``, or a callable -- reads the
same everywhere (:func:`as_stop_callable`): the training loop and this one.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any, TypeVar

T = TypeVar('T')
#: a ``threading``/``multiprocessing`` Event, a callable, or None
StopRequest = Any


def as_stop_callable(stop: StopRequest) -> Callable[[], bool]:
    """``None``, anything with ``is_set()`` (threading / multiprocessing
    events) or a callable -> a callable returning ``True`` to stop."""
    if stop is None:
        return lambda: False
    if hasattr(stop, 'is_set'):
        return stop.is_set
    if callable(stop):
        return stop
    raise TypeError(
        f'stop must be an Event or a callable returning bool, got {type(stop).__name__}'
    )


def drive(
    gen: Generator[Any, None, T],
    progress: Callable[[Any], None] | None,
    should_cancel: StopRequest,
    cancelled: Callable[[], BaseException],
) -> T:
    """Run ``gen`` to the end, passing each step to ``progress``; when
    ``should_cancel()`` says so, close ``gen`` and raise ``cancelled()``."""
    should_cancel = as_stop_callable(should_cancel)
    while True:
        if should_cancel():
            gen.close()
            raise cancelled()
        try:
            step = next(gen)
        except StopIteration as stop:
            return stop.value
        if progress is not None:
            progress(step)
