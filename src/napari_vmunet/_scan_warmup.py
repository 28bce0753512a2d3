"""Compiling the numba scan's kernels in the background, once per installation.

numba compiles the fused CPU scan's kernels on their first use (about 11 s
on a 2-core AVX2 machine) and caches the machine code on disk; after that a
process loads them in under a second.  Compiling holds the GIL, so inside
napari it would stall the viewer: the docks start it in a separate, lower-
priority process as they open, and while that runs the ``"auto"`` scan
backend of this process uses the pure-PyTorch scan (the same results to
about 1e-7).  Standard library only: the docks import it before torch.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import threading

_CODE = (
    'import os\n'
    'if hasattr(os, "nice"): os.nice(10)\n'
    'from napari_vmunet.model.scan_numba import warm_up\n'
    'warm_up()\n'
)
_lock = threading.Lock()
_process: subprocess.Popen | None = None


def start() -> None:
    """Start the warm-up process, once per session; nothing where numba is
    not installed or the interpreter is a frozen application."""
    global _process
    with _lock:
        if _process is not None or getattr(sys, 'frozen', False):
            return
        if importlib.util.find_spec('numba') is None:
            return
        try:
            _process = subprocess.Popen(
                [sys.executable, '-c', _CODE],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        except OSError:  # no process to spare: the first scan compiles instead
            _process = None


def running() -> bool:
    """Whether this session's warm-up process is still compiling."""
    process = _process
    return process is not None and process.poll() is None
