"""Helpers shared by the benchmark scripts."""

from __future__ import annotations

import platform
import resource
import time


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


def cpu_model() -> str:
    """The CPU's marketing name (Linux ``/proc/cpuinfo``, else ``platform``)."""
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith(('model name', 'Model')):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_line() -> str:
    """CPU model and the vector extension torch's kernels use (figures from
    an AVX-512 and an AVX2 machine differ; ``ATEN_CPU_CAPABILITY=avx2``
    forces AVX2 kernels on an AVX-512 CPU, though not MKL's own paths)."""
    import torch

    return (
        f'CPU {cpu_model()}, torch {torch.__version__}, vector capability '
        f'{torch.backends.cpu.get_cpu_capability()}, '
        f'MKL {"yes" if torch.backends.mkl.is_available() else "no"}'
    )


#: ``--clock`` choices of the side-by-side benchmarks: wall time, or this
#: process's CPU time, which on a shared machine leaves out the time other
#: jobs held the core (sound with one thread: all work is this process's)
CLOCKS = {'wall': time.perf_counter, 'cpu': time.process_time}
