"""The inference dock and unusable checkpoints: never remembered, Run
disabled while one is selected, and a file deleted after it was chosen is
explained in words (issue #16, item 9)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from qtpy.QtWidgets import QFileDialog

from napari_vmunet._widgets._inference_model import remembered_checkpoints
from napari_vmunet._widgets.inference import InferenceWidget
from napari_vmunet.checkpoint import (
    CheckpointError,
    check_checkpoint_file,
)
from tiny_models import save_tiny


@pytest.fixture(scope='module')
def good_ckpt(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp('g'), 'good', class_names=['bg', 'cell'])


def browse(widget, monkeypatch, path) -> None:
    """Press Browse… and pick ``path`` in the file dialog."""
    monkeypatch.setattr(
        QFileDialog, 'getOpenFileName', staticmethod(lambda *a, **k: (str(path), ''))
    )
    widget.browse.click()


def listed(widget) -> list[str]:
    box = widget.checkpoint
    return [
        box.itemData(i)
        for i in range(box.count())
        if not box.itemText(i).startswith('built-in')
    ]


def test_plainly_bad_files_are_refused_without_reading_weights(tmp_path, good_ckpt):
    text = tmp_path / 'notes.safetensors'
    text.write_text('these are my notes, not a model\n')
    empty = tmp_path / 'empty.pth'
    empty.touch()
    for path, words in (
        (text, 'is a text file'),
        (empty, 'is empty'),
        (tmp_path / 'missing.pth', 'no such file'),
        (tmp_path, 'is a folder'),
    ):
        with pytest.raises(CheckpointError, match=words):
            check_checkpoint_file(path)
    assert check_checkpoint_file(good_ckpt) == good_ckpt


@pytest.mark.gui
def test_text_and_empty_files_are_not_remembered_and_disable_run(
    make_napari_viewer, qtbot, monkeypatch, tmp_path, good_ckpt
):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((64, 64), np.float32), name='img')
    widget = InferenceWidget(viewer)
    viewer.window.add_dock_widget(widget)
    browse(widget, monkeypatch, good_ckpt)
    qtbot.waitUntil(lambda: 'parameters' in widget.model_info.text())
    assert widget.run_button.isEnabled()

    text = tmp_path / 'readme.pth'
    text.write_text('VM-UNet weights: see the link in the paper\n')
    empty = tmp_path / 'half-copied.safetensors'
    empty.touch()
    for bad, words in ((text, 'is a text file'), (empty, 'is empty')):
        browse(widget, monkeypatch, bad)
        assert widget.checkpoint_path() == str(bad)
        qtbot.waitUntil(lambda: 'Cannot use this file' in widget.model_info.text())
        assert words in widget.model_info.text()
        assert not widget.run_button.isEnabled()
        assert str(bad) not in remembered_checkpoints()
    # choosing a usable one again enables Run
    widget.checkpoint.setCurrentIndex(widget.checkpoint.findData(str(good_ckpt)))
    qtbot.waitUntil(lambda: 'parameters' in widget.model_info.text())
    assert widget.run_button.isEnabled()
    # a new session (a new dock) lists the good file only
    assert listed(InferenceWidget(viewer)) == [str(good_ckpt)]


@pytest.mark.gui
def test_a_file_that_only_fails_to_load_is_forgotten(
    make_napari_viewer, qtbot, monkeypatch, tmp_path, good_ckpt
):
    viewer = make_napari_viewer()
    widget = InferenceWidget(viewer)
    viewer.window.add_dock_widget(widget)
    cut = tmp_path / 'cut.safetensors'
    data = good_ckpt.read_bytes()
    header = 8 + int.from_bytes(data[:8], 'little')
    cut.write_bytes(data[: header + 100])  # the header intact, the weights cut
    browse(widget, monkeypatch, cut)
    assert str(cut) in remembered_checkpoints()  # it looked like one at first
    qtbot.waitUntil(lambda: 'Cannot use this file' in widget.model_info.text())
    assert str(cut) not in remembered_checkpoints()
    assert str(cut) not in listed(InferenceWidget(viewer))


@pytest.mark.gui
def test_a_checkpoint_deleted_after_it_was_chosen_is_explained(
    make_napari_viewer, qtbot, monkeypatch, tmp_path, good_ckpt
):
    viewer = make_napari_viewer()
    layer = viewer.add_image(np.zeros((64, 64), np.float32), name='img')
    widget = InferenceWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.set_image_layer(layer)
    mine = shutil.copy(good_ckpt, tmp_path / 'mine.safetensors')
    browse(widget, monkeypatch, mine)
    qtbot.waitUntil(lambda: 'parameters' in widget.model_info.text())
    mine.unlink()
    errors = []
    monkeypatch.setattr(
        'napari.utils.notifications.show_error', lambda msg: errors.append(msg)
    )
    widget.run_button.click()
    qtbot.waitUntil(lambda: widget._worker is None and not widget._ui_steps)
    status = widget.status.text()
    assert 'mine.safetensors is no longer there' in status, status
    assert 'moved or deleted' in status and 'Browse' in status
    assert 'Errno' not in status and errors and 'Errno' not in errors[-1]
    assert not widget.run_button.isEnabled()
    assert 'Cannot use this file' in widget.model_info.text()
    assert 'img [mine]' not in viewer.layers
    assert str(mine) not in remembered_checkpoints()


@pytest.mark.gui
def test_a_dock_closed_while_its_checkpoint_is_read_reports_nothing(
    make_napari_viewer, qtbot, tmp_path, good_ckpt
):
    """The file's read fails after the dock is gone: no error from a deleted
    widget, and the file is forgotten all the same."""
    import gc

    viewer = make_napari_viewer()
    cut = tmp_path / 'cut.safetensors'
    data = good_ckpt.read_bytes()
    header = 8 + int.from_bytes(data[:8], 'little')
    cut.write_bytes(data[: header + 100])  # passes the quick check, fails to load
    widget = InferenceWidget(viewer)
    widget.set_checkpoint(cut)
    worker = widget.model._info_worker
    assert str(cut) in remembered_checkpoints()
    del widget
    gc.collect()  # the dock is gone before the worker's answer arrives
    with qtbot.waitSignal(worker.finished, timeout=30_000):
        pass
    qtbot.wait(50)  # the errored slot runs in this event loop
    assert str(cut) not in remembered_checkpoints()


@pytest.mark.gui
def test_the_first_runs_imports_are_done_when_the_dock_opens(
    make_napari_viewer, qtbot, monkeypatch, tmp_path, good_ckpt
):
    """MONAI's window helpers (1,600 modules with SciPy and scikit-image)
    are imported in a worker once a model has been read, not inside the
    first Run, where their extension loads stalled the viewer."""
    import threading

    import napari_vmunet._widgets._inference_model as dock_model
    import napari_vmunet.rules.tiling as tiling

    calls = []
    monkeypatch.setattr(dock_model, '_warm_worker', None)
    monkeypatch.setattr(
        tiling, 'load_window_helpers', lambda: calls.append(threading.current_thread())
    )
    viewer = make_napari_viewer()
    widget = InferenceWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.set_checkpoint(good_ckpt)
    qtbot.waitUntil(lambda: bool(calls), timeout=30_000)
    assert calls[0] is not threading.main_thread()
    # once per session: reading another model does not import again
    other = save_tiny(tmp_path, 'other', class_names=['bg', 'fg'])
    reads = []
    widget.model.described.connect(lambda ckpt: reads.append(ckpt.path))
    widget.set_checkpoint(other)
    qtbot.waitUntil(lambda: bool(reads), timeout=30_000)
    qtbot.wait(100)
    assert str(reads[-1]) == str(other) and len(calls) == 1
