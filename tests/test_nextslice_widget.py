"""Where to annotate next, in the docks of a real napari viewer (Xvfb)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_vmunet._widgets._nextslice import LEAD
from napari_vmunet._widgets.inference import InferenceWidget
from napari_vmunet.io import load_sample
from napari_vmunet.zoo import builtin_checkpoints

pytestmark = [
    pytest.mark.gui,
    pytest.mark.filterwarnings('ignore:demo-brain may not suit'),
]

SLICES = [2, 40, 70, 100, 130, 160]


def test_the_inference_dock_suggests_slices_and_jumps_there(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    widget = InferenceWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.set_checkpoint(builtin_checkpoints()['demo-brain'])
    widget.device.setCurrentText('cpu')
    image, labels = load_sample('brain')
    volume, truth = np.asarray(image.data)[SLICES], np.asarray(labels)[SLICES]
    geometry = dict(scale=(3.0, 1.0, 1.0), translate=(10.0, 0.0, 0.0))
    layer = viewer.add_image(volume, name='brain', **geometry)
    # the user annotated one slice so far
    painted = np.zeros_like(truth)
    painted[3] = truth[3]
    annotations = viewer.add_labels(painted, name='my labels', **geometry)
    widget.set_image_layer(layer)
    qtbot.waitUntil(lambda: 'parameters' in widget.model_info.text())
    widget.run()
    qtbot.waitUntil(lambda: widget._worker is None, timeout=180_000)
    panel = widget.next_slices
    assert not panel.isHidden()
    # the prediction's own layer is not taken for the annotations
    assert 'brain [demo-brain]' in viewer.layers
    assert panel.annotations.currentText() == 'my labels'
    ranking = panel.ranking
    assert ranking.excluded == (3,)
    # slice 160 is the blank air above the head: nothing to annotate there
    assert np.ptp(volume[5]) == 0 and ranking.unscored == (5,)
    assert len(ranking.order) == len(SLICES) - 2
    assert np.all(np.diff(ranking.scores[ranking.order]) <= 0)
    first = int(ranking.order[0])
    assert panel.text.text().startswith(f'{LEAD}: slice {first} (uncertainty ')
    assert [b.text() for b in panel.buttons] == [
        f'Go to {z}' for z in ranking.order[:3]
    ]

    viewer.dims.set_point(0, 10.0)  # slice 0
    panel.buttons[0].click()
    assert viewer.dims.point[0] == pytest.approx(10.0 + 3.0 * first)
    shown = layer.world_to_data(viewer.dims.point)
    assert round(shown[0]) == first
    second = int(ranking.order[1])
    panel.buttons[1].click()
    assert round(layer.world_to_data(viewer.dims.point)[0]) == second

    # annotating the suggested slice moves the suggestion on
    edited = np.array(annotations.data)
    edited[first] = truth[first]
    annotations.data = edited
    assert panel.ranking.excluded == tuple(sorted((3, first)))
    assert int(panel.ranking.order[0]) == second
    # without an annotations layer every slice with content is a candidate
    panel.annotations.setCurrentText('none')
    assert panel.ranking.excluded == ()
    assert sorted(panel.ranking.order.tolist()) == [0, 1, 2, 3, 4]


def test_the_fine_tune_dock_offers_the_same_after_a_training(make_napari_viewer, qtbot):
    from napari_vmunet._widgets.training import TrainingWidget

    viewer = make_napari_viewer()
    image, labels = load_sample('brain')
    volume, truth = np.asarray(image.data)[SLICES], np.asarray(labels)[SLICES]
    layer = viewer.add_image(volume, name='brain')
    painted = np.zeros_like(truth)
    painted[1] = truth[1]
    annotations = viewer.add_labels(painted, name='corrected')
    widget = TrainingWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.image_layer.set_value(layer)
    widget.labels_layer.set_value(annotations)
    viewer.dims.set_point(0, 5)
    widget.mark_background_slice()  # slice 5 holds no tissue
    widget.device.setCurrentText('cpu')
    # what _on_finished does with the best model of a run
    widget.suggest_next_slices(str(builtin_checkpoints()['demo-brain']))
    qtbot.waitUntil(lambda: widget._rank_worker is None, timeout=180_000)
    panel = widget.next_slices
    assert panel.ranking is not None, panel.text.text()
    assert panel.ranking.excluded == (1, 5)
    assert sorted(panel.ranking.order.tolist()) == [0, 2, 3, 4]
    assert panel.text.text().startswith(LEAD)
    panel.buttons[0].click()
    assert round(viewer.dims.point[0]) == int(panel.ranking.order[0])
