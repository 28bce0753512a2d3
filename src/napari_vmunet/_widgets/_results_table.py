"""The inference dock's *Objects and measurements* section: options, the
*Measure* button and a sortable results table.

A thin front end of :mod:`napari_vmunet.measure`: the work runs in a napari
generator worker (progress in the dock, the viewer keeps painting), and
only the end -- writing the layer and its ``features`` -- touches the
viewer.  The table is a model over the numpy columns, sorted with numpy,
so thousands of rows cost no more than a screenful to show.  Clicking a
row centres the viewer on that object.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import QAbstractTableModel, QModelIndex, Qt, QTimer, Signal
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QTableView,
    QVBoxLayout,
)

from ._layers import LayerComboBox

if TYPE_CHECKING:
    import napari

    from ..measure import Table

#: the key of our metadata on a layer
KEY = 'napari_vmunet'


#: rows whose text sets the table's column widths
ROWS_FOR_WIDTHS = 32


class TableModel(QAbstractTableModel):
    """A read-only Qt model over a :class:`napari_vmunet.measure.Table`."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.table: Table | None = None
        self._columns: list[str] = []
        self._order = np.zeros(0, dtype=np.int64)

    def set_table(self, table: Table | None) -> None:
        self.beginResetModel()
        self.table = table
        self._columns = list(table) if table is not None else []
        self._order = np.arange(table.n_rows if table is not None else 0)
        self.endResetModel()

    def table_row(self, view_row: int) -> int:
        """The table's row shown at ``view_row`` (after sorting)."""
        return int(self._order[view_row])

    def rowCount(self, parent=QModelIndex()) -> int:  # noqa: B008, N802
        return 0 if parent.isValid() else len(self._order)

    def columnCount(self, parent=QModelIndex()) -> int:  # noqa: B008, N802
        return 0 if parent.isValid() else len(self._columns)

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if role != Qt.ItemDataRole.DisplayRole or not index.isValid():
            return None
        value = self.table[self._columns[index.column()]][self._order[index.row()]]
        if isinstance(value, (float, np.floating)):
            return '' if np.isnan(value) else f'{value:.5g}'
        return str(value)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):  # noqa: N802
        if role != Qt.ItemDataRole.DisplayRole:
            return None
        if orientation == Qt.Orientation.Horizontal:
            return self._columns[section] if section < len(self._columns) else None
        return str(section + 1)

    def sort(self, column: int, order=Qt.SortOrder.AscendingOrder) -> None:
        if self.table is None or not 0 <= column < len(self._columns):
            return
        values = self.table[self._columns[column]]
        if values.dtype == object:
            values = values.astype(str)
        self.layoutAboutToBeChanged.emit()
        order_ = np.argsort(values, kind='stable')
        if order == Qt.SortOrder.DescendingOrder:
            order_ = order_[::-1]
        self._order = order_
        self.layoutChanged.emit()


