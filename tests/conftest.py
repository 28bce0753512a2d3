"""Shared test set-up."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

# triton (when installed) must be loaded before any napari viewer draws: its
# LLVM clashes with Mesa's once a GL context exists, and torch imports it
# lazily (e.g. creating an optimizer imports torch._dynamo, which imports
# triton).  Loaded here, at session start, later imports find it ready.
# napari itself never creates optimizers: training runs in its own process.
with contextlib.suppress(ImportError):
    import triton  # noqa: F401


def _uses_qt(request) -> bool:
    uses_qt = {'qtbot', 'make_napari_viewer'} & set(request.fixturenames)
    return bool(uses_qt) or request.node.get_closest_marker('gui') is not None


@pytest.fixture(autouse=True)
def _garbage_collected_on_the_gui_thread(request):
    """GUI tests: Python's cycle collector runs on the GUI thread only.

    A widget a test made without docking it (``listed(InferenceWidget(v))``)
    is Python-owned garbage once the test drops it.  When the automatic
    collector happened to run in a thread worker (a checkpoint being read
    allocates tensors), Qt destroyed that widget off the GUI thread, sent
    its scroll bar events there, and the test process died of a
    segmentation fault (CI, stop 23).  Collection is paused for the test
    and done here, on the GUI thread, after its workers have finished
    (this fixture's teardown runs after the others').
    """
    if not _uses_qt(request):
        yield
        return
    import gc

    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.collect()
        if enabled:
            gc.enable()


@pytest.fixture(autouse=True)
def _no_worker_outlives_its_test(request):
    """GUI tests: wait for the docks' thread workers before the next test.

    napari waits for running workers when the application quits, but
    ``make_napari_viewer`` does not: a worker still running (e.g. reading a
    checkpoint's description) when its widget is torn down would emit into
    deleted Qt objects and abort the test process.
    """
    yield
    if not _uses_qt(request):
        return
    from superqt.utils import WorkerBase

    WorkerBase.await_workers(msecs=60_000)


@pytest.fixture(autouse=True)
def _settings_in_tmp(request, tmp_path_factory):
    """GUI tests keep their QSettings (the inference dock's recently used
    checkpoints) in a temporary folder, never in the user's own."""
    if not _uses_qt(request):
        yield
        return
    from qtpy.QtCore import QSettings

    fmt, scope = QSettings.Format.NativeFormat, QSettings.Scope.UserScope
    QSettings.setPath(fmt, scope, str(tmp_path_factory.mktemp('settings')))
    yield
    home = os.environ.get('XDG_CONFIG_HOME') or Path.home() / '.config'
    QSettings.setPath(fmt, scope, str(home))  # Qt's default on Unix


@pytest.fixture(autouse=True)
def _no_background_scan_compile(request, monkeypatch):
    """The docks compile the numba scan in a background process, and until it
    ends the ``auto`` backend runs the torch scan: tests that compare two
    forwards bit for bit would see the backend change between them.  So
    here the first scan compiles (or loads) the kernels in-process, except
    in ``test_scan_numba.py``, which tests the background compile itself."""
    if request.module.__name__.endswith('test_scan_numba'):
        return
    from napari_vmunet import _scan_warmup

    monkeypatch.setattr(_scan_warmup, 'start', lambda: None)
