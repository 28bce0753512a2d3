"""The inference dock in a real napari viewer (under Xvfb)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from napari_vmunet._widgets.inference import InferenceWidget
from napari_vmunet.inference import Predictor
from napari_vmunet.io import load_sample
from stall_monitor import StallMonitor
from tiny_models import save_tiny

pytestmark = pytest.mark.gui


@pytest.fixture(scope='module')
def tiny_ckpt(tmp_path_factory):
    return save_tiny(
        tmp_path_factory.mktemp('m'),
        num_classes=3,
        class_names=['background', 'grey matter', 'white matter'],
    )


@pytest.fixture
def dock(make_napari_viewer, tiny_ckpt, qtbot):
    viewer = make_napari_viewer()
    widget = InferenceWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.set_checkpoint(tiny_ckpt)
    widget.device.setCurrentText('cpu')
    qtbot.waitUntil(lambda: 'parameters' in widget.model_info.text())
    assert '3 class(es): grey matter, white matter' in widget.model_info.text()
    return viewer, widget


def run_and_wait(widget, qtbot, timeout=120_000):
    widget.run()
    qtbot.waitUntil(lambda: widget._worker is None, timeout=timeout)


def test_2d_run_creates_an_editable_labels_layer_in_the_image_space(dock, qtbot):
    viewer, widget = dock
    image = np.random.default_rng(0).random((100, 120)).astype(np.float32)
    layer = viewer.add_image(image, name='cells', scale=(0.5, 0.25), translate=(10, 20))
    widget.set_image_layer(layer)
    run_and_wait(widget, qtbot)
    labels = viewer.layers['cells [tiny]']
    assert labels.data.shape == (100, 120)
    assert labels.data.dtype == np.uint8
    np.testing.assert_allclose(labels.scale, (0.5, 0.25))
    np.testing.assert_allclose(labels.translate, (10, 20))
    assert labels.editable
    want = Predictor(widget.checkpoint_path(), device='cpu').predict(image).labels
    np.testing.assert_array_equal(labels.data, want)
    assert list(labels.features['class']) == [
        'background',
        'grey matter',
        'white matter',
    ]
    assert 'ready to edit' in widget.status.text()
    # running again updates the same layer instead of piling up new ones
    n_layers = len(viewer.layers)
    labels.data = np.zeros_like(labels.data)
    run_and_wait(widget, qtbot)
    assert len(viewer.layers) == n_layers
    np.testing.assert_array_equal(viewer.layers['cells [tiny]'].data, want)


def test_3d_volume_whole_and_current_slice_with_probabilities(dock, qtbot):
    viewer, widget = dock
    brain, _ = load_sample('brain')
    vol = np.asarray(brain.data[90:96, 60:160, 50:150])
    layer = viewer.add_image(vol, name='brain', scale=brain.scale)
    widget.set_image_layer(layer)
    widget.probabilities.setChecked(True)
    monitor = StallMonitor()
    monitor.start()
    run_and_wait(widget, qtbot)
    monitor.stop()
    labels = viewer.layers['brain [tiny]']
    assert labels.data.shape == vol.shape
    for cls in ('background', 'grey matter', 'white matter'):
        probs = viewer.layers[f'brain [tiny] p({cls})']
        assert probs.data.shape == vol.shape
        np.testing.assert_allclose(probs.scale, brain.scale)
    assert viewer.dims.ndim == 3  # probabilities add no extra slider
    np.testing.assert_allclose(labels.scale, brain.scale)
    # the GUI thread kept running while the volume was predicted
    assert monitor.gaps, 'the event loop never ran during the prediction'
    assert monitor.longest_stall_ms < 1000, monitor.longest_stall_ms

    # current slice: only that plane changes
    labels.data = np.zeros_like(labels.data)
    viewer.dims.set_point(0, brain.scale[0] * 3)
    widget.scope_slice.setChecked(True)
    widget.probabilities.setChecked(False)
    run_and_wait(widget, qtbot)
    data = viewer.layers['brain [tiny]'].data
    changed = [z for z in range(vol.shape[0]) if data[z].any()]
    assert changed == [3]


def test_cancel_leaves_the_layers_untouched(dock, qtbot):
    viewer, widget = dock
    layer = viewer.add_image(
        np.random.default_rng(1).random((20, 256, 256)), name='big'
    )
    widget.set_image_layer(layer)
    widget.batch_size.setValue(1)
    seen = []
    widget.run()
    widget._worker.yielded.connect(lambda step: seen.append(step))
    qtbot.waitUntil(lambda: len(seen) >= 3, timeout=60_000)
    widget.cancel()
    qtbot.waitUntil(lambda: widget._worker is None, timeout=60_000)
    assert 'big [tiny]' not in viewer.layers
    assert 'Cancelled' in widget.status.text()
    assert seen[-1].done < seen[-1].total
    assert widget.run_button.isEnabled()


def test_bad_checkpoint_and_wrong_channels_are_reported(
    dock, qtbot, tmp_path, tiny_ckpt
):
    viewer, widget = dock
    bad = tmp_path / 'broken.pth'
    bad.write_bytes(b'\x00garbage' * 10)
    widget.set_checkpoint(bad)
    qtbot.waitUntil(lambda: 'Cannot use this file' in widget.model_info.text())
    assert 'broken.pth' in widget.model_info.text()
    layer = viewer.add_image(
        np.random.default_rng(0).random((2, 64, 64)), name='two channels'
    )
    widget.set_image_layer(layer)
    errors = []
    widget._error = lambda err, _orig=widget._error: (errors.append(err), _orig(err))
    run_and_wait(widget, qtbot)
    assert errors and 'broken.pth' in str(errors[-1])
    assert 'failed' in widget.status.text()

    widget.set_checkpoint(tiny_ckpt)
    widget.channel_axis.setCurrentIndex(1)  # axis 0 holds 2 channels
    errors.clear()
    run_and_wait(widget, qtbot)
    assert errors and 'channel' in str(errors[-1])
    assert 'two channels [tiny]' not in viewer.layers


def test_volume_with_a_channel_axis_offers_the_right_slice_axes(dock, qtbot):
    viewer, widget = dock
    vol = np.random.default_rng(3).random((4, 2, 40, 48)).astype(np.float32)
    layer = viewer.add_image(vol, name='zcyx', scale=(2.0, 1.0, 0.5, 0.5))
    widget.set_image_layer(layer)
    widget.channel_axis.setCurrentIndex(widget.channel_axis.findData(1))
    offered = [widget.slice_axis.itemData(i) for i in range(widget.slice_axis.count())]
    assert offered == [0, 2, 3]
    widget.channel_map.setText('0,1,1')
    run_and_wait(widget, qtbot)
    labels = viewer.layers['zcyx [tiny]']
    assert labels.data.shape == (4, 40, 48)
    np.testing.assert_allclose(labels.scale, (2.0, 0.5, 0.5))


def test_chosen_checkpoints_are_remembered_across_sessions(
    make_napari_viewer, tiny_ckpt, tmp_path
):
    viewer = make_napari_viewer()
    other = shutil.copy(tiny_ckpt, tmp_path / 'other.safetensors')
    first = InferenceWidget(viewer)
    first.set_checkpoint(tiny_ckpt)
    first.set_checkpoint(other)

    def remembered(widget):
        box = widget.checkpoint
        return [
            box.itemData(i)
            for i in range(box.count())
            if not box.itemText(i).startswith('built-in')
        ]

    # a new dock (a new napari session) lists them, the newest first
    assert remembered(InferenceWidget(viewer)) == [str(other), str(tiny_ckpt)]
    other.unlink()  # files that are gone are dropped
    assert remembered(InferenceWidget(viewer)) == [str(tiny_ckpt)]


def test_the_model_that_suits_the_image_is_preselected_and_never_a_wrong_one(
    make_napari_viewer, qtbot
):
    """Issue #16, item 1: the nuclei sample gets demo-nuclei (not the first
    listed, demo-brain), the brain volume demo-brain, and an image no model
    is known to suit gets no model and no Run until the user chooses."""
    viewer = make_napari_viewer()
    viewer.open_sample('napari-vmunet', 'nuclei')
    widget = InferenceWidget(viewer)
    viewer.window.add_dock_widget(widget)

    def chosen():
        return str(widget.checkpoint_path() or '')

    qtbot.waitUntil(
        lambda: chosen().endswith('demo-nuclei.safetensors'), timeout=60_000
    )
    assert 'trained on images like' in widget.status.text()
    brain, _ = load_sample('brain')
    volume = viewer.add_image(np.asarray(brain.data), name='brain')
    widget.set_image_layer(volume)
    qtbot.waitUntil(lambda: chosen().endswith('demo-brain.safetensors'), timeout=60_000)
    nuclei = np.asarray(viewer.layers[0].data)
    inverted = viewer.add_image(nuclei.max() - nuclei, name='inverted')
    widget.set_image_layer(inverted)
    qtbot.waitUntil(lambda: widget.checkpoint_path() is None, timeout=60_000)
    assert 'No listed model is known to suit “inverted”' in widget.model_info.text()
    assert not widget.run_button.isEnabled()
    # the user's own choice is kept whatever the image
    widget.checkpoint.setCurrentIndex(0)
    widget.checkpoint.activated.emit(0)
    widget.set_image_layer(volume)
    widget.set_image_layer(inverted)
    qtbot.wait(500)
    assert widget.checkpoint_path() == widget.checkpoint.itemData(0)
    assert widget.run_button.isEnabled()


def test_a_4d_stack_predicts_the_current_time_point_or_all(dock, qtbot):
    """Issue #16, item 10: a (T, Z, Y, X) stack used to stop at "pick one
    time point" with nothing in the dock to pick it."""
    viewer, widget = dock
    brain, _ = load_sample('brain')
    vol = np.asarray(brain.data[90:92, 60:124, 50:114])
    stack = np.stack([vol, vol[:, ::-1].copy(), vol[:, :, ::-1].copy()])
    layer = viewer.add_image(stack, name='series')
    widget.set_image_layer(layer)
    assert widget.time_points.isEnabled()
    assert [
        widget.slice_axis.itemData(i) for i in range(widget.slice_axis.count())
    ] == [
        1,
        2,
        3,
    ]
    viewer.dims.set_point(0, 2)
    widget.time_points.setCurrentIndex(widget.time_points.findData('current'))
    run_and_wait(widget, qtbot)
    labels = viewer.layers['series [tiny]']
    assert labels.data.shape == stack.shape
    predictor = Predictor(widget.checkpoint_path(), device='cpu')
    np.testing.assert_array_equal(labels.data[2], predictor.predict(stack[2]).labels)
    assert not labels.data[:2].any()
    widget.time_points.setCurrentIndex(widget.time_points.findData('all'))
    run_and_wait(widget, qtbot)
    for t in range(3):
        np.testing.assert_array_equal(
            labels.data[t], predictor.predict(stack[t]).labels
        )
    # a 3-D volume has no time points to choose
    widget.set_image_layer(viewer.add_image(vol, name='one'))
    assert not widget.time_points.isEnabled()