class ObjectsPanel(QGroupBox):
    """Options for objects, the *Measure* button and the results table."""

    #: emitted with the table after every measurement
    measured = Signal(object)

    def __init__(self, viewer: napari.Viewer, image_layer=None, parent=None):
        super().__init__('Objects and measurements', parent)
        import napari.layers

        self.viewer = viewer
        self._image_layer = image_layer  # callable -> the dock's image layer
        self._worker = None
        self._table_pending = False  # a measured table waits for its turn
        self.layer = None  # the labels layer the table describes
        layout = QVBoxLayout(self)
        form = QFormLayout()
        self.objects = QCheckBox('one id per object')
        self.objects.setToolTip(
            'Run and Measure split each class into objects (connected '
            'components, in 3D for volumes); the labels layer then has one id '
            'per object and its features give each object its class'
        )
        form.addRow(self.objects)
        self.split = QCheckBox('split touching objects')
        self.split.setToolTip(
            'A watershed on the distance to the background separates objects '
            'that touch (nuclei, cells)'
        )
        form.addRow(self.split)
        self.fill_holes = QCheckBox('fill holes')
        form.addRow(self.fill_holes)
        self.min_size = QLineEdit()
        self.min_size.setPlaceholderText('0, e.g. 30 (pixels), 5um2, 0.1mL')
        self.min_size.setToolTip(
            'Objects smaller than this are dropped: a number of pixels, or a '
            "size with a unit in the layer's physical units (µm², mm³, mL)"
        )
        form.addRow('Minimum size', self.min_size)
        for box in (self.split, self.fill_holes):
            box.toggled.connect(lambda on: on and self.objects.setChecked(True))
        self.labels_layer = LayerComboBox(viewer, napari.layers.Labels)
        self.labels_layer.setToolTip('The labels layer that Measure reads')
        form.addRow('Labels', self.labels_layer)
        layout.addLayout(form)
        row = QHBoxLayout()
        self.measure_button = QPushButton('Measure')
        self.measure_button.setToolTip(
            'Recompute objects and measurements from the labels layer as it '
            'is now (after your corrections)'
        )
        self.measure_button.clicked.connect(self.measure)
        self.save_button = QPushButton('Save CSV…')
        self.save_button.setEnabled(False)
        self.save_button.clicked.connect(self._save_dialog)
        row.addWidget(self.measure_button)
        row.addWidget(self.save_button)
        layout.addLayout(row)
        self.model = TableModel(self)
        self.view = QTableView()
        self.view.setModel(self.model)
        self.view.setSortingEnabled(True)
        self.view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.view.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.view.setMinimumHeight(160)
        # column widths from the first rows only: Qt reads 1000 rows by
        # default, 1.3 s of data() calls on the GUI thread for 3,700 objects
        self.view.horizontalHeader().setResizeContentsPrecision(ROWS_FOR_WIDTHS)
        self.view.clicked.connect(self._row_clicked)
        layout.addWidget(self.view)
        self.note = QLabel('')
        self.note.setWordWrap(True)
        layout.addWidget(self.note)

    # ------------------------------------------------------------ settings
    def settings(self) -> dict | None:
        """The object options for a run, or None when objects are off.
        Raises ``ValueError`` for an unreadable minimum size."""
        from ..measure import parse_size

        if not self.objects.isChecked():
            return None
        text = self.min_size.text().strip()
        return dict(
            split_touching=self.split.isChecked(),
            fill_holes=self.fill_holes.isChecked(),
            min_size=parse_size(text) if text else None,
        )

    def settings_for_run(self, run, geometry: dict) -> dict | None:
        """The inference dock's hook: the object options of a whole-image run
        (a single slice has no 3D objects: Measure it afterwards) with the
        labels' geometry (``scale``, ``translate``, ``affine``, ``units``)."""
        from ..measure import Geometry

        settings = self.settings()
        request = run.request
        whole = request.covers_everything and request.time_axis is None
        if settings is None or not whole:
            return None
        settings['geometry'] = Geometry.from_scale(
            geometry['scale'],
            geometry['translate'],
            unit_of(geometry.get('units')),
            geometry['affine'],
        )
        return settings

    def iter_for_result(self, run, result):
        """The inference dock's hook, in its worker: objects of the
        prediction and their table, measured on the image's intensities."""
        settings = run.objects
        channel_axis = run.request.channel_axis
        if run.request.rgb:
            channel_axis = run.data.ndim - 1
        return (
            yield from self.iter_objects_and_table(
                result.labels,
                settings,
                settings['geometry'],
                image=run.data,
                channel_axis=channel_axis,
                class_names=result.class_names,
            )
        )

    def add_result(self, name: str, measured, geometry: dict, meta: dict):
        """The inference dock's hook on the GUI thread: the objects layer
        (one id per object, the class in ``features``) and the table."""
        objects, table = measured
        layer = self.add_objects_layer(name, objects, geometry, meta)
        self.show_table(layer, table)
        return layer

    # ------------------------------------------------------------- the work
    @staticmethod
    def iter_objects_and_table(labels, settings, geometry, **kwargs):
        """Generator (runs in a worker): objects when ``settings`` ask for
        them, then the table; returns ``(objects or None, table)``.  Large
        label maps are measured in a child process
        (:func:`napari_vmunet.measure.job.iter_measure_job`): SciPy and
        scikit-image keep the GIL for whole calls, which a GUI thread
        would wait for."""
        from ..measure.job import iter_measure_job

        return (yield from iter_measure_job(labels, settings, geometry, **kwargs))

    def measure(self) -> None:
        """Measure the chosen labels layer as it is now (non-blocking)."""
        if self._worker is not None:
            return
        layer = self.labels_layer.value()
        if layer is None:
            self._show_error('choose a labels layer to measure (or Run first)')
            return
        try:
            settings = self.settings()
            job = self._measure_job(layer, settings)
        except ValueError as err:
            self._show_error(err)
            return
        from napari.qt.threading import create_worker

        self._worker = create_worker(
            self.iter_objects_and_table, *job[0], **job[1], _ignore_errors=True
        )
        self._worker.yielded.connect(self._on_progress)
        self._worker.returned.connect(lambda value: self._on_measured(layer, value))
        self._worker.errored.connect(self._show_error)
        self._worker.finished.connect(self._finished)
        self.measure_button.setEnabled(False)
        self.note.setText('Measuring…')
        self._worker.start()

    def _measure_job(self, layer, settings: dict | None) -> tuple[tuple, dict]:
        from ..measure import Geometry, size_in_pixels

        meta = layer.metadata.get(KEY, {})
        geometry = Geometry(world_matrix(layer), unit_of(layer.units))
        if settings is not None and settings.get('min_size'):
            size_in_pixels(*settings['min_size'], geometry)  # explained now
        instances = bool(meta.get('objects'))
        classes = _classes_from_features(layer) if instances else None
        image, channel_axis = None, None
        candidate = self._image_layer() if self._image_layer else None
        if candidate is not None:
            image, channel_axis = _matching_image(candidate, layer.data.shape)
        kwargs = dict(
            image=image,
            channel_axis=channel_axis,
            class_names=meta.get('class_names'),
            instances=instances,
            classes=classes,
        )
        return (layer.data, settings, geometry), kwargs

    def _on_progress(self, step) -> None:
        if self._worker is None:
            return
        self.note.setText(f'{step.stage}: {step.message} {step.done}/{step.total}')

    def _on_measured(self, layer, value) -> None:
        objects, table = value
        if objects is not None:
            layer = self._objects_layer(layer, objects)
        # the table in the next event-loop turn: napari's add_labels (0.4 s
        # for 200x512x512) and filling the table in one slot would stall the
        # viewer for their sum; the run ends when the table is shown
        self._table_pending = True
        QTimer.singleShot(0, lambda: self._show_pending_table(layer, table))

    def _show_pending_table(self, layer, table: Table) -> None:
        try:
            self.show_table(layer, table)
        except Exception as err:  # noqa: BLE001 - shown, and the run ends
            self._show_error(err)
        finally:
            self._table_pending = False
            self._finished()

    def _objects_layer(self, layer, objects):
        """A semantic layer gets a separate '<name> objects' layer; an
        objects layer is updated in place (only if the ids changed)."""
        meta = dict(layer.metadata.get(KEY, {}))
        if meta.get('objects'):
            if not np.array_equal(layer.data, objects.labels):
                layer.data = objects.labels
            return layer
        name = f'{layer.name} objects'
        meta.update(objects=True, class_names=objects.class_names, source=layer.name)
        existing = next((ly for ly in self.viewer.layers if ly.name == name), None)
        if existing is not None and existing.data.shape == objects.labels.shape:
            existing.data = objects.labels
            existing.metadata[KEY] = meta
            return existing
        return self.viewer.add_labels(
            objects.labels,
            name=name,
            scale=layer.scale,
            translate=layer.translate,
            affine=layer.affine,
            units=layer.units,
            opacity=0.6,
            metadata={KEY: meta},
        )

    def add_objects_layer(self, name: str, objects, geometry: dict, meta: dict):
        """The inference dock's result in objects mode: one id per object,
        its class in ``features``.  Returns the (new or updated) layer."""
        meta = dict(meta, objects=True, class_names=objects.class_names)
        existing = next((ly for ly in self.viewer.layers if ly.name == name), None)
        if existing is not None and existing.data.shape == objects.labels.shape:
            existing.data = objects.labels
            existing.metadata[KEY] = meta
            return existing
        return self.viewer.add_labels(
            objects.labels, name=name, opacity=0.6, metadata={KEY: meta}, **geometry
        )

    def show_table(self, layer, table: Table) -> None:
        """Show ``table``, and put its rows into the layer's ``features`` so
        napari shows them on hover."""
        self.layer = layer
        features = {'index': table['label'], **table}
        layer.features = features
        self.model.set_table(table)
        self.view.resizeColumnsToContents()
        self.save_button.setEnabled(True)
        self.labels_layer.set_value(layer)
        text = f'{table.n_rows} row(s) for “{layer.name}”.'
        if table.notes:
            text += ' ' + ' '.join(table.notes)
        self.note.setText(text)
        self.measured.emit(table)

    def _show_error(self, err) -> None:
        from napari.utils.notifications import show_error

        message = f'Measuring failed: {err}'
        self.note.setText(message)
        show_error(message)

    def _finished(self) -> None:
        if self._table_pending:
            return  # _show_pending_table ends the run
        self._worker = None
        self.measure_button.setEnabled(True)

    # ----------------------------------------------------------- the table
    def _row_clicked(self, index) -> None:
        self.centre_on(self.model.table_row(index.row()))

    def centre_on(self, row: int) -> None:
        """Move the viewer to the object of table row ``row``: the slider(s)
        to its centroid's plane and the camera to its centre."""
        table = self.model.table
        if table is None or self.layer is None:
            return
        centroid = [table[c][row] for c in table if c.startswith('centroid_')]
        if len(centroid) != self.layer.ndim:
            return
        offset = self.viewer.dims.ndim - len(centroid)
        point = list(self.viewer.dims.point)
        point[offset:] = centroid
        self.viewer.dims.point = point
        shown = self.viewer.dims.displayed
        camera_of(self.viewer).center = tuple(point[i] for i in shown)

    def _save_dialog(self) -> None:
        if self.model.table is None:
            return
        name = f'{self.layer.name if self.layer is not None else "objects"}.csv'
        path, _ = QFileDialog.getSaveFileName(
            self, 'Save the measurements', name, 'CSV (*.csv)'
        )
        if path:
            self.save_csv(path)

    def save_csv(self, path) -> None:
        """Write the table shown (all rows, original order) as CSV."""
        try:
            written = self.model.table.to_csv(path)
        except OSError as err:
            self._show_error(err)
            return
        self.note.setText(f'Saved {written}.')


