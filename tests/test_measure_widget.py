"""The inference dock's objects and measurements in a real napari viewer."""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtCore import Qt

from napari_vmunet._widgets._results_table import camera_of
from napari_vmunet._widgets.inference import InferenceWidget
from napari_vmunet.io import load_sample
from napari_vmunet.measure import read_csv
from napari_vmunet.zoo import builtin_checkpoints

pytestmark = pytest.mark.gui


@pytest.fixture
def dock(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    widget = InferenceWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.device.setCurrentText('cpu')
    return viewer, widget


def click_row(qtbot, view, row: int) -> None:
    index = view.model().index(row, 0)
    view.scrollTo(index)
    qtbot.mouseClick(
        view.viewport(), Qt.MouseButton.LeftButton, pos=view.visualRect(index).center()
    )


def wait_measured(widget, qtbot) -> None:
    qtbot.waitUntil(lambda: widget.objects._worker is None, timeout=60_000)


def test_run_with_objects_then_click_a_row_to_centre_on_it(dock, qtbot):
    """The demo-nuclei model on the sample's held-out rows at 0.5 µm pixels:
    one id per nucleus, classes and sizes in the layer's features, a sorted
    table whose rows centre the viewer on their nucleus."""
    viewer, widget = dock
    image, _ = load_sample('nuclei')
    layer = viewer.add_image(
        image.data[320:], name='nuclei', scale=(0.5, 0.5), translate=(160, 0)
    )
    layer.units = ('µm', 'µm')
    widget.set_image_layer(layer)
    widget.set_checkpoint(builtin_checkpoints()['demo-nuclei'])
    widget.objects.objects.setChecked(True)
    widget.objects.split.setChecked(True)
    widget.objects.min_size.setText('5um2')
    widget.run()
    qtbot.waitUntil(lambda: widget._worker is None, timeout=120_000)
    objects = viewer.layers['nuclei [demo-nuclei] objects']
    table = widget.objects.model.table
    assert objects.data.max() == table.n_rows > 40
    assert set(objects.features['class']) == {'nucleus'}
    assert (table['area_um2'] >= 5).all()
    np.testing.assert_array_equal(objects.features['index'], table['label'])
    assert 'row(s)' in widget.objects.note.text()

    # sort by area, largest first, and click the first row
    column = list(table).index('area_um2')
    widget.objects.view.sortByColumn(column, Qt.SortOrder.DescendingOrder)
    click_row(qtbot, widget.objects.view, 0)
    biggest = int(np.argmax(table['area_um2']))
    label = table['label'][biggest]
    ys, xs = np.nonzero(objects.data == label)
    want = (160 + 0.5 * ys.mean(), 0.5 * xs.mean())
    np.testing.assert_allclose(camera_of(viewer).center[-2:], want, atol=1e-6)


def test_measure_a_corrected_volume_in_3d(dock, qtbot, tmp_path):
    """Measure a labels layer drawn by hand, correct it, Measure again: the
    objects follow the layer as it is now; a row click moves the slider."""
    viewer, widget = dock
    labels = np.zeros((12, 40, 40), np.uint8)
    labels[2:6, 4:14, 4:14] = 1
    labels[5:10, 20:36, 20:30] = 2
    layer = viewer.add_labels(labels, name='drawn', scale=(3.0, 1.0, 1.0))
    layer.units = ('mm', 'mm', 'mm')
    layer.metadata['napari_vmunet'] = {'class_names': ['bg', 'cyst', 'lesion']}
    widget.objects.labels_layer.set_value(layer)

    widget.objects.measure()  # per class: objects off
    wait_measured(widget, qtbot)
    table = widget.objects.model.table
    assert list(table['class']) == ['cyst', 'lesion']
    np.testing.assert_allclose(table['volume_mL'], [0.4 * 3, 0.8 * 3])

    widget.objects.objects.setChecked(True)
    widget.objects.measure()
    wait_measured(widget, qtbot)
    objects = viewer.layers['drawn objects']
    assert widget.objects.model.table.n_rows == 2

    objects.data[:, 27, :] = 0  # the user cuts the lesion in two
    objects.refresh()
    widget.objects.labels_layer.set_value(objects)
    widget.objects.measure()
    wait_measured(widget, qtbot)
    table = widget.objects.model.table
    assert sorted(table['class']) == ['cyst', 'lesion', 'lesion']
    assert objects.data.max() == 3

    row = int(np.flatnonzero(table['class'] == 'cyst')[0])
    click_row(qtbot, widget.objects.view, row)
    assert 2 <= viewer.dims.current_step[0] <= 5  # the cyst's slices

    path = tmp_path / 'lesions.csv'
    widget.objects.save_csv(path)
    assert read_csv(path).n_rows == 3
    assert 'volume_mL' in path.read_text().splitlines()[0]


def test_an_empty_layer_gives_an_empty_table_and_a_note(dock, qtbot):
    viewer, widget = dock
    layer = viewer.add_labels(np.zeros((30, 30), np.uint8), name='nothing')
    widget.objects.labels_layer.set_value(layer)
    widget.objects.objects.setChecked(True)
    widget.objects.measure()
    wait_measured(widget, qtbot)
    assert widget.objects.model.table.n_rows == 0
    assert 'no objects' in widget.objects.note.text()
    assert widget.objects.view.model().rowCount() == 0


def test_a_bad_minimum_size_is_explained(dock, qtbot):
    viewer, widget = dock
    viewer.add_labels(np.ones((10, 10), np.uint8), name='x')
    widget.objects.objects.setChecked(True)
    widget.objects.min_size.setText('3mm3')
    widget.objects.measure()
    assert 'does not fit a 2D image' in widget.objects.note.text() or (
        'no physical unit' in widget.objects.note.text()
    )
