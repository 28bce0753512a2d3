"""The *Export for bioimage.io…* form of the inference and fine-tune docks."""

from __future__ import annotations

import pytest

from napari_vmunet._widgets.bioimageio_export import ExportDialog
from napari_vmunet._widgets.inference import InferenceWidget
from napari_vmunet._widgets.training import TrainingWidget
from napari_vmunet.checkpoint import load_checkpoint
from tiny_models import save_tiny

pytestmark = pytest.mark.gui


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    return save_tiny(
        tmp_path_factory.mktemp('m'),
        class_names=['background', 'cell'],
        tile_size=256,
        depths=[1] * 4,
        depths_decoder=[1] * 4,
    )


@pytest.fixture
def dock(make_napari_viewer, tiny, qtbot):
    viewer = make_napari_viewer()
    widget = InferenceWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.set_checkpoint(tiny)
    qtbot.waitUntil(lambda: 'parameters' in widget.model_info.text())
    return widget


def _open(widget, qtbot) -> ExportDialog:
    widget.export_button.click()
    dialog = widget._export_dialog
    assert isinstance(dialog, ExportDialog)
    qtbot.waitUntil(dialog.isVisible)
    return dialog


def test_cancel_writes_nothing(dock, qtbot, tmp_path):
    dialog = _open(dock, qtbot)
    assert dialog.checkpoint == dock.checkpoint_path()
    assert dialog.output.text().endswith('tiny.bioimageio.zip')
    dialog.authors.setText('Jane Doe')
    dialog.output.setText(str(tmp_path / 'cancelled.zip'))
    dialog.cancel_button.click()
    qtbot.waitUntil(lambda: not dialog.isVisible())
    assert dialog.result() == ExportDialog.DialogCode.Rejected
    assert dialog.written is None
    assert list(tmp_path.iterdir()) == []


def test_export_from_the_form_and_its_errors(dock, qtbot, tmp_path):
    dialog = _open(dock, qtbot)
    out = tmp_path / 'cells.zip'
    dialog.output.setText(str(out))
    # no author: the form says so, stays open and writes nothing
    dialog.export_button.click()
    qtbot.waitUntil(lambda: not dialog.is_running(), timeout=60_000)
    assert 'at least one author' in dialog.status.text()
    assert dialog.isVisible() and not out.exists()

    dialog.name.setText('Tiny cells (GUI test)')
    dialog.authors.setText('Jane Doe; John Smith')
    dialog.cite.setPlainText('A paper|10.1234/abcd\n')
    dialog.license.setCurrentText('MIT')
    dialog.export_button.click()
    assert not dialog.export_button.isEnabled()
    qtbot.waitUntil(lambda: dialog.written is not None, timeout=120_000)
    qtbot.waitUntil(lambda: not dialog.is_running())
    assert dialog.result() == ExportDialog.DialogCode.Accepted
    assert dialog.written == out
    ckpt = load_checkpoint(out)
    assert ckpt.source_format == 'bioimageio'
    assert ckpt.class_names == ['background', 'cell']
    # an existing file is not replaced
    dock.export_button.click()
    again = dock._export_dialog
    qtbot.waitUntil(again.isVisible)
    again.authors.setText('Jane Doe')
    again.output.setText(str(out))
    again.export_button.click()
    assert 'already exists' in again.status.text()
    again.cancel_button.click()


def test_fine_tune_dock_offers_export_of_its_best_model(
    make_napari_viewer, tiny, qtbot
):
    viewer = make_napari_viewer()
    widget = TrainingWidget(viewer)
    viewer.window.add_dock_widget(widget)
    assert not widget.export_button.isEnabled()  # nothing trained yet
    widget._best = str(tiny)
    widget.export_button.setEnabled(True)
    widget.export_button.click()
    dialog = widget._export_dialog
    qtbot.waitUntil(dialog.isVisible)
    assert dialog.checkpoint == str(tiny)
    dialog.cancel_button.click()
    qtbot.waitUntil(lambda: not dialog.isVisible())
