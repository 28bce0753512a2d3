"""Small things a newcomer meets in the fine-tune dock (issue #16, item 10):
the plot's epoch axis and legend, the *Save to* field, and the
background-only button of volumes."""

from __future__ import annotations

import numpy as np
import pytest

from napari_vmunet._widgets._plot import epoch_ticks
from napari_vmunet._widgets.training import TrainingWidget
from napari_vmunet.training.events import EpochEnd, Started, Step

pytestmark = pytest.mark.gui


@pytest.fixture
def dock(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    widget = TrainingWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.resize(420, 800)
    return viewer, widget


def started(n_val: int, epochs: int = 20) -> Started:
    return Started(
        total_epochs=epochs,
        start_epoch=0,
        n_train=1,
        n_val=n_val,
        steps_per_epoch=4,
        batch_size=2,
        tile_size=64,
        device='cpu',
        model='VM-UNet',
        parameters=1000,
        class_names=('background', 'cell'),
        initialized_from='scratch',
    )


def epoch_end(epoch: int, val: bool) -> EpochEnd:
    return EpochEnd(
        epoch=epoch,
        total_epochs=20,
        train_loss=0.5 / epoch,
        val_loss=0.6 / epoch if val else None,
        val_dice={'cell': 0.5} if val else {},
        mean_dice=0.5 if val else None,
        lr=1e-3,
        seconds=1.0,
        eta_seconds=10.0,
        improved=True,
    )


def test_epoch_ticks_are_whole_epochs_that_fit():
    assert epoch_ticks(20, 30) == list(range(21))
    assert epoch_ticks(20, 8) == [0, 5, 10, 15, 20]
    assert epoch_ticks(200, 6) == [0, 50, 100, 150, 200]
    assert epoch_ticks(1, 10) == [0, 1]
    for last, room in ((3, 2), (37, 7), (1000, 5), (9999, 12)):
        ticks = epoch_ticks(last, room)
        assert 2 <= len(ticks) <= max(room, 2)
        assert all(isinstance(t, int) for t in ticks) and ticks[0] == 0


def test_plot_axis_spans_the_epochs_set_before_a_run(dock):
    _, widget = dock
    widget.epochs.setValue(20)
    assert widget.plot.axis_label() == 'epoch (of 20)'
    assert widget.plot.last_epoch() == 20
    widget.preset.setCurrentIndex(widget.preset.findData('full'))
    assert widget.plot.axis_label() == f'epoch (of {widget.epochs.value()})'
    widget.plot.grab()  # draws ticks and labels without error


def test_validation_curves_are_listed_only_with_validation(dock):
    _, widget = dock
    names = lambda: [label for label, _ in widget.plot.legend()]  # noqa: E731
    assert names() == ['loss']  # before a run
    widget.handle(started(n_val=0))
    widget.handle(Step(1, 1, 4, 0.7, 1e-3))
    widget.handle(epoch_end(1, val=False))
    assert names() == ['loss']
    widget.plot.grab()
    widget.plot.clear()
    widget.handle(started(n_val=1))
    assert names() == ['loss', 'val loss', 'val Dice (right)']
    widget.handle(epoch_end(1, val=True))
    assert widget.plot.dice == [(1, 0.5)]
    widget.plot.grab()


def test_save_to_shows_the_file_name_and_the_full_path_in_a_tooltip(dock, qtbot):
    _, widget = dock
    path = (
        '/home/someone/projects/2026/microscopy/experiment-42/napari-vmunet/'
        'models/nuclei-20261202-101500.safetensors'
    )
    widget.output.setText(path)
    widget.output.setCursorPosition(0)  # as a plain field would show it
    widget.output.clearFocus()
    qtbot.wait(50)
    shown = widget.output.shown_text()
    assert shown.startswith('…') and shown.endswith(
        'nuclei-20261202-101500.safetensors'
    )
    assert widget.output.toolTip() == path
    assert widget.output.text() == path  # the value itself is untouched
    # the field takes the row's width, next to its label and button
    row = widget.output.parentWidget()
    assert widget.output.width() > 0.6 * row.width()
    widget.output.grab()  # paints the elided text
    widget.output.setText('/tmp/m.safetensors')
    assert widget.output.shown_text() == '/tmp/m.safetensors'


def test_background_only_is_offered_for_volumes_only(dock):
    viewer, widget = dock
    image = viewer.add_image(np.zeros((64, 64), np.float32), name='plane')
    widget.image_layer.set_value(image)
    assert not widget.background_button.isEnabled()
    volume = viewer.add_image(np.zeros((5, 64, 64), np.float32), name='stack')
    widget.image_layer.set_value(volume)
    assert widget.background_button.isEnabled()
    rgb = viewer.add_image(np.zeros((64, 64, 3), np.uint8), name='photo', rgb=True)
    widget.image_layer.set_value(rgb)
    assert not widget.background_button.isEnabled()
