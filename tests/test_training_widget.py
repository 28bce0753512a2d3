"""The fine-tune dock in a real napari viewer: train, stop, resume, crash,
hot swap into the inference dock, and a viewer that keeps responding."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

from napari_vmunet._widgets.inference import InferenceWidget
from napari_vmunet._widgets.training import TrainingWidget
from napari_vmunet.checkpoint import load_checkpoint
from stall_monitor import StallMonitor
from tiny_models import save_tiny

pytestmark = pytest.mark.gui


@pytest.fixture(scope='module')
def start_ckpt(tmp_path_factory):
    return save_tiny(
        tmp_path_factory.mktemp('s'), 'start', class_names=['background', 'nucleus']
    )


@pytest.fixture
def docks(make_napari_viewer, start_ckpt, tmp_path):
    viewer = make_napari_viewer()
    viewer.open_sample('napari-vmunet', 'nuclei')
    image, labels = viewer.layers[0], viewer.layers[1]
    infer = InferenceWidget(viewer)
    viewer.window.add_dock_widget(infer)
    train = TrainingWidget(viewer)
    viewer.window.add_dock_widget(train)
    train.image_layer.set_value(image)
    train.labels_layer.set_value(labels)
    train.set_start_checkpoint(start_ckpt)
    train.epochs.setValue(3)
    train.batch_size.setValue(2)
    train.output.setText(str(tmp_path / 'tuned.safetensors'))
    train.device.setCurrentText('cpu')
    yield viewer, train, infer, labels
    train.shutdown()


def events_of(widget, kind):
    return [e for e in widget.history if type(e).__name__ == kind]


def test_training_runs_in_the_background_and_hot_swaps_the_model(docks, qtbot):
    viewer, train, infer, labels = docks
    before = np.array(labels.data)
    published = []
    from napari_vmunet._widgets._bus import bus

    bus.model_published.connect(lambda path, why: published.append(path))
    monitor = StallMonitor()
    monitor.start()
    train.start()
    # keep painting while it trains: the run uses a copy of the labels
    qtbot.waitUntil(lambda: bool(events_of(train, 'Step')), timeout=60_000)
    for i in range(20):
        labels.paint((10 + i, 10 + i), 999, refresh=True)
        qtbot.wait(20)
    qtbot.waitUntil(lambda: bool(events_of(train, 'Finished')), timeout=240_000)
    monitor.stop()
    finished = events_of(train, 'Finished')[0]
    assert finished.reason == 'completed', finished.message
    assert len(events_of(train, 'EpochEnd')) == 3
    assert len(train.plot.train) == 3 and train.plot.steps
    assert monitor.longest_stall_ms < 1000, monitor.longest_stall_ms
    # the user's layers were never written by training (only our painting)
    painted = labels.data == 999
    np.testing.assert_array_equal(np.asarray(labels.data)[~painted], before[~painted])
    # the improved model went to the inference dock
    best = train.output.text()
    assert published and published[-1] == best
    assert infer.checkpoint_path() == best
    ckpt = load_checkpoint(best)
    # one image: a strip of it is held out, so "best" is chosen on validation
    assert finished.best_epoch in (1, 2, 3) and finished.best_mean_dice is not None
    assert ckpt.metadata['provenance']['epochs'] == finished.best_epoch
    notes = events_of(train, 'Started')[0].notes
    assert any('validating on a strip of it' in n for n in notes)
    assert ckpt.metadata['classes']['names'] == ['background', 'nucleus']
    assert 'Finished 3 epoch' in train.status.text()


def test_stop_then_resume_continues_from_the_saved_epoch(docks, qtbot):
    _, train, _, _ = docks
    train.epochs.setValue(50)
    train.start()
    qtbot.waitUntil(lambda: bool(events_of(train, 'EpochEnd')), timeout=120_000)
    t0 = time.monotonic()
    train.stop()
    qtbot.waitUntil(lambda: bool(events_of(train, 'Finished')), timeout=30_000)
    assert time.monotonic() - t0 < 5
    stopped = events_of(train, 'Finished')[0]
    assert stopped.reason == 'stopped'
    done = stopped.epochs_done
    assert train.resume_button.isEnabled()
    train.resume()
    qtbot.waitUntil(lambda: len(events_of(train, 'Started')) == 2, timeout=60_000)
    resumed = events_of(train, 'Started')[1]
    assert resumed.resumed and resumed.start_epoch == done
    qtbot.waitUntil(lambda: len(events_of(train, 'EpochEnd')) > done, timeout=120_000)
    assert events_of(train, 'EpochEnd')[-1].epoch == done + 1
    train.stop()
    qtbot.waitUntil(lambda: len(events_of(train, 'Finished')) == 2, timeout=30_000)


def test_a_new_run_asks_before_replacing_an_earlier_one(docks, qtbot, tmp_path):
    _, train, _, _ = docks
    train.epochs.setValue(1)
    train.start()
    qtbot.waitUntil(lambda: bool(events_of(train, 'Finished')), timeout=120_000)
    out = tmp_path / 'tuned.safetensors'
    before = out.read_bytes()
    asked = []
    train.confirm_overwrite = lambda paths: asked.append(paths) or False
    train.start()
    assert asked and out in asked[0]
    assert train.process.finished is not None  # nothing new started
    assert out.read_bytes() == before
    assert 'earlier run is kept' in train.status.text()
    train.confirm_overwrite = lambda paths: True
    train.start()  # a new run: the dock's history starts afresh
    qtbot.waitUntil(lambda: bool(events_of(train, 'Finished')), timeout=120_000)
    assert events_of(train, 'Finished')[-1].reason == 'completed'
    assert out.read_bytes() != before


def test_a_killed_training_process_is_reported_and_napari_lives_on(docks, qtbot):
    viewer, train, _, _ = docks
    train.epochs.setValue(50)
    errors = []
    train._error = lambda text, _orig=train._error: (errors.append(text), _orig(text))
    train.start()
    qtbot.waitUntil(lambda: bool(events_of(train, 'Step')), timeout=60_000)
    os.kill(train.process.pid, signal.SIGKILL)  # e.g. the OOM killer
    qtbot.waitUntil(lambda: bool(events_of(train, 'Finished')), timeout=30_000)
    finished = events_of(train, 'Finished')[0]
    assert finished.reason == 'error'
    assert 'killed by SIGKILL' in finished.message
    assert errors and 'Training failed' in errors[-1]
    assert train.start_button.isEnabled()
    viewer.add_image(np.zeros((4, 4)))  # the viewer still works


def test_bad_setup_is_reported_without_starting(docks, qtbot):
    viewer, train, _, labels = docks
    errors = []
    train._error = lambda text: errors.append(text)
    other = viewer.add_labels(np.zeros((5, 5), dtype=np.uint8), name='wrong size')
    train.labels_layer.set_value(other)
    train.start()
    qtbot.waitUntil(lambda: bool(errors), timeout=30_000)
    assert train.process is None or not train.process.is_alive()
    assert train.start_button.isEnabled()


def test_slice_axis_is_offered_for_volumes_only(docks):
    viewer, train, _, _ = docks
    assert not train.slice_axis.isEnabled()  # the 2D nuclei image
    volume = viewer.add_image(np.zeros((6, 32, 32), dtype=np.float32), name='vol')
    train.image_layer.set_value(volume)
    assert train.slice_axis.isEnabled()
    assert train.slice_axis.maximum() == 2
    rgb = viewer.add_image(np.zeros((32, 32, 3), dtype=np.uint8), name='rgb', rgb=True)
    train.image_layer.set_value(rgb)
    assert not train.slice_axis.isEnabled()


def test_the_recipe_follows_the_starting_point(docks, start_ckpt):
    """A new model gets the scratch preset's learning rate (issue #19), a
    trained one the fine-tune preset's; the user's own epochs survive a
    change of checkpoint that keeps the preset."""
    _, train, _, _ = docks
    train.start_from.setCurrentIndex(train.start_from.findData('scratch-small'))
    config = train.config()
    assert (config.preset, config.lr, config.epochs) == ('scratch', 1e-3, 60)
    assert config.dims == [24, 48, 96, 192]
    train.set_start_checkpoint(start_ckpt)
    assert (train.config().preset, train.lr.value()) == ('finetune', 1e-4)
    train.epochs.setValue(7)
    builtin = next(
        i for i in range(train.start_from.count())
        if train.start_from.itemText(i).startswith('built-in')
    )  # fmt: skip
    train.start_from.setCurrentIndex(builtin)
    assert (train.config().preset, train.config().epochs) == ('finetune', 7)


def test_decoder_only_fine_tuning_is_one_check_box(docks):
    _, train, _, _ = docks
    assert train.config().freeze_encoder is False
    train.freeze_encoder.setChecked(True)
    assert train.config().freeze_encoder is True


def test_the_widgets_become_the_request(docks, start_ckpt, tmp_path):
    """What the dock shows, as FineTuneChoices, and the TrainConfig made of
    them: the inference dock's model as the start, the pair, the classes."""
    viewer, train, infer, labels = docks
    infer.set_checkpoint(start_ckpt)
    train.start_from.setCurrentIndex(train.start_from.findData('inference'))
    train.class_names.setText('background, nucleus')
    train.val_fraction.setValue(0.3)
    choices = train.choices()
    assert choices.start == 'inference'
    assert choices.inference_checkpoint == str(start_ckpt)
    assert choices.training_data == f'{viewer.layers[0].name} + {labels.name}'
    assert (choices.epochs, choices.batch_size, choices.device) == (3, 2, 'cpu')
    config = train.config()
    assert config.init == str(start_ckpt)
    assert config.class_names == ['background', 'nucleus']
    assert (config.val_fraction, config.preset) == (0.3, 'finetune')
    assert config.output == tmp_path / 'tuned.safetensors'
    assert train.data.pairs == []  # asking for the config lists no pair


def test_a_new_start_trains_on_the_layers_chosen_now(docks):
    """The pair list is empty ("empty: the pair above"): after a run, other
    layers chosen above are what the next run trains on, not the last
    run's pair kept out of sight."""
    viewer, train, _, _ = docks
    (first,) = train.training_pairs()  # as Start reads them
    image = viewer.add_image(np.zeros((64, 64), np.float32), name='second')
    labels = viewer.add_labels(np.zeros((64, 64), np.uint8), name='second labels')
    train.image_layer.set_value(image)
    train.labels_layer.set_value(labels)
    (pair,) = train.training_pairs()
    assert pair.name == 'second' and first.name != 'second'
    assert train.choices().training_data == 'second + second labels'
    assert train.pair_list.count() == 0
