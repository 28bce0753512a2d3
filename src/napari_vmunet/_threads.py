"""How many CPU threads torch should use, shared by inference and training.

On a CPU, torch's OpenMP threads wait for each other at the end of every
parallel operation.  The selective scan runs thousands of small operations,
so when one of the cores is busy with something else -- napari's GUI, or a
training process started from the dock -- every operation waits for the
thread that is not scheduled: measured on a 2-core machine, a prediction
took 15 s with 2 threads and 0.9 s with 1 while a training used the other
core.  So work started here leaves one core free, and a prediction also
leaves the cores that a running training of this session has reserved.
"""

from __future__ import annotations

import contextlib
import os
import threading

_lock = threading.Lock()
_reserved = 0


def available_cpus() -> int:
    """CPUs this process may use (affinity-aware where the OS tells)."""
    with contextlib.suppress(AttributeError, OSError):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@contextlib.contextmanager
def reserve(threads: int):
    """Mark ``threads`` cores as busy (e.g. by a training process) meanwhile."""
    global _reserved
    with _lock:
        _reserved += threads
    try:
        yield
    finally:
        with _lock:
            _reserved -= threads


def reserved() -> int:
    return _reserved


def default_threads() -> int:
    """All CPUs but one (for the GUI and the system), minus reserved ones."""
    return max(1, available_cpus() - 1 - _reserved)


@contextlib.contextmanager
def torch_threads(count: int | None):
    """Run a block with ``count`` intra-op threads (``None``: unchanged),
    restoring the previous setting afterwards."""
    import torch

    if not count:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(int(count))
    try:
        yield
    finally:
        torch.set_num_threads(previous)
