"""Shared test set-up."""

from __future__ import annotations

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
