"""The fine-tune dock's *Training data* group: what the model learns from.

Image/labels layer pairs (several with *Add pair*), the slices of a volume
declared background-only, the slice axis, and the annotation mode: dense (a
slice with any label is painted completely) or sparse scribbles (0 = not
annotated, 1 = background, k + 1 = class k; :mod:`napari_vmunet.rules.annotation`).
*New scribble layer* makes a Labels layer for them, the legend says which
value paints what, and a warning appears while the scribbles have no
background stroke.  :meth:`DataSection.training_pairs` is what the training
process copies.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING

from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QGroupBox,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QSpinBox,
)

from ._controls import button, button_row
from ._docking import compact
from ._layers import LayerComboBox

if TYPE_CHECKING:
    import napari


class Pair:
    """An image/labels layer pair and the slices declared background-only."""

    def __init__(self, image, labels):
        self.image = image
        self.labels = labels
        self.background: set[int] = set()

    def text(self) -> str:
        extra = ''
        if self.background:
            listed = ', '.join(map(str, sorted(self.background)))
            extra = f'  (background-only slices: {listed})'
        return f'{self.image.name}  ←  {self.labels.name}{extra}'


class DataSection(QGroupBox):
    """Image, labels, annotation mode, pairs, background-only slices and
    the slice axis.

    ``paint_values()`` gives ``([(value, class name)], colours)`` of sparse
    painting (the *Model* group knows the classes); ``say(text)`` shows a
    line in the dock's status.
    """

    def __init__(
        self,
        viewer: napari.Viewer,
        paint_values: Callable[[], tuple],
        say: Callable[[str], None],
        parent=None,
    ):
        super().__init__('Training data (copied when training starts)', parent)
        import napari.layers

        self.viewer = viewer
        self._paint_values = paint_values
        self._say = say
        self.pairs: list[Pair] = []
        self._watched_labels = None
        form = QFormLayout(self)
        self.image_layer = LayerComboBox(viewer, napari.layers.Image)
        self.labels_layer = LayerComboBox(viewer, napari.layers.Labels)
        form.addRow('Image', self.image_layer)
        form.addRow('Labels', self.labels_layer)
        self.annotation = compact(QComboBox())
        self.annotation.addItem('dense: every object painted', 'dense')
        self.annotation.addItem('sparse: scribbles', 'sparse')
        self.annotation.setToolTip(
            'dense: a slice with any label is painted completely, its unpainted '
            'pixels are background. sparse: a few strokes (as in ilastik or '
            'napari-convpaint): 1 = background, 2 = the first class, ...; '
            'unpainted pixels are not annotated and teach nothing'
        )
        self.new_scribbles_button = button(
            'New scribble layer',
            self.new_scribble_layer,
            tooltip='A Labels layer for sparse strokes over the chosen image, '
            'with a colour per class, the brush selected',
        )
        form.addRow('Annotation', self.annotation)
        # on a row of its own: beside the choice it widened the dock (and so
        # narrowed the image view) by its whole width
        form.addRow(self.new_scribbles_button)
        self.legend = QLabel()
        self.legend.setWordWrap(True)
        self.legend.setTextFormat(Qt.TextFormat.RichText)
        form.addRow(self.legend)
        self.scribble_warning = QLabel()
        self.scribble_warning.setWordWrap(True)
        self.scribble_warning.setStyleSheet('color: #e69f00')
        form.addRow(self.scribble_warning)
        self._scribble_check = QTimer(self)
        self._scribble_check.setSingleShot(True)
        self._scribble_check.setInterval(300)
        self._scribble_check.timeout.connect(self.check_scribbles)
        self.add_pair_button = button(
            'Add pair', self.add_pair, tooltip='Train on several images at once'
        )
        self.background_button = button(
            'Current slice: background only',
            self.mark_background_slice,
            tooltip='Declare that the slice the viewer shows contains no '
            'objects, so the model also learns what is not an object (volumes)',
        )
        form.addRow(button_row(self.add_pair_button, self.background_button))
        self.pair_list = QListWidget()
        self.pair_list.setMaximumHeight(70)
        self.pair_list.setToolTip(
            'Pairs to train on (empty: the pair above). Double-click to remove.'
        )
        self.pair_list.itemDoubleClicked.connect(self._remove_pair)
        form.addRow(self.pair_list)
        self.slice_axis = QSpinBox(minimum=0, maximum=8)
        self.slice_axis.setToolTip('Volumes: the axis whose slices are labelled')
        form.addRow('Slice axis', self.slice_axis)
        self.image_layer.currentIndexChanged.connect(self._image_changed)
        self._image_changed()
        self.labels_layer.currentIndexChanged.connect(self.labels_changed)
        self.annotation.currentIndexChanged.connect(self.annotation_changed)

    # ---------------------------------------------------------------- pairs
    def add_pair(self) -> None:
        image, labels = self.image_layer.value(), self.labels_layer.value()
        if image is None or labels is None:
            self._say('Choose an image layer and a labels layer first.')
            return
        if any(p.image is image and p.labels is labels for p in self.pairs):
            return
        self.pairs.append(Pair(image, labels))
        self._refresh_pairs()

    def _remove_pair(self, item: QListWidgetItem) -> None:
        del self.pairs[self.pair_list.row(item)]
        self._refresh_pairs()

    def _refresh_pairs(self) -> None:
        self.pair_list.clear()
        for pair in self.pairs:
            self.pair_list.addItem(pair.text())

    def current_pair(self) -> Pair | None:
        """The listed pair of the chosen layers, listed now if it is not:
        for what is kept on it (background-only slices)."""
        image, labels = self.image_layer.value(), self.labels_layer.value()
        for pair in self.pairs:
            if pair.image is image and pair.labels is labels:
                return pair
        if image is None or labels is None:
            return None
        pair = Pair(image, labels)
        self.pairs.append(pair)
        return pair

    def used_pairs(self) -> list[Pair]:
        """The pairs a run trains on: the listed ones, else the chosen layers
        (not listed: a pair kept out of the list's sight would be trained on
        again after other layers were chosen)."""
        if self.pairs:
            return self.pairs
        image, labels = self.image_layer.value(), self.labels_layer.value()
        return [] if image is None or labels is None else [Pair(image, labels)]

    def pairs_text(self) -> str:
        """The pairs a run trains on, by name (the checkpoint's provenance)."""
        return ', '.join(f'{p.image.name} + {p.labels.name}' for p in self.used_pairs())

    def mark_background_slice(self) -> None:
        """Declare the slice on screen (of the selected pair) background-only."""
        pair = self.current_pair()
        if pair is None or pair.labels.ndim < 3:
            self._say(
                'Background-only slices apply to volumes: choose a 3D '
                'image and its labels.'
            )
            return
        axis = self.slice_axis.value()
        point = pair.labels.world_to_data(self.viewer.dims.point[-pair.labels.ndim :])
        index = min(max(int(round(point[axis])), 0), pair.labels.data.shape[axis] - 1)
        pair.background.add(index)
        self._refresh_pairs()
        self._say(
            f'Slice {index} of {pair.labels.name} will be learnt as background only.'
        )

    def _image_changed(self, *_args) -> None:
        """Only volumes have a slice axis: offer it for them alone."""
        image = self.image_layer.value()
        spatial = 0
        if image is not None:
            spatial = image.data.ndim - (1 if getattr(image, 'rgb', False) else 0)
        self.slice_axis.setEnabled(spatial == 3)
        # background-only slices are a thing of volumes
        self.background_button.setEnabled(spatial == 3)
        if spatial == 3:
            self.slice_axis.setMaximum(2)

    def training_pairs(self) -> list:
        """The ``TrainingPair`` list for the current choices (not copied yet)."""
        from ..training import TrainingPair

        pairs = self.used_pairs()
        if not pairs:
            raise ValueError('choose an image layer and its labels layer')
        out = []
        for pair in pairs:
            image, labels = pair.image, pair.labels
            rgb = bool(getattr(image, 'rgb', False))
            spatial = image.data.ndim - (1 if rgb else 0)
            if spatial != labels.data.ndim:
                raise ValueError(
                    f'"{labels.name}" has {labels.data.ndim} dimensions but '
                    f'"{image.name}" has {spatial} spatial ones; pick matching layers'
                )
            axis = self.slice_axis.value() if spatial == 3 else None
            if axis is not None and axis >= spatial:
                raise ValueError(f'slice axis {axis} does not exist in {image.name}')
            out.append(
                TrainingPair(
                    image.data,
                    labels.data,
                    rgb=rgb,
                    slice_axis=axis,
                    background_slices=sorted(pair.background),
                    name=image.name,
                )
            )
        return out

    # ------------------------------------------------------------ scribbles
    @property
    def sparse(self) -> bool:
        return self.annotation.currentData() == 'sparse'

    def new_scribble_layer(self):
        """A Labels layer for sparse strokes over the chosen image: its
        spatial shape and scale, a colour and a name per paint value, the
        paint brush selected on the first class; the dock switches to
        sparse annotation on it."""
        import numpy as np

        from ._labels import class_features, scribble_colormap

        image = self.image_layer.value()
        if image is None:
            self._say('Choose the image to scribble on first.')
            return None
        rgb = bool(getattr(image, 'rgb', False))
        shape = image.data.shape[:-1] if rgb else image.data.shape
        values, colors = self._paint_values()
        layer = self.viewer.add_labels(
            np.zeros(shape, np.uint8 if len(values) < 255 else np.uint16),
            name=f'{image.name} scribbles',
            scale=image.scale,
            translate=image.translate,
            colormap=scribble_colormap(values, colors),
            features=class_features(['not annotated', *(n for _, n in values)]),
            metadata={
                'napari_vmunet': {
                    'annotation': 'sparse',
                    'paint_values': {str(v): n for v, n in values},
                }
            },
            opacity=0.8,
        )
        self.labels_layer.set_value(layer)
        self.annotation.setCurrentIndex(self.annotation.findData('sparse'))
        self.viewer.layers.selection.active = layer
        layer.selected_label = 2
        layer.mode = 'paint'
        self._say(
            f'Paint on "{layer.name}": {self._legend_text(values, colors, False)}.'
        )
        return layer

    def _legend_text(self, values, colors, html: bool = True) -> str:
        from ._labels import scribble_colors

        swatch = scribble_colors(values, colors)
        items = [
            (f'<span style="color:{swatch[v]}">&#9632;</span> ' if html else '')
            + f'{v} = {name}'
            for v, name in values
        ]
        return ', '.join(items) + ' (erasing, 0 = not annotated)'

    def labels_changed(self, *_args) -> None:
        """Follow the chosen labels layer: a scribble layer made here means
        sparse annotation; its painting re-checks the warning."""
        layer = self.labels_layer.value()
        old = self._watched_labels
        if old is not None and old() is not None and old() is not layer:
            old().events.paint.disconnect(self._schedule_scribble_check)
            old().events.data.disconnect(self._schedule_scribble_check)
        if layer is not None and (old is None or old() is not layer):
            layer.events.paint.connect(self._schedule_scribble_check)
            layer.events.data.connect(self._schedule_scribble_check)
            self._watched_labels = weakref.ref(layer)
        meta = getattr(layer, 'metadata', None) or {}
        if meta.get('napari_vmunet', {}).get('annotation') == 'sparse':
            self.annotation.setCurrentIndex(self.annotation.findData('sparse'))
        self.annotation_changed()

    def _schedule_scribble_check(self, *_args) -> None:
        """After a stroke: re-check the warning soon (once per burst)."""
        self._scribble_check.start()

    def annotation_changed(self, *_args) -> None:
        """Show the legend of sparse painting (the classes may have
        changed) and re-check the warning."""
        sparse = self.sparse
        self.legend.setVisible(sparse)
        if sparse:
            values, colors = self._paint_values()
            self.legend.setText('Paint ' + self._legend_text(values, colors))
        self.check_scribbles()

    def check_scribbles(self) -> str:
        """The warning for sparse scribbles without a background stroke
        (value 1): the model would never see what is not an object."""
        import numpy as np

        layer = self.labels_layer.value()
        text = ''
        if self.sparse and layer is not None:
            data = np.asarray(layer.data)
            if not data.any():
                text = f'"{layer.name}" has no strokes yet.'
            elif not (data == 1).any() and not any(p.background for p in self.pairs):
                text = (
                    f'"{layer.name}" has no background strokes (1): the model '
                    'is never shown what is not an object and may take '
                    'everything for one. Paint some background.'
                )
        self.scribble_warning.setText(text)
        self.scribble_warning.setVisible(bool(text))
        return text
