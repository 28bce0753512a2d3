"""The fine-tune dock: train on the labels you just corrected, in the background.

The work is :class:`napari_vmunet.training.TrainingProcess`: a separate
process (a crash or an out-of-memory kill there cannot take napari down)
fed with *copies* of the annotated slices, so you can keep painting while it
learns.  A ``QTimer`` drains its events into a live loss/Dice plot and a
status line; *Stop* ends it after the current step with a resumable
checkpoint, *Resume* continues (with your newest corrections), and every
improved model is offered to the inference dock at once.

*Annotation* chooses what the labels mean: dense (a slice with any label is
painted completely) or sparse scribbles (0 = not annotated, 1 = background,
k + 1 = class k; :mod:`napari_vmunet.rules.annotation`).  *New scribble
layer* makes a Labels layer for them, the legend says which value paints
what, and a warning appears while the scribbles have no background stroke.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import re
import weakref
from pathlib import Path
from typing import TYPE_CHECKING

from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSpinBox,
    QWidget,
)
from superqt import QCollapsible

from ._bus import bus, listen
from ._controls import device_picker
from ._docking import compact, scrolling_layout
from ._layers import LayerComboBox
from ._pathedit import PathEdit
from ._plot import TrainingPlot

if TYPE_CHECKING:
    import napari

POLL_MS = 200
SCRATCH_SMALL = (24, 48, 96, 192)


def default_output(image_name: str) -> Path:
    stamp = _dt.datetime.now().strftime('%Y%m%d-%H%M%S')
    safe = re.sub(r'[^\w.-]+', '_', image_name).strip('_') or 'model'
    return Path.home() / 'napari-vmunet' / 'models' / f'{safe}-{stamp}.safetensors'


class _Pair:
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


class TrainingWidget(QWidget):
    """Fine-tune (or train) a VM-UNet on image + labels layer pairs."""

    def __init__(self, napari_viewer: napari.Viewer, parent=None):
        super().__init__(parent)
        import napari.layers

        self.viewer = napari_viewer
        self.process = None
        self._pairs: list[_Pair] = []
        self._best: str | None = None
        self._last_config = None
        self._start_worker = None
        self._watched_window = None  # napari's main window, once a run started
        self._window_closing = False
        self.history: list = []  # every event of the current run
        self._timer = QTimer(self)
        self._timer.setInterval(POLL_MS)
        self._timer.timeout.connect(self._poll)

        layout = scrolling_layout(self)  # fits a laptop screen, tabs with ours

        # --- data ------------------------------------------------------------
        box = QGroupBox('Training data (copied when training starts)')
        form = QFormLayout(box)
        self.image_layer = LayerComboBox(self.viewer, napari.layers.Image)
        self.labels_layer = LayerComboBox(self.viewer, napari.layers.Labels)
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
        self.new_scribbles_button = QPushButton('New scribble layer')
        self.new_scribbles_button.setToolTip(
            'A Labels layer for sparse strokes over the chosen image, with a '
            'colour per class, the brush selected'
        )
        self.new_scribbles_button.clicked.connect(self.new_scribble_layer)
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
        self._watched_labels = None
        self._model_class_cache: dict[str, tuple] = {}
        self._scribble_check = QTimer(self)
        self._scribble_check.setSingleShot(True)
        self._scribble_check.setInterval(300)
        self._scribble_check.timeout.connect(self.check_scribbles)
        row = QHBoxLayout()
        self.add_pair_button = QPushButton('Add pair')
        self.add_pair_button.setToolTip('Train on several images at once')
        self.add_pair_button.clicked.connect(self.add_pair)
        self.background_button = QPushButton('Current slice: background only')
        self.background_button.setToolTip(
            'Declare that the slice the viewer shows contains no objects, so '
            'the model also learns what is not an object (volumes)'
        )
        self.background_button.clicked.connect(self.mark_background_slice)
        row.addWidget(self.add_pair_button)
        row.addWidget(self.background_button)
        form.addRow(row)
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
        self.labels_layer.currentIndexChanged.connect(self._labels_changed)
        self.annotation.currentIndexChanged.connect(self._annotation_changed)
        layout.addWidget(box)

        # --- model -----------------------------------------------------------
        box = QGroupBox('Model')
        form = QFormLayout(box)
        row = QHBoxLayout()
        self.start_from = QComboBox()
        self.start_from.setToolTip('The model training starts from')
        compact(self.start_from)
        self.browse_init = QPushButton('Browse…')
        self.browse_init.clicked.connect(self._browse_init)
        row.addWidget(self.start_from, 1)
        row.addWidget(self.browse_init)
        form.addRow('Start from', row)
        self.num_classes = QSpinBox(minimum=0, maximum=255)
        self.num_classes.setSpecialValueText('from model / labels')
        self.num_classes.setToolTip(
            '1 = objects vs background (instance labels work as they are); '
            'K >= 2 = label values 0..K-1 are classes'
        )
        form.addRow('Classes', self.num_classes)
        self.class_names = QLineEdit()
        self.class_names.setPlaceholderText(
            'e.g. background, grey matter, white matter'
        )
        form.addRow('Class names', self.class_names)
        layout.addWidget(box)

        # --- recipe ----------------------------------------------------------
        recipe = QCollapsible('Recipe')
        inner = QWidget()
        form = QFormLayout(inner)
        self.preset = compact(QComboBox())
        self.preset.addItem('scratch (a new model, a few slices)', 'scratch')
        self.preset.addItem('fine-tune (a few corrected slices)', 'finetune')
        self.preset.addItem('full (the original VM-UNet recipe)', 'full')
        self.preset.setToolTip(
            'Follows "Start from": scratch (lr 1e-3) for a new model, fine-tune '
            '(lr 1e-4) for a trained one'
        )
        self.preset.currentIndexChanged.connect(self._preset_changed)
        form.addRow('Preset', self.preset)
        self.epochs = QSpinBox(minimum=1, maximum=10000)
        self.epochs.valueChanged.connect(self._epochs_changed)
        form.addRow('Epochs', self.epochs)
        self.lr = QDoubleSpinBox(decimals=6, minimum=1e-6, maximum=1.0, singleStep=1e-4)
        form.addRow('Learning rate', self.lr)
        self.batch_size = QSpinBox(minimum=1, maximum=256)
        form.addRow('Batch size', self.batch_size)
        self.tile_size = QSpinBox(minimum=0, maximum=1024, singleStep=32)
        self.tile_size.setSpecialValueText('from model')
        form.addRow('Tile size', self.tile_size)
        self.val_fraction = QDoubleSpinBox(minimum=0.0, maximum=0.9, singleStep=0.05)
        self.val_fraction.setValue(0.2)
        self.val_fraction.setToolTip(
            'Share of annotated slices held out for '
            'validation (at least one when there are two)'
        )
        form.addRow('Validation', self.val_fraction)
        self.freeze_encoder = QCheckBox('decoder only (faster steps)')
        self.freeze_encoder.setToolTip(
            'Keep the encoder of the starting model and train the decoder and '
            'head: for fine-tuning a trained model on a few corrections'
        )
        form.addRow('Fine-tune', self.freeze_encoder)
        self.device = device_picker()
        form.addRow('Device', self.device)
        recipe.addWidget(inner)
        layout.addWidget(recipe)

        # --- output & control ------------------------------------------------
        row = QHBoxLayout()
        self.output = PathEdit()
        self.output.setPlaceholderText('where the trained model is saved')
        browse = QPushButton('…')
        browse.setMaximumWidth(30)
        browse.clicked.connect(self._browse_output)
        row.addWidget(QLabel('Save to'))
        row.addWidget(self.output, 1)
        row.addWidget(browse)
        layout.addLayout(row)
        row = QHBoxLayout()
        self.start_button = QPushButton('Start')
        self.start_button.clicked.connect(self.start)
        self.stop_button = QPushButton('Stop')
        self.stop_button.setEnabled(False)
        self.stop_button.clicked.connect(self.stop)
        self.resume_button = QPushButton('Resume')
        self.resume_button.setEnabled(False)
        self.resume_button.clicked.connect(self.resume)
        self.use_button = QPushButton('Use in inference')
        self.use_button.setEnabled(False)
        self.use_button.setToolTip('Select the best model in the inference dock')
        self.use_button.clicked.connect(self.publish_best)
        self.export_button = QPushButton('Export for bioimage.io…')
        self.export_button.setEnabled(False)
        self.export_button.setToolTip(
            'Write the best model as a bioimage.io package (.zip)'
        )
        self.export_button.clicked.connect(self.export_for_bioimageio)
        self._export_dialog = None
        # run control on one row, what to do with the result on the next:
        # five buttons in one row made the dock too wide for the image view
        for b in (self.start_button, self.stop_button, self.resume_button):
            row.addWidget(b)
        layout.addLayout(row)
        row = QHBoxLayout()
        for b in (self.use_button, self.export_button):
            row.addWidget(b)
        layout.addLayout(row)
        self.plot = TrainingPlot(total_epochs=self.epochs.value())
        layout.addWidget(self.plot, 1)
        self.status = QLabel('Correct a prediction (or paint labels), then Start.')
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(
            Qt.TextInteractionFlag.TextSelectableByMouse
        )
        layout.addWidget(self.status)
        from ._nextslice import NextSlicePanel

        # after each training: where the new model is least sure
        self.next_slices = NextSlicePanel(self.viewer, choose_annotations=False)
        layout.addWidget(self.next_slices)
        self._rank_worker = None

        self.num_classes.valueChanged.connect(self._annotation_changed)
        self.class_names.editingFinished.connect(self._annotation_changed)
        self._labels_changed()
        self._fill_start_from()
        self.start_from.currentIndexChanged.connect(self._follow_start_from)
        self.start_from.currentIndexChanged.connect(self._annotation_changed)
        self._follow_start_from()
        self._preset_changed()
        self.image_layer.currentIndexChanged.connect(self._suggest_output)
        listen(self, self._on_published)
        self._suggest_output()

    # ------------------------------------------------------------- choices
    def _fill_start_from(self) -> None:
        from ..zoo import builtin_checkpoints

        self.start_from.clear()
        self.start_from.addItem("the inference dock's model", 'inference')
        for name, path in builtin_checkpoints().items():
            self.start_from.addItem(f'built-in: {name}', str(path))
        self.start_from.addItem(
            'scratch: small VM-UNet (2 M parameters)', 'scratch-small'
        )
        self.start_from.addItem('scratch: VM-UNet (27 M parameters)', 'scratch')
        self.start_from.addItem('ImageNet VMamba-S weights (choose file)…', 'vmamba?')
        self.start_from.activated.connect(self._maybe_browse_vmamba)

    def _maybe_browse_vmamba(self, index: int) -> None:
        """The original's initialisation: VMamba-S v0 ImageNet weights
        (``vmamba_small_e238_ema.pth``) into encoder and decoder."""
        if self.start_from.itemData(index) != 'vmamba?':
            return
        path, _ = QFileDialog.getOpenFileName(
            self,
            'VMamba-S ImageNet weights (e.g. vmamba_small_e238_ema.pth)',
            '',
            'PyTorch files (*.pth *.pt);;All files (*)',
        )
        if path:
            self.set_start_checkpoint(f'vmamba:{path}', f'VMamba-S: {Path(path).name}')
        else:
            self.start_from.setCurrentIndex(0)

    def _epochs_changed(self, value: int) -> None:
        """Before (or between) runs the plot's axis spans the epochs set."""
        if not self.running and hasattr(self, 'plot'):
            self.plot.set_total_epochs(value)

    def _follow_start_from(self, *_args) -> None:
        """The preset a run from the chosen starting point needs: a new
        model learns at the scratch preset's rate, a trained one is
        fine-tuned (``training.default_preset``)."""
        from ..training import default_preset

        choice = self.start_from.currentData()
        if choice in ('scratch', 'scratch-small'):
            init = None
        elif choice == 'vmamba?' or str(choice).startswith('vmamba:'):
            init = 'vmamba:'
        else:
            init = 'checkpoint'
        # a changed preset refills epochs, lr and batch; the same one keeps
        # what the user typed
        self.preset.setCurrentIndex(self.preset.findData(default_preset(init)))

    def _preset_changed(self, *_args) -> None:
        from ..training import PRESETS

        preset = PRESETS[self.preset.currentData()]
        self.epochs.setValue(preset['epochs'])
        self.lr.setValue(preset['lr'])
        self.batch_size.setValue(preset['batch_size'])

    def set_start_checkpoint(self, path: str | Path, label: str | None = None) -> None:
        """Start training from ``path`` (added to the list if needed)."""
        path = str(path)
        index = self.start_from.findData(path)
        if index < 0:
            self.start_from.insertItem(0, label or Path(path).name, path)
            index = 0
        self.start_from.setCurrentIndex(index)

    def _browse_init(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self,
            'Start from a checkpoint (or VMamba-S ImageNet weights)',
            '',
            'Checkpoints (*.safetensors *.pth *.pt);;All files (*)',
        )
        if path:
            self.set_start_checkpoint(path)

    def _browse_output(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self,
            'Save the trained model as',
            self.output.text(),
            'napari-vmunet checkpoint (*.safetensors)',
        )
        if path:
            if not path.endswith('.safetensors'):
                path += '.safetensors'
            self.output.setText(path)

    def _suggest_output(self, *_args) -> None:
        if self.process is None and not self.output.isModified():
            layer = self.image_layer.value()
            self.output.setText(str(default_output(layer.name if layer else 'model')))

    # ---------------------------------------------------------------- data
    def add_pair(self) -> None:
        image, labels = self.image_layer.value(), self.labels_layer.value()
        if image is None or labels is None:
            self._say('Choose an image layer and a labels layer first.')
            return
        if any(p.image is image and p.labels is labels for p in self._pairs):
            return
        self._pairs.append(_Pair(image, labels))
        self._refresh_pairs()

    def _remove_pair(self, item: QListWidgetItem) -> None:
        del self._pairs[self.pair_list.row(item)]
        self._refresh_pairs()

    def _refresh_pairs(self) -> None:
        self.pair_list.clear()
        for pair in self._pairs:
            self.pair_list.addItem(pair.text())

    def _current_pair(self) -> _Pair | None:
        image, labels = self.image_layer.value(), self.labels_layer.value()
        for pair in self._pairs:
            if pair.image is image and pair.labels is labels:
                return pair
        if image is None or labels is None:
            return None
        pair = _Pair(image, labels)
        self._pairs.append(pair)
        return pair

    def mark_background_slice(self) -> None:
        """Declare the slice on screen (of the selected pair) background-only."""
        pair = self._current_pair()
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

    # ----------------------------------------------------------- scribbles
    @property
    def sparse(self) -> bool:
        return self.annotation.currentData() == 'sparse'

    def paint_values(self) -> tuple[list[tuple[int, str]], list | None]:
        """``[(value, class name)]`` of sparse painting, and class colours:
        from the dock's classes and names, else the starting model's."""
        from ..rules.annotation import paint_values

        names = [n.strip() for n in self.class_names.text().split(',') if n.strip()]
        k = self.num_classes.value()
        colors = None
        if not k and not names:
            names, colors = self._model_classes()
        if not k:
            k = len(names) if len(names) > 2 else 1
        return paint_values(k, names), colors

    def _model_classes(self) -> tuple[list[str], list | None]:
        """Class names and colours of the starting checkpoint, if any."""
        try:
            path, _ = self._init_choice()
        except ValueError:
            return [], None
        if not path or str(path).startswith('vmamba:'):
            return [], None
        path = str(path)
        if path not in self._model_class_cache:
            from ..checkpoint import CheckpointError, load_checkpoint

            try:
                classes = load_checkpoint(path).metadata['classes']
                found = list(classes['names']), classes.get('colors')
            except (CheckpointError, OSError, KeyError):
                found = [], None
            self._model_class_cache[path] = found
        return self._model_class_cache[path]

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
        values, colors = self.paint_values()
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

    def _labels_changed(self, *_args) -> None:
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
        self._annotation_changed()

    def _schedule_scribble_check(self, *_args) -> None:
        """After a stroke: re-check the warning soon (once per burst)."""
        self._scribble_check.start()

    def _annotation_changed(self, *_args) -> None:
        sparse = self.sparse
        self.legend.setVisible(sparse)
        if sparse:
            values, colors = self.paint_values()
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
            elif not (data == 1).any() and not any(p.background for p in self._pairs):
                text = (
                    f'"{layer.name}" has no background strokes (1): the model '
                    'is never shown what is not an object and may take '
                    'everything for one. Paint some background.'
                )
        self.scribble_warning.setText(text)
        self.scribble_warning.setVisible(bool(text))
        return text

    def training_pairs(self) -> list:
        """The ``TrainingPair`` list for the current choices (not copied yet)."""
        from ..training import TrainingPair

        pairs = self._pairs or [p for p in [self._current_pair()] if p is not None]
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

    # ------------------------------------------------------------ config
    def _init_choice(self) -> tuple[str | None, dict]:
        """``(init, extra config)`` for the selected starting model."""
        choice = self.start_from.currentData()
        if choice == 'scratch-small':
            return None, {'dims': list(SCRATCH_SMALL)}
        if choice == 'scratch':
            return None, {}
        if choice == 'vmamba?':
            raise ValueError('choose the VMamba-S weights file first')
        if choice == 'inference':
            path = self._inference_checkpoint()
            if path is None:
                raise ValueError(
                    'the inference dock has no model selected: choose one there, '
                    'or pick another starting point'
                )
            return path, {}
        return choice, {}

    def _inference_checkpoint(self) -> str | None:
        from .inference import InferenceWidget

        for widget in self.viewer.window.dock_widgets.values():
            if isinstance(widget, InferenceWidget):
                return widget.checkpoint_path()
        return None

    def config(self, resume: bool = False):
        """The ``TrainConfig`` for the dock's current settings."""
        from ..training import TrainConfig

        init, extra = self._init_choice()
        output = self.output.text().strip()
        if not output:
            raise ValueError('choose where to save the model ("Save to")')
        if not output.endswith('.safetensors'):
            output += '.safetensors'
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        names = [n.strip() for n in self.class_names.text().split(',') if n.strip()]
        # every setting shown in the dock is the user's choice: a resume
        # with other values is refused instead of silently replaced
        given = {'preset', 'init', 'epochs', 'lr', 'batch_size', 'val_fraction'}
        given |= {'annotation'}
        given |= {'freeze_encoder', *extra}
        given |= {'tile_size'} if self.tile_size.value() else set()
        given |= {'num_classes'} if self.num_classes.value() else set()
        given |= {'class_names'} if names else set()
        return TrainConfig(
            output=output,
            preset=self.preset.currentData(),
            init=init,
            resume=resume,
            num_classes=self.num_classes.value() or None,
            class_names=names or None,
            epochs=self.epochs.value(),
            lr=self.lr.value(),
            batch_size=self.batch_size.value(),
            tile_size=self.tile_size.value() or None,
            val_fraction=self.val_fraction.value(),
            freeze_encoder=self.freeze_encoder.isChecked(),
            annotation=self.annotation.currentData(),
            device=self.device.currentData() or 'auto',
            training_data=', '.join(
                f'{p.image.name} + {p.labels.name}'
                for p in (self._pairs or [self._current_pair()])
                if p is not None
            ),
            command='napari dock',
            explicit=frozenset(given),
            **extra,
        )

    # ------------------------------------------------------------- control
    def start(self, resume: bool = False) -> None:
        """Copy the data and start training in a separate process."""
        if self.running:
            return
        from ..training.config import OutputExistsError
        from ..training.process import TrainingProcess

        try:
            config = self.config(resume=resume)
            try:
                config.check_output()
            except OutputExistsError as err:
                if not self.confirm_overwrite(err.paths):
                    self._say('Not started: the earlier run is kept.')
                    return
                config = config.replace(overwrite=True)
            pairs = self.training_pairs()
            process = TrainingProcess(config, pairs)
        except (ValueError, OSError) as err:
            self._error(str(err))
            return
        self.process = process
        self._last_config = config
        self._best = None
        if not resume:
            self.plot.clear()
            self.history = []
        self.plot.set_total_epochs(config.epochs)
        self._set_running(True)
        self._guard_window_close(config)
        self._say('Copying the annotated slices and starting the training process…')
        from napari.qt.threading import create_worker

        # extracting slices and handing them to the child can take a moment
        # for big volumes: do it off the GUI thread
        worker = create_worker(process.start, _ignore_errors=True)
        worker.errored.connect(self._start_failed)
        worker.returned.connect(lambda _=None: self._timer.start())
        worker.finished.connect(self._start_done)
        self._start_worker = worker
        worker.start()

    def confirm_overwrite(self, paths: list) -> bool:
        """Ask before a new run replaces an earlier run's checkpoints."""
        from qtpy.QtWidgets import QMessageBox

        names = '\n'.join(str(p) for p in paths)
        answer = QMessageBox.question(
            self,
            'Replace the earlier run?',
            f'These checkpoints exist from an earlier run:\n{names}\n\n'
            'Replace them with a new run? (Resume continues the earlier run '
            'instead.)',
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.No,
        )
        return answer == QMessageBox.StandardButton.Yes

    @property
    def running(self) -> bool:
        """A run is going on (a finished one may still be exiting)."""
        proc = self.process
        return (
            proc is not None
            and proc.finished is None
            and (proc.is_alive() or self._start_worker is not None)
        )

    def _guard_window_close(self, config) -> None:
        """Closing napari's window during the run stops the run.

        Watches the main window: when a close goes through (it is hidden
        after its close event, so a close the user cancelled in napari's
        confirmation does not count), the training is asked to stop after
        its current step -- it saves the resumable checkpoint and exits, also
        when the script or session that opened napari goes on.
        """
        main = self._main_window()
        if main is not None and main is not self._watched():
            main.installEventFilter(self)
            # weakly: a dock must not keep napari's window alive
            self._watched_window = weakref.ref(main)

    def _watched(self):
        return None if self._watched_window is None else self._watched_window()

    def _main_window(self):
        from qtpy.QtWidgets import QMainWindow

        widget = self.parentWidget()
        while widget is not None and not isinstance(widget, QMainWindow):
            widget = widget.parentWidget()
        return widget

    def eventFilter(self, obj, event) -> bool:
        """The main window's Close, then its Hide: napari is closing."""
        from qtpy.QtCore import QEvent

        kind = event.type()
        if obj is self._watched():
            if kind == QEvent.Type.Close:
                self._window_closing = True
                # a cancelled close leaves the window shown: forget it then
                QTimer.singleShot(0, self._close_cancelled)
            elif kind == QEvent.Type.Hide and self._window_closing:
                self._window_closing = False
                self.stop_for_close()
        return False

    def _close_cancelled(self) -> None:
        window = self._watched()
        if window is not None and window.isVisible():
            self._window_closing = False

    def stop_for_close(self) -> bool:
        """napari is closing: ask the run to stop after its current step.

        Does not wait: the child saves the resumable checkpoint and exits by
        itself (and is reaped), and at interpreter exit
        :class:`~napari_vmunet.training.TrainingProcess` waits for it.
        """
        if self.process is None or not self.running:
            return False
        self.process.stop()
        self._say('napari is closing: stopping the training after this step…')
        return True

    def _start_failed(self, err: BaseException) -> None:
        self.process = None
        self._set_running(False)
        self._error(str(err))

    def _start_done(self) -> None:
        self._start_worker = None

    def resume(self) -> None:
        """Continue the last run from its resumable checkpoint, with the
        layers as they are now (your newest corrections included)."""
        self.start(resume=True)

    def stop(self) -> None:
        """Stop after the current step (a second press kills the process)."""
        if self.process is None:
            return
        if self.stop_button.text() == 'Kill':
            self.process.kill()
            self._say('Killing the training process…')
            return
        self.process.stop()
        self.stop_button.setText('Kill')
        self._say('Stopping after the current step (press Kill to end it now)…')

    def export_for_bioimageio(self) -> None:
        """Open the bioimage.io export form for the best model so far."""
        from .bioimageio_export import open_export_dialog

        self._export_dialog = open_export_dialog(self, self._best)

    def publish_best(self) -> None:
        if self._best:
            bus.model_published.emit(self._best, 'trained here')

    def _on_published(self, path: str, reason: str) -> None:
        if reason != 'trained here' and self.start_from.findData(path) < 0:
            self.set_start_checkpoint(path)

    def _set_running(self, running: bool) -> None:
        self.start_button.setEnabled(not running)
        self.stop_button.setEnabled(running)
        self.stop_button.setText('Stop')
        self.resume_button.setEnabled(False)
        for w in (
            self.add_pair_button,
            self.preset,
            self.start_from,
            self.output,
            self.annotation,
        ):
            w.setEnabled(not running)

    # -------------------------------------------------------------- events
    def _poll(self) -> None:
        if self.process is None:
            self._timer.stop()
            return
        for event in self.process.poll(0):
            self.history.append(event)
            self.handle(event)

    def handle(self, event) -> None:
        """Show one training event (``training.events``) in the dock."""
        from ..training import EpochEnd, Finished, Saved, Started, Step

        match event:
            case Started():
                self._on_started(event)
            case Step():
                self.plot.add_step(
                    event.epoch - 1 + event.step / event.steps_per_epoch,
                    event.loss,
                )
                self._say(event.describe())
            case EpochEnd():
                self.plot.add_epoch(
                    event.epoch, event.train_loss, event.val_loss, event.mean_dice
                )
                self._say(event.describe())
            case Saved():
                self._on_saved(event)
            case Finished():
                self._on_finished(event)
            case _:
                raise TypeError(f'unknown training event {event!r}')

    def _on_started(self, ev) -> None:
        self.plot.set_total_epochs(ev.total_epochs)
        self.plot.set_validation(ev.n_val > 0)
        self._say(ev.describe() + (' — ' + ' '.join(ev.notes) if ev.notes else ''))

    def _on_saved(self, ev) -> None:
        if ev.kind == 'best':
            self._best = ev.path
            self.use_button.setEnabled(True)
            self.export_button.setEnabled(True)

    def _on_finished(self, ev) -> None:
        self._timer.stop()
        self._set_running(False)
        self._best = ev.best_path or self._best
        self.use_button.setEnabled(bool(self._best))
        self.export_button.setEnabled(bool(self._best))
        self.resume_button.setEnabled(bool(ev.last_path))
        text = dataclasses.replace(ev, best_path=self._best).describe()
        if ev.reason == 'error':
            self._error(text)
        else:
            self._say(text)
        if self._best and ev.reason != 'error':
            self.publish_best()  # the hot swap into the inference dock
            self.suggest_next_slices(self._best)

    # ------------------------------------------------------- next slices
    def suggest_next_slices(self, checkpoint: str) -> None:
        """Predict the (first) training volume with ``checkpoint`` in a
        worker thread and show its most uncertain slices, annotated and
        background-only ones left out (``inference.uncertainty``)."""
        pairs = self._pairs or [p for p in [self._current_pair()] if p is not None]
        if not pairs or pairs[0].labels.ndim != 3 or self._rank_worker is not None:
            return
        pair = pairs[0]
        image = pair.image
        rgb = bool(getattr(image, 'rgb', False))
        if image.data.ndim - (1 if rgb else 0) != 3:
            return
        axis = self.slice_axis.value()
        device = self.device.currentData() or 'auto'
        from napari.qt.threading import create_worker

        def job():
            from ..inference import Predictor

            predictor = Predictor(checkpoint, device=device)
            result = yield from predictor.iter_predict(
                image.data, slice_axis=axis, rgb=rgb, return_uncertainty=True
            )
            return result

        worker = create_worker(job, _ignore_errors=True)
        worker.yielded.connect(
            lambda step: self.next_slices.say(
                f"Ranking the slices by the new model's uncertainty: {step.describe()}"
            )
        )
        worker.returned.connect(lambda result: self._show_next_slices(pair, result))
        worker.errored.connect(
            lambda err: self.next_slices.say(f'Could not rank the slices: {err}')
        )
        worker.finished.connect(self._rank_done)
        self._rank_worker = worker
        self.next_slices.say("Ranking the slices by the new model's uncertainty…")
        worker.start()

    def _show_next_slices(self, pair: _Pair, result) -> None:
        self.next_slices.show_scores(
            result.slice_uncertainty,
            pair.image,
            self.slice_axis.value(),
            result.labels.shape,
            result.slice_axis,
            annotations=pair.labels,
            excluded=tuple(sorted(pair.background)),
        )

    def _rank_done(self) -> None:
        self._rank_worker = None

    # ---------------------------------------------------------------- misc
    def _say(self, text: str) -> None:
        self.status.setText(text)

    def _error(self, text: str) -> None:
        from napari.utils.notifications import show_error

        self.status.setText(text)
        show_error(text)

    def closeEvent(self, event) -> None:  # pragma: no cover - Qt teardown
        self.shutdown()
        super().closeEvent(event)

    def shutdown(self) -> None:
        """Stop a running training (used when the dock or napari closes)."""
        self._timer.stop()
        if self._rank_worker is not None:
            self._rank_worker.quit()
        if self.process is not None:
            self.process.shutdown()
