"""A 2-channel 2D image is predicted as one image from both channels, not as
a 2-slice volume: the channel axis is guessed from the shape and the
model's channel count, and the dock says so (issue #16, item 10)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_vmunet._widgets.inference import InferenceWidget
from napari_vmunet.checkpoint import default_metadata, save_checkpoint
from napari_vmunet.model import VMUNet
from napari_vmunet.rules.channels import guess_channel_axis


def test_the_guess_rule():
    assert guess_channel_axis((2, 512, 512), 3).axis == 0
    assert guess_channel_axis((512, 512, 2), 3).axis == 2
    assert guess_channel_axis((3, 256, 256), 3).reason.startswith(
        'Axis 0 (size 3) is taken as the channel axis: the model takes 3'
    )
    assert guess_channel_axis((64, 64, 5), 5).axis == 2  # the model's count
    for shape, channels in (
        ((5, 256, 256), 3),  # a short volume stays a volume
        ((40, 256, 256), 3),
        ((2, 10, 10), 3),  # too small to tell
        ((2, 64, 2), 2),  # only one image-sized axis
        ((512, 512), 3),
        ((4, 2, 64, 64), 2),  # 4-D: the user says
    ):
        assert guess_channel_axis(shape, channels) is None, shape
    assert guess_channel_axis((64, 64, 3), 3, rgb=True) is None


@pytest.fixture(scope='module')
def two_channel_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    model = VMUNet(num_classes=1, input_channels=2, dims=(8, 16, 32, 64))
    meta = default_metadata(model.config, class_names=['bg', 'cell'], tile_size=64)
    path = tmp_path_factory.mktemp('c') / 'two.safetensors'
    return save_checkpoint(model, path, meta)


@pytest.mark.gui
def test_the_dock_predicts_a_two_channel_image_as_one_image(
    make_napari_viewer, qtbot, two_channel_ckpt
):
    viewer = make_napari_viewer()
    widget = InferenceWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.set_checkpoint(two_channel_ckpt)
    widget.device.setCurrentText('cpu')
    qtbot.waitUntil(lambda: 'parameters' in widget.model_info.text())
    image = np.random.default_rng(0).random((2, 64, 80)).astype(np.float32)
    layer = viewer.add_image(image, name='two channels')
    widget.set_image_layer(layer)
    assert widget.channel_axis.currentData() == 0
    assert 'Axis 0 (size 2) is taken as the channel axis' in widget.status.text()
    assert 'the model takes 2 channels' in widget.status.text()
    widget.run()
    qtbot.waitUntil(lambda: widget._worker is None, timeout=60_000)
    assert viewer.layers['two channels [two]'].data.shape == (64, 80)

    # a volume is left alone, and the user's own choice is kept
    volume = viewer.add_image(np.zeros((12, 64, 64), np.float32), name='stack')
    widget.set_image_layer(volume)
    assert widget.channel_axis.currentData() is None
    widget.set_image_layer(layer)
    assert widget.channel_axis.currentData() == 0
    widget.channel_axis.setCurrentIndex(0)
    widget.channel_axis.activated.emit(0)  # as a click on "none" does
    widget._guess_channels()  # e.g. a new model described
    assert widget.channel_axis.currentData() is None
