"""How much memory there is, and refusing allocations that cannot fit.

A file of a few kilobytes can declare gigabytes (a NIfTI header claiming
2000^3 voxels, a zip member that decompresses a thousandfold).  Reading it
anyway takes minutes, swaps the machine and ends in a ``MemoryError`` with
no message.  So readers compare what a file declares with the memory
available *before* allocating, and say which file and why.
"""

from __future__ import annotations

import os

#: keep this share of the available memory for everything else
_HEADROOM = 0.9


def available_memory_bytes() -> int | None:
    """Memory a new allocation can use without swapping (``None``: unknown).

    ``MemAvailable`` from ``/proc/meminfo`` on Linux (it counts reclaimable
    caches, unlike "free"), else the free physical pages.
    """
    try:
        with open('/proc/meminfo') as f:
            for line in f:
                if line.startswith('MemAvailable:'):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf('SC_AVPHYS_PAGES') * os.sysconf('SC_PAGE_SIZE'))
    except (ValueError, OSError, AttributeError):
        return None


def format_bytes(n: float) -> str:
    """``1.5 GiB``, ``320 MiB``, ``12 KiB``."""
    for unit, size in (('TiB', 2**40), ('GiB', 2**30), ('MiB', 2**20), ('KiB', 2**10)):
        if n >= size:
            return f'{n / size:.1f} {unit}'
    return f'{int(n)} bytes'


def check_fits_in_memory(nbytes: int, what: str) -> None:
    """Raise ``MemoryError`` naming ``what`` when ``nbytes`` cannot fit.

    ``what`` says what would be allocated, e.g. ``'scan.nii.gz declares
    2000 x 2000 x 2000 float32 voxels'``.
    """
    available = available_memory_bytes()
    if available is None or nbytes <= _HEADROOM * available:
        return
    raise MemoryError(
        f'{what}: that needs {format_bytes(nbytes)}, but only '
        f'{format_bytes(available)} of memory is available. If the file is '
        'genuine, use a machine with more memory or crop it first; a small '
        'file declaring this much is damaged or malicious.'
    )