def test_the_dock_offers_the_fixes_for_outliers_and_missing_data(dock, qtbot):
    """Issue #16, item 3: one pixel at 10x the maximum ruins min-max; the
    dock's percentile normalisation and NaN-as-background are the fixes."""
    viewer, widget = dock
    image, _ = load_sample('nuclei')
    x = np.asarray(image.data[:128, :128], dtype=np.float32).copy()
    x[5, 5] = 10 * x.max()
    x[60:90, 60:90] = np.nan
    layer = viewer.add_image(x, name='odd')
    widget.set_image_layer(layer)
    run_and_wait(widget, qtbot)
    assert 'min-max normalisation squeezes' in widget.status.text()
    assert 'NaN / Inf pixels are background' in widget.status.text()
    widget.normalization.setCurrentIndex(widget.normalization.findData('percentile'))
    widget.nonfinite_background.setChecked(True)
    run_and_wait(widget, qtbot)
    text = widget.status.text()
    assert 'squeezes' not in text and 'labelled background, as asked' in text
    labels = viewer.layers['odd [tiny]'].data
    assert not labels[60:90, 60:90].any()
    want = Predictor(
        widget.checkpoint_path(),
        device='cpu',
        normalization={'mode': 'percentile'},
        nonfinite_background=True,
    ).predict(x)
    np.testing.assert_array_equal(labels, want.labels)


def test_the_diagnostics_line_names_the_scan_and_follows_its_background_compile(
    dock, qtbot, monkeypatch
):
    """Worked out in a worker (it may load the numba scan); while the
    background compile runs it says so, and it says numba once that ends."""
    from napari_vmunet import _scan_warmup

    _, widget = dock
    qtbot.waitUntil(lambda: 'scan: ' in widget.diagnostics.text(), timeout=60_000)
    assert 'scan: numba' in widget.diagnostics.text()
    compiling = [True]
    monkeypatch.setattr(_scan_warmup, 'running', lambda: compiling[0])
    widget._update_diagnostics()
    qtbot.waitUntil(
        lambda: 'compiled in the background' in widget.diagnostics.text(),
        timeout=10_000,
    )
    compiling[0] = False  # it ends: the line is worked out again
    qtbot.waitUntil(lambda: 'scan: numba' in widget.diagnostics.text(), timeout=10_000)
