"""Python's cyclic garbage collector, paused while the heavy work runs.

A full collection walks every Python object in the process and holds the
GIL while it does: 0.2 s in a bare ``import torch`` process, 0.26-0.42 s in
a napari session with a model loaded (measured on a 2-vCPU AVX2 EPYC).
Every thread waits for it, the GUI thread included, so one collection during
a prediction froze the viewer for 350 ms (``benchmarks/responsiveness.py``).
The scan and the prediction loop allocate thousands of short-lived tensors
and views, which is what keeps triggering the collector; they build no
reference cycles, so nothing is lost by not looking for any while they run.

Nested and concurrent pauses (threads) share one switch; the collector is
switched back on only if it was on when the first of them started.  A pause
never spans a ``yield``: a generator the caller abandons must not leave the
collector off (:func:`gc_paused_steps`).
"""

from __future__ import annotations

import functools
import gc
import threading
from collections.abc import Callable, Generator
from typing import Any, TypeVar

T = TypeVar('T')
R = TypeVar('R')


class GcPause:
    """A re-entrant, thread-safe ``with`` that turns the collector off."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self._restore = False

    def __enter__(self) -> None:
        with self._lock:
            if self._depth == 0:
                self._restore = gc.isenabled()
                gc.disable()
            self._depth += 1

    def __exit__(self, *exc) -> None:
        with self._lock:
            self._depth -= 1
            if self._depth == 0 and self._restore:
                gc.enable()


#: the process's one pause: scans and predictions share it
GC_PAUSE = GcPause()


def gc_paused(fn: Callable[..., R]) -> Callable[..., R]:
    """``fn`` run under :data:`GC_PAUSE`."""

    @functools.wraps(fn)
    def run(*args, **kwargs):
        with GC_PAUSE:
            return fn(*args, **kwargs)

    return run


def gc_paused_steps(gen: Generator[T, Any, R]) -> Generator[T, None, R]:
    """``gen``'s steps, each computed under :data:`GC_PAUSE`; the collector
    is on again while the consumer holds a step, so collections happen
    between steps (short ones: the work's tensors are gone by then), and a
    consumer that stops iterating leaves it as it was."""
    while True:
        with GC_PAUSE:
            try:
                step = next(gen)
            except StopIteration as stop:
                return stop.value
        try:
            yield step
        except GeneratorExit:
            gen.close()
            raise
