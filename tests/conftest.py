"""Shared test set-up."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _no_worker_outlives_its_test(request):
    """GUI tests: wait for the docks' thread workers before the next test.

    napari waits for running workers when the application quits, but
    ``make_napari_viewer`` does not: a worker still running (e.g. reading a
    checkpoint's description) when its widget is torn down would emit into
    deleted Qt objects and abort the test process.
    """
    yield
    uses_qt = {'qtbot', 'make_napari_viewer'} & set(request.fixturenames)
    if request.node.get_closest_marker('gui') is None and not uses_qt:
        return
    from superqt.utils import WorkerBase

    WorkerBase.await_workers(msecs=60_000)


@pytest.fixture(autouse=True)
def _settings_in_tmp(request, tmp_path_factory):
    """GUI tests keep their QSettings (the inference dock's recently used
    checkpoints) in a temporary folder, never in the user's own."""
    uses_qt = {'qtbot', 'make_napari_viewer'} & set(request.fixturenames)
    if request.node.get_closest_marker('gui') is None and not uses_qt:
        yield
        return
    from qtpy.QtCore import QSettings

    fmt, scope = QSettings.Format.NativeFormat, QSettings.Scope.UserScope
    QSettings.setPath(fmt, scope, str(tmp_path_factory.mktemp('settings')))
    yield
    home = os.environ.get('XDG_CONFIG_HOME') or Path.home() / '.config'
    QSettings.setPath(fmt, scope, str(home))  # Qt's default on Unix