def camera_of(viewer):
    """The viewer's camera (``viewer.scene.camera`` from napari 0.9 on)."""
    scene = getattr(viewer, 'scene', None)
    return scene.camera if scene is not None else viewer.camera


def world_matrix(layer) -> np.ndarray:
    """The layer's data-index -> world matrix, probed through napari's own
    transform (scale, translate, rotation, shear and affine together)."""
    n = layer.ndim
    origin = np.asarray(layer.data_to_world(np.zeros(n)), dtype=float)
    out = np.eye(n + 1)
    for i in range(n):
        unit = np.zeros(n)
        unit[i] = 1.0
        out[:n, i] = np.asarray(layer.data_to_world(unit), dtype=float) - origin
    out[:n, n] = origin
    return out


def unit_of(units) -> str | None:
    """A layer's length unit (napari: one pint unit per axis) as measure
    names it; None for pixels, or for axes in different units."""
    from ..measure import normalize_unit

    if not units:
        return None
    names = {str(u) for u in units}
    if len(names) != 1:
        return None
    try:
        return normalize_unit(names.pop())
    except ValueError:
        return None


def _classes_from_features(layer) -> np.ndarray | None:
    """Class per object id from an objects layer's ``features``."""
    features = layer.features
    if 'class_index' not in features or 'index' not in features:
        return None
    ids = np.asarray(features['index'], dtype=np.int64)
    if not len(ids):
        return None
    lookup = np.ones(int(ids.max()) + 1, dtype=np.int64)
    lookup[0] = 0
    lookup[ids] = np.asarray(features['class_index'], dtype=np.int64)
    return lookup


def _matching_image(layer, shape: tuple) -> tuple[Any, int | None]:
    """The image layer's data when it lies on the labels' grid (channels at
    the axis that is not spatial), else ``(None, None)``."""
    data = layer.data[0] if getattr(layer, 'multiscale', False) else layer.data
    if tuple(data.shape) == tuple(shape):
        return data, None
    if layer.rgb and tuple(data.shape[:-1]) == tuple(shape):
        return data, data.ndim - 1
    return None, None
