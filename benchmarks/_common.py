"""Helpers shared by the benchmark scripts."""

from __future__ import annotations

import resource


def peak_rss_mib() -> float:
    """Peak resident memory of this process image so far (MiB).

    ``VmHWM`` (Linux) starts afresh at ``exec``; ``ru_maxrss`` (elsewhere)
    would inherit a parent's peak on Linux and hide a child's own.
    """
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith('VmHWM:'):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mib() -> float:
    """Resident memory of this process now (MiB; Linux ``VmRSS``)."""
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) / 1024
    raise OSError('no VmRSS in /proc/self/status')


def reset_peak_rss() -> bool:
    """Restart the ``VmHWM`` high-water mark at the current RSS (Linux >= 4.0),
    so a peak measures one phase, not the imports and warm-up before it."""
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        return True
    except OSError:
        return False
