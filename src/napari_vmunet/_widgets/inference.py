"""The inference dock: a checkpoint + an image layer -> an editable Labels layer.

All computation is :class:`napari_vmunet.inference.Predictor.iter_predict`,
run in a napari generator worker: it yields after every batch of tiles, so
the viewer keeps painting and Cancel takes effect within one batch.  The
result only touches the viewer when the job finished, so a cancelled or
failed run leaves every layer as it was.
"""

from __future__ import annotations

import os
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import QSettings, Qt, QTimer
from qtpy.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QWidget,
)
from superqt import QCollapsible

from ._bus import listen
from ._controls import device_picker
from ._docking import compact, scrolling_layout
from ._layers import LayerComboBox

if TYPE_CHECKING:
    import napari

SETTINGS = ('napari-vmunet', 'napari-vmunet')
RECENT_KEY = 'inference/recent_checkpoints'
MAX_RECENT = 8
#: Seconds between updates of napari's progress bar (each one repaints).
PBAR_INTERVAL_S = 0.25
#: the Normalisation choices: (shown text, the mode that overrides the
#: model's own, or None)
NORMALIZATION_CHOICES = (
    ("the model's own", None),
    ('percentiles 1-99.8 (robust)', 'percentile'),
    ('min-max of each slice', 'minmax'),
)


@dataclass
class _Run:
    """One run of the dock: the core request, and the GUI context it needs."""

    layer: Any  # the napari Image layer read
    data: Any  # its array (the full resolution of a multiscale layer)
    request: Any  # inference.request.PredictionRequest
    objects: dict | None = None  # the object options (ObjectsPanel)
    measured: Any = None  # (objects, table), filled in the worker

    @property
    def model_name(self) -> str:
        return Path(self.request.checkpoint).name.split('.')[0]


def remembered_checkpoints() -> list[str]:
    """The checkpoints chosen in earlier sessions, newest first: only files
    that are there and could be checkpoints (an older version remembered
    text and empty files too)."""
    value = QSettings(*SETTINGS).value(RECENT_KEY, [])
    if isinstance(value, str):  # QSettings returns a str for one item
        value = [value]
    return [p for p in (value or []) if _could_be_checkpoint(p)]


def _could_be_checkpoint(path: str) -> bool:
    from ..checkpoint import CheckpointError, check_checkpoint_file

    try:
        check_checkpoint_file(path)
    except CheckpointError:
        return False
    return True


def remember_checkpoint(path: str) -> None:
    items = [path] + [p for p in remembered_checkpoints() if p != path]
    QSettings(*SETTINGS).setValue(RECENT_KEY, items[:MAX_RECENT])


def forget_checkpoint(path: str) -> None:
    """Drop ``path`` from the remembered checkpoints (it proved unusable)."""
    value = QSettings(*SETTINGS).value(RECENT_KEY, [])
    if isinstance(value, str):
        value = [value]
    items = [p for p in (value or []) if p != path]
    QSettings(*SETTINGS).setValue(RECENT_KEY, items)


def gone() -> str:
    """What to say about a chosen checkpoint whose file is no longer there."""
    return (
        'is no longer there: it was moved or deleted after it was chosen; '
        'choose it again with Browse…'
    )


def _fits(paths: list[str], data, rgb: bool) -> list:
    """How well each checkpoint suits ``data`` (worker thread); a file that
    cannot be read suits nothing."""
    from ..checkpoint import CheckpointError, load_checkpoint
    from ..inference.fit import Fit, assess_fit

    fits = []
    for path in paths:
        try:
            fits.append(assess_fit(load_checkpoint(path), data, rgb=rgb))
        except (CheckpointError, OSError, ValueError) as err:
            fits.append(Fit(False, None, (str(err),)))
    return fits


class InferenceWidget(QWidget):
    """Run a VM-UNet checkpoint on an image layer (2D, RGB, multichannel, 3D)."""

    def __init__(self, napari_viewer: napari.Viewer, parent=None):
        super().__init__(parent)
        import napari.layers

        self.viewer = napari_viewer
        self._worker = None
        self._pbar = None
        self._pbar_shown = 0.0  # when napari's progress bar was last updated
        # GUI work after a run (adding layers), one piece per event-loop turn
        self._ui_steps: deque = deque()
        self._predictor = None
        self._predictor_key = None
        self._checkpoint_cache = None
        self._info_worker = None
        self._job_over = False
        #: checkpoint path -> why it cannot be used (Run stays disabled)
        self._unusable: dict[str, str] = {}
        self._run_warnings = ''
        self._model_channels: int | None = None  # of the described checkpoint
        self._channel_chosen = False  # the user picked a channel axis
        self.last_result = None  # (_Run, RequestResult) of the last run
        # the user (or a published model) chose the checkpoint: no more
        # preselection by fit
        self._model_chosen = False
        self._fit_worker = None

        layout = scrolling_layout(self)  # fits a laptop screen, tabs with ours

        # --- model ---------------------------------------------------------
        box = QGroupBox('Model')
        form = QFormLayout(box)
        row = QHBoxLayout()
        self.checkpoint = QComboBox()
        self.checkpoint.setToolTip(
            'A VM-UNet checkpoint: ours (.safetensors), '
            "the original repo's best.pth / latest.pth, or a bioimage.io "
            'package (.zip)'
        )
        compact(self.checkpoint)
        self.browse = QPushButton('Browse…')
        self.browse.clicked.connect(self._browse)
        row.addWidget(self.checkpoint, 1)
        row.addWidget(self.browse)
        form.addRow('Checkpoint', row)
        self.model_info = QLabel('')
        self.model_info.setWordWrap(True)
        form.addRow(self.model_info)
        self.export_button = QPushButton('Export for bioimage.io…')
        self.export_button.setToolTip(
            'Write this model as a bioimage.io package (.zip) for '
            'bioimageio.core, ilastik, deepImageJ, QuPath and the zoo'
        )
        self.export_button.clicked.connect(self.export_for_bioimageio)
        form.addRow(self.export_button)
        self._export_dialog = None
        layout.addWidget(box)

        # --- image -----------------------------------------------------------
        box = QGroupBox('Image')
        form = QFormLayout(box)
        self.image_layer = LayerComboBox(self.viewer, napari.layers.Image)
        form.addRow('Layer', self.image_layer)
        self.channel_axis = QComboBox()
        self.channel_axis.setToolTip(
            'Axis holding the channels of a multichannel image (RGB is detected)'
        )
        form.addRow('Channel axis', self.channel_axis)
        self.slice_axis = QComboBox()
        self.slice_axis.setToolTip(
            'A volume is predicted slice by slice along this axis'
        )
        form.addRow('Slice axis', self.slice_axis)
        scope = QHBoxLayout()
        self.scope_all = QRadioButton('whole image/volume')
        self.scope_slice = QRadioButton('current slice')
        self.scope_all.setChecked(True)
        group = QButtonGroup(self)
        group.addButton(self.scope_all)
        group.addButton(self.scope_slice)
        scope.addWidget(self.scope_all)
        scope.addWidget(self.scope_slice)
        form.addRow('Run on', scope)
        self.time_points = compact(QComboBox())
        self.time_points.addItem('the current time point', 'current')
        self.time_points.addItem('every time point', 'all')
        self.time_points.setToolTip(
            'A 4-D stack (time, then a volume) is predicted one time point at '
            'a time: the one the viewer shows, or all of them'
        )
        form.addRow('Time points', self.time_points)
        layout.addWidget(box)

        # --- options (collapsed) ---------------------------------------------
        options = QCollapsible('Options')
        inner = QWidget()
        form = QFormLayout(inner)
        self.device = device_picker()
        form.addRow('Device', self.device)
        self.threshold = QDoubleSpinBox(minimum=0.01, maximum=0.99, singleStep=0.05)
        self.threshold.setValue(0.5)
        self.threshold.setToolTip('Probability threshold (one-class models)')
        form.addRow('Threshold', self.threshold)
        self.overlap = QDoubleSpinBox(minimum=0.0, maximum=0.9, singleStep=0.05)
        self.overlap.setValue(0.25)
        self.overlap.setToolTip(
            'How much neighbouring tiles overlap; overlaps are blended (no seams)'
        )
        form.addRow('Tile overlap', self.overlap)
        self.tile_size = QSpinBox(minimum=0, maximum=2048, singleStep=32)
        self.tile_size.setSpecialValueText('auto')
        self.tile_size.setToolTip(
            'Sliding-window size (multiple of 32); auto: the whole slice when '
            'it fits (256² on a CPU, 2048² on a GPU), else tiles sized for '
            'the device'
        )
        form.addRow('Tile size', self.tile_size)
        self.whole_image = QCheckBox('whole image at once (no tiles)')
        self.whole_image.setToolTip(
            'One window per image or slice, padded to a multiple of 32: '
            'fastest when it fits in memory; the model then sees sizes it '
            'was not trained at'
        )
        self.whole_image.toggled.connect(lambda on: self.tile_size.setEnabled(not on))
        form.addRow(self.whole_image)
        self.batch_size = QSpinBox(minimum=0, maximum=256)
        self.batch_size.setSpecialValueText('auto')
        self.batch_size.setToolTip(
            'Tiles per forward pass; halved automatically on out-of-memory'
        )
        form.addRow('Tile batch', self.batch_size)
        self.channel_map = QLineEdit()
        self.channel_map.setPlaceholderText('e.g. 0,1,1')
        self.channel_map.setToolTip(
            'Which image channel feeds each model channel (multichannel images)'
        )
        form.addRow('Channel map', self.channel_map)
        self.normalization = compact(QComboBox())
        for text, mode in NORMALIZATION_CHOICES:
            self.normalization.addItem(text, mode)
        self.normalization.setToolTip(
            "How intensities are scaled before the model sees them: the model's "
            'own recipe, or percentiles, which a few extreme pixels cannot ruin'
        )
        form.addRow('Normalisation', self.normalization)
        self.nonfinite_background = QCheckBox('NaN / Inf pixels are background')
        # (its text sets the dock's narrowest width no more than the others)
        self.nonfinite_background.setToolTip(
            'Pixels without a finite value (missing data) get label 0 and '
            'probability 0, whatever the model says there'
        )
        form.addRow(self.nonfinite_background)
        self.probabilities = QCheckBox('also add probabilities')
        form.addRow(self.probabilities)
        options.addWidget(inner)
        layout.addWidget(options)

        # --- run -------------------------------------------------------------
        row = QHBoxLayout()
        self.run_button = QPushButton('Run')
        self.run_button.clicked.connect(self.run)
        self.cancel_button = QPushButton('Cancel')
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        row.addWidget(self.run_button)
        row.addWidget(self.cancel_button)
        layout.addLayout(row)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        layout.addWidget(self.progress)
        self.status = QLabel('')
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(
            Qt.TextInteractionFlag.TextSelectableByMouse
        )
        layout.addWidget(self.status)
        self.diagnostics = QLabel('')
        self.diagnostics.setWordWrap(True)
        self.diagnostics.setStyleSheet('color: gray; font-size: 10px')
        layout.addWidget(self.diagnostics)
        from ._nextslice import NextSlicePanel

        self.next_slices = NextSlicePanel(self.viewer)
        layout.addWidget(self.next_slices)
        from ._results_table import ObjectsPanel

        self.objects = ObjectsPanel(self.viewer, self.image_layer.value)
        layout.addWidget(self.objects)
        layout.addStretch(1)

        self._fill_checkpoints()
        self._update_diagnostics()
        self.image_layer.currentIndexChanged.connect(self._image_changed)
        self.channel_axis.currentIndexChanged.connect(self._refresh_slice_axes)
        self.channel_axis.activated.connect(self._channel_axis_chosen)
        self.checkpoint.currentIndexChanged.connect(self._checkpoint_changed)
        self.checkpoint.activated.connect(self._user_chose_model)
        self.device.currentIndexChanged.connect(self._update_diagnostics)
        listen(self, self._on_model_published)
        self._image_changed()
        self._checkpoint_changed()

    # ------------------------------------------------------------------ setup
    def _fill_checkpoints(self) -> None:
        from ..zoo import builtin_checkpoints

        self.checkpoint.blockSignals(True)
        self.checkpoint.clear()
        for name, path in builtin_checkpoints().items():
            self.checkpoint.addItem(f'built-in: {name}', str(path))
        for path in remembered_checkpoints():
            self.checkpoint.addItem(Path(path).name, path)
            self.checkpoint.setItemData(
                self.checkpoint.count() - 1, path, Qt.ItemDataRole.ToolTipRole
            )
        self.checkpoint.blockSignals(False)

    def _user_chose_model(self, *_args) -> None:
        self._model_chosen = True

    def _preselect_model(self) -> None:
        """Select the listed model that suits the image (``inference.fit``);
        select none when no model is known to suit it, so that a wrong
        guess is never made for the user.  Runs off the GUI thread: each
        checkpoint is read and a few planes of the image are compared."""
        layer = self.image_layer.value()
        if self._model_chosen or layer is None or self.checkpoint.count() == 0:
            return
        from napari.qt.threading import create_worker

        paths = [self.checkpoint.itemData(i) for i in range(self.checkpoint.count())]
        data = layer.data[0] if getattr(layer, 'multiscale', False) else layer.data
        worker = create_worker(_fits, paths, data, bool(layer.rgb), _ignore_errors=True)
        worker.returned.connect(lambda fits: self._apply_preselection(layer, fits))
        self._fit_worker = worker
        worker.start()

    def _apply_preselection(self, layer, fits) -> None:
        from ..inference.fit import best_fit

        try:
            current = self.image_layer.value()
        except RuntimeError:  # the dock was closed while the check ran
            return
        if self._model_chosen or layer is not current:
            return  # the user chose meanwhile, or moved to another image
        index = best_fit(fits)
        if index is None:
            self.checkpoint.setCurrentIndex(-1)
            self.model_info.setText(
                f'<b>No listed model is known to suit “{layer.name}”.</b> '
                'Choose one (Checkpoint or Browse…), or fine-tune a new model '
                'on a few annotated slices (Fine-tune dock).'
            )
            self.run_button.setEnabled(False)
            return
        self.checkpoint.setCurrentIndex(index)
        self.status.setText(
            f'Chose {self.checkpoint.itemText(index)}: it was trained on images '
            f'like “{layer.name}”.'
        )

    def _update_diagnostics(self, *_args) -> None:
        from ..inference import diagnostics, format_diagnostics

        self.diagnostics.setText(
            format_diagnostics(diagnostics(self.device.currentData()))
        )

    # ------------------------------------------------------------ public API
    def set_checkpoint(self, path: str | os.PathLike) -> None:
        """Select ``path`` (adding it to the list).

        It is remembered for later sessions only if it can be a checkpoint:
        a text or empty file is refused at once (Run disabled, the reason in
        the model line), and a file that fails to load is forgotten again.
        """
        from ..checkpoint import CheckpointError, check_checkpoint_file

        path = str(Path(path))
        index = self.checkpoint.findData(path)
        if index < 0:
            self.checkpoint.insertItem(0, Path(path).name, path)
            self.checkpoint.setItemData(0, path, Qt.ItemDataRole.ToolTipRole)
            index = 0
        try:
            check_checkpoint_file(path)
        except CheckpointError as err:
            self._mark_unusable(path, str(err))
        else:
            self._unusable.pop(path, None)
            if not path.startswith(str(Path(__file__).parents[1])):
                remember_checkpoint(path)
        self._model_chosen = True
        self.checkpoint.setCurrentIndex(index)
        self._checkpoint_changed()

    def set_image_layer(self, layer) -> None:
        self.image_layer.set_value(layer)

    def checkpoint_path(self) -> str | None:
        return self.checkpoint.currentData()

    # ------------------------------------------------------------- handlers
    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self,
            'Choose a VM-UNet checkpoint',
            str(Path(self.checkpoint_path() or Path.home()).parent),
            'Checkpoints (*.safetensors *.pth *.pt *.zip *.yaml);;All files (*)',
        )
        if path:
            self.set_checkpoint(path)

    def export_for_bioimageio(self) -> None:
        """Open the bioimage.io export form for the chosen checkpoint."""
        from .bioimageio_export import open_export_dialog

        self._export_dialog = open_export_dialog(self, self.checkpoint_path())

    def _on_model_published(self, path: str, reason: str) -> None:
        self.set_checkpoint(path)
        self.status.setText(
            f'New model ready: {Path(path).name} ({reason}). Press Run to use it.'
        )

    def _checkpoint_changed(self, *_args) -> None:
        """Load the chosen checkpoint in a worker thread and describe it."""
        path = self.checkpoint_path()
        self._update_run_enabled()
        if not path:
            self.model_info.setText('No checkpoint: choose one, or Browse….')
            return
        if path in self._unusable:
            self._show_unusable(path)
            return
        from napari.qt.threading import create_worker

        self.model_info.setText(f'Reading {Path(path).name}…')
        worker = create_worker(self._load_checkpoint, path, _ignore_errors=True)
        worker.returned.connect(self._show_model_info)
        worker.errored.connect(lambda err: self._mark_unusable(path, str(err)))
        self._info_worker = worker  # keep a reference while it runs
        worker.start()

    def _mark_unusable(self, path: str, reason: str) -> None:
        """Remember (for this session) that ``path`` cannot be used, forget it
        for later sessions, and disable Run while it is selected."""
        self._unusable[path] = reason
        forget_checkpoint(path)
        if path == self.checkpoint_path():
            self._show_unusable(path)
        self._update_run_enabled()

    def _show_unusable(self, path: str) -> None:
        self.model_info.setText(f'<b>Cannot use this file:</b> {self._unusable[path]}')

    def _update_run_enabled(self) -> None:
        """Run is offered when an image, a usable checkpoint and no job are there."""
        path = self.checkpoint_path()
        usable = bool(path) and path not in self._unusable
        self.run_button.setEnabled(
            self._worker is None and usable and self.image_layer.value() is not None
        )
        self.run_button.setToolTip(
            '' if usable or not path else 'This checkpoint cannot be used: see above'
        )

    def _load_checkpoint(self, path: str):
        """The loaded checkpoint for ``path``, reused while the file is unchanged
        (a retrained file is picked up by its new modification time)."""
        from ..checkpoint import CheckpointError, load_checkpoint

        try:
            key = (path, os.stat(path).st_mtime_ns)
        except FileNotFoundError:
            raise CheckpointError(gone(), path) from None
        except OSError:
            key = None  # load_checkpoint says what is wrong
        if key is None:
            return load_checkpoint(path)
        cached = self._checkpoint_cache
        if cached is None or cached[0] != key:
            cached = self._checkpoint_cache = (key, load_checkpoint(path))
        return cached[1]

    def _show_model_info(self, ckpt) -> None:
        if str(ckpt.path) != self.checkpoint_path():
            return  # the user picked another file meanwhile
        self._unusable.pop(str(ckpt.path), None)
        self._update_run_enabled()
        cfg, meta = ckpt.config, ckpt.metadata
        names = meta.get('classes', {}).get('names') or []
        inputs = meta.get('input', {})
        norm = inputs.get('normalization', {}).get('mode', 'minmax')
        n_params = sum(p.numel() for p in ckpt.model.parameters())
        self.model_info.setText(
            f'{cfg["num_classes"]} class(es): {", ".join(names[1:]) or "?"}; '
            f'{cfg["input_channels"]} input channels; dims {cfg["dims"]}; '
            f'{n_params / 1e6:.2f} M parameters; tile '
            f'{(inputs.get("tile_size") or ["?"])[0]}; normalisation {norm}'
        )
        self.threshold.setEnabled(cfg['num_classes'] == 1)
        self._model_channels = int(cfg['input_channels'])
        self._guess_channels()

    def _guess_channels(self) -> None:
        """Preselect the channel axis of a layer that looks multichannel
        (:func:`~napari_vmunet.rules.channels.guess_channel_axis`) and say
        so, unless the user chose one."""
        from ..rules.channels import guess_channel_axis

        layer = self.image_layer.value()
        if layer is None or self._channel_chosen:
            return
        guess = guess_channel_axis(
            layer.data.shape, self._model_channels, rgb=bool(layer.rgb)
        )
        if guess is None:
            return
        index = self.channel_axis.findData(guess.axis)
        if index >= 0 and index != self.channel_axis.currentIndex():
            self.channel_axis.setCurrentIndex(index)
        if index >= 0:
            # keep the line that says which model was preselected
            text = self.status.text()
            if guess.reason in text:
                return
            keep = text.startswith('Chose ')
            self.status.setText(f'{text} {guess.reason}' if keep else guess.reason)

    def _channel_axis_chosen(self, *_args) -> None:
        self._channel_chosen = True

    def _image_changed(self, *_args) -> None:
        layer = self.image_layer.value()
        self.channel_axis.clear()
        self.slice_axis.clear()
        self._update_run_enabled()
        if layer is None:
            return
        ndim = layer.data.ndim
        self.channel_axis.addItem('RGB' if layer.rgb else 'none', None)
        if not layer.rgb:
            for axis in range(ndim):
                self.channel_axis.addItem(
                    f'{axis} (size {layer.data.shape[axis]})', axis
                )
        self.channel_axis.setEnabled(not layer.rgb and ndim >= 3)
        self._channel_chosen = False  # a new layer: guess again
        self._guess_channels()
        self._refresh_slice_axes()
        self._preselect_model()

    def _refresh_slice_axes(self, *_args) -> None:
        """Offer the spatial axes (data axes without the channel axis) of a
        volume as slice axes."""
        self.slice_axis.clear()
        layer = self.image_layer.value()
        if layer is None:
            return
        ndim = layer.data.ndim
        channels = ndim - 1 if layer.rgb else self.channel_axis.currentData()
        spatial = [i for i in range(ndim) if i != channels]
        stack = len(spatial) == 4  # time points of volumes: time comes first
        if stack:
            spatial = spatial[1:]
        if len(spatial) == 3:
            for axis in spatial:
                self.slice_axis.addItem(f'{axis} (size {layer.data.shape[axis]})', axis)
        self.slice_axis.setEnabled(len(spatial) == 3)
        self.scope_slice.setEnabled(len(spatial) == 3)
        self.time_points.setEnabled(stack)
        if len(spatial) != 3:
            self.scope_all.setChecked(True)

    # ------------------------------------------------------------------ run
    def _run_from_widgets(self) -> _Run:
        """The run the widgets ask for: a core request, plus the layer it
        reads and the object options."""
        from ..inference.request import PredictionRequest

        layer = self.image_layer.value()
        if layer is None:
            raise ValueError('choose an image layer first')
        path = self.checkpoint_path()
        if not path:
            raise ValueError('choose a checkpoint first (Browse…)')
        if not Path(path).exists():
            self._mark_unusable(path, f'{path}: {gone()}')
            raise ValueError(f'{Path(path).name} {gone()}')
        channel_axis = self.channel_axis.currentData()
        slice_axis = self.slice_axis.currentData()  # a data axis, or None
        text = self.channel_map.text().strip()
        channel_map = (
            tuple(int(c) for c in text.replace(' ', '').split(',')) if text else None
        )
        data = layer.data
        if getattr(layer, 'multiscale', False):
            data = data[0]
        time_axis = time_index = None
        if self.time_points.isEnabled():
            channels = data.ndim - 1 if layer.rgb else channel_axis
            time_axis = next(i for i in range(data.ndim) if i != channels)
            if self.time_points.currentData() == 'current':
                time_index = self._current_index(layer, time_axis)
        slice_index = None
        if self.scope_slice.isChecked() and slice_axis is not None:
            slice_index = self._current_index(layer, slice_axis)
        mode = self.normalization.currentData()
        request = PredictionRequest(
            checkpoint=path,
            device=self.device.currentData() or 'auto',
            tile_size=0
            if self.whole_image.isChecked()
            else self.tile_size.value() or None,
            batch_size=self.batch_size.value() or None,
            overlap=self.overlap.value(),
            threshold=self.threshold.value(),
            normalization={'mode': mode} if mode else None,
            nonfinite_background=self.nonfinite_background.isChecked(),
            rgb=bool(layer.rgb),
            channel_axis=channel_axis,
            slice_axis=slice_axis,
            channel_map=channel_map,
            slice_index=slice_index,
            time_axis=time_axis,
            time_index=time_index,
            probabilities=self.probabilities.isChecked(),
            # a whole volume or stack: rank its slices for annotating next
            uncertainty=slice_axis is not None
            and slice_index is None
            and time_axis is None,
        )
        run = _Run(layer=layer, data=data, request=request)
        # objects and measurements after the prediction (whole runs only)
        run.objects = self.objects.settings_for_run(run, self._geometry(run))
        return run

    def _current_index(self, layer, axis: int) -> int:
        """The data index along ``axis`` of the plane the viewer shows."""
        point = layer.world_to_data(self.viewer.dims.point[-layer.ndim :])
        index = int(round(point[axis]))
        return min(max(index, 0), layer.data.shape[axis] - 1)

    def run(self) -> None:
        """Start a prediction with the current settings (non-blocking)."""
        if self._worker is not None:
            return
        try:
            run = self._run_from_widgets()
        except ValueError as err:
            self._error(err)
            return
        from napari.qt.threading import create_worker

        self._worker = create_worker(
            self._job, run, _start_thread=False, _ignore_errors=True
        )
        self._worker.yielded.connect(self._on_progress)
        self._worker.returned.connect(self._on_result)
        self._worker.errored.connect(self._error)
        self._worker.aborted.connect(self._on_aborted)
        self._worker.finished.connect(self._on_finished)
        self._job_over = False
        self._run_warnings = ''
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.setRange(0, 0)
        self.status.setText('Loading the model…')
        self._worker.start()

    def cancel(self) -> None:
        """Stop the running prediction at its next tile batch."""
        if self._worker is not None:
            self.status.setText('Cancelling…')
            self._worker.quit()

    def _predictor_for(self, request):
        checkpoint = self._load_checkpoint(request.checkpoint)
        key = (id(checkpoint), request.predictor_settings())
        if key != self._predictor_key:
            self._predictor = None  # free the old model first
            self._predictor = request.make_predictor(checkpoint)
            self._predictor_key = key
        return self._predictor

    def _job(self, run: _Run):
        """Runs in the worker thread: a generator yielding Progress."""
        from ..inference.request import iter_request

        predictor = self._predictor_for(run.request)
        result = yield from iter_request(run.request, run.data, predictor)
        if run.objects is not None:
            run.measured = yield from self.objects.iter_for_result(
                run, result.prediction
            )
        return run, result

    def _on_progress(self, step) -> None:
        if self._worker is None or self._job_over:
            return  # progress signals can arrive after the end of the job
        if hasattr(step, 'stage'):  # objects and measurements
            self.progress.setRange(0, max(step.total, 1))
            self.progress.setValue(step.done)
            self.status.setText(f'Objects: {step.message} {step.done}/{step.total}')
            return
        if step.total:
            self.progress.setRange(0, step.total)
            self.progress.setValue(step.done)
        if step.warnings:
            self._run_warnings = ' '.join(step.warnings)
        text = f'Predicting: {step.describe()}'
        if self._run_warnings:
            text += f' — {self._run_warnings}'
        self.status.setText(text)
        # napari's progress bar processes pending events on every update
        # (a repaint, and re-entrancy): a few updates a second are plenty
        now = time.monotonic()
        if now - self._pbar_shown < PBAR_INTERVAL_S and step.done < step.total:
            return
        self._pbar_shown = now
        pbar = self._pbar
        if pbar is None:
            from napari.utils import progress

            pbar = self._pbar = progress(total=step.total, desc='VM-UNet inference')
        pbar.update(step.done - pbar.n)

    def _later(self, step) -> None:
        """Queue GUI work; the queue runs one step per event-loop turn.

        Adding a layer costs napari 0.1-0.4 s here (benchmarks/responsiveness.py);
        adding the labels and each probability layer in one slot would
        freeze the viewer for their sum.
        """
        self._ui_steps.append(step)
        if len(self._ui_steps) == 1:
            QTimer.singleShot(0, self._next_ui_step)

    def _next_ui_step(self) -> None:
        step = self._ui_steps[0]
        try:
            step()
        except Exception as err:  # noqa: BLE001 - reported, the queue goes on
            self._error(err)
        finally:
            self._ui_steps.popleft()
            if self._ui_steps:
                QTimer.singleShot(0, self._next_ui_step)

    def _on_result(self, value) -> None:
        self._job_over = True
        run, answer = value
        result = answer.prediction
        self.last_result = value
        written = {}

        def labels() -> None:
            written['layer'] = self._write_labels(run, answer)

        def done() -> None:
            if 'layer' not in written:
                return  # writing it failed, and the error is on screen
            text = (
                f'Done in {result.seconds:.1f} s on {result.device}: '
                f'“{written["layer"].name}” is ready to edit.'
            )
            if result.warnings:
                text += ' ' + ' '.join(result.warnings)
            self.status.setText(text)
            self.progress.setRange(0, 1)
            self.progress.setValue(1)
            self._show_next_slices(run, result)

        self._later(labels)
        if result.probabilities is not None:
            for write in self._probability_writers(run, answer):
                self._later(write)
        self._later(done)

    def _show_next_slices(self, run: _Run, result) -> None:
        """The most uncertain slices of a volume or stack, annotated ones
        left out (``inference.uncertainty``); nothing for a 2-D image or a
        4-D stack; a single plane keeps the list of the last whole run."""
        panel = self.next_slices
        if result.slice_uncertainty is None or result.slice_axis is None:
            if run.request.slice_index is None:
                panel.clear()
            return
        shape = result.labels.shape
        panel.show_scores(
            result.slice_uncertainty,
            run.layer,
            run.request.slice_axis,
            shape,
            result.slice_axis,
            annotations=panel.default_annotations(shape),
        )

    def _on_aborted(self) -> None:
        self._job_over = True
        self.status.setText('Cancelled: no layer was changed.')
        self.progress.setRange(0, 1)
        self.progress.setValue(0)

    def _error(self, err: BaseException) -> None:
        from napari.utils.notifications import show_error

        from ..checkpoint import CheckpointError

        self._job_over = True
        path = self.checkpoint_path()
        if isinstance(err, CheckpointError) and str(err.path) == path:
            self._mark_unusable(path, str(err))
        message = f'VM-UNet inference failed: {err}'
        self.status.setText(message)
        show_error(message)

    def _on_finished(self) -> None:
        self._later(self._finish)  # after the result's layers are written

    def _finish(self) -> None:
        self._worker = None
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None
        self.cancel_button.setEnabled(False)
        self._update_run_enabled()
        if self.progress.maximum() == 0:
            self.progress.setRange(0, 1)

    # ---------------------------------------------------------------- layers
    def _geometry(self, run: _Run) -> dict:
        """The image layer's placement (and units), without the channel axis."""
        layer = run.layer
        keep = run.request.output_axes(layer.ndim)
        affine = layer.affine.affine_matrix
        if len(keep) < layer.ndim:
            idx = [*keep, layer.ndim]
            affine = affine[np.ix_(idx, idx)]
        geometry = dict(
            scale=[layer.scale[i] for i in keep],
            translate=[layer.translate[i] for i in keep],
            affine=affine,
        )
        units = getattr(layer, 'units', None)
        if units is not None:
            geometry['units'] = [units[i] for i in keep]
        return geometry

    def _write_labels(self, run: _Run, answer):
        import napari.layers

        from .._widgets._labels import class_colormap, class_features

        result = answer.prediction
        image = run.layer
        name = f'{image.name} [{run.model_name}]'
        geometry = self._geometry(run)
        full_shape = run.request.output_shape(image.data.shape)
        existing = next((ly for ly in self.viewer.layers if ly.name == name), None)
        if not (
            isinstance(existing, napari.layers.Labels)
            and existing.data.shape == full_shape
        ):
            existing = None
        full = None
        if answer.region:  # a part: into the earlier labels, or empty ones
            full = (
                np.array(existing.data)
                if existing is not None
                else np.zeros(full_shape, dtype=result.labels.dtype)
            )
        data = answer.merge_into(full)
        meta = {
            'napari_vmunet': {
                'source': image.name,
                'checkpoint': run.request.checkpoint,
                'class_names': result.class_names,
            }
        }
        if run.measured is not None:
            return self.objects.add_result(
                f'{name} objects', run.measured, geometry, meta['napari_vmunet']
            )
        if existing is not None:
            existing.data = data
            existing.metadata.update(meta)
            return existing
        return self.viewer.add_labels(
            data,
            name=name,
            colormap=class_colormap(result.class_names, self._colors()),
            features=class_features(result.class_names),
            metadata=meta,
            opacity=0.6,
            **geometry,
        )

    def _colors(self) -> list | None:
        try:
            return self._predictor.metadata.get('classes', {}).get('colors')
        except AttributeError:
            return None

    def _probability_writers(self, run: _Run, answer) -> list:
        """One hidden image layer per class, ``<labels name> p(<class>)``:
        separate layers keep the viewer's dimensions those of the image.
        Returns one callable per layer (each adds or updates it)."""
        if answer.region:
            return []  # a single plane of probabilities would mislead
        result = answer.prediction
        image = run.layer
        model_name = run.model_name
        probs = result.probabilities
        if probs.ndim == result.labels.ndim:  # one class: foreground only
            planes = {result.class_names[-1]: probs}
        else:
            planes = dict(zip(result.class_names, probs, strict=True))
        geometry = self._geometry(run)

        def writer(cls: str, data: np.ndarray):
            def write() -> None:
                name = f'{image.name} [{model_name}] p({cls})'
                layers = self.viewer.layers
                existing = next((ly for ly in layers if ly.name == name), None)
                if existing is not None and existing.data.shape == data.shape:
                    existing.data = data
                    return
                self.viewer.add_image(
                    data,
                    name=name,
                    colormap='magma',
                    contrast_limits=(0, 1),
                    blending='additive',
                    visible=False,
                    **geometry,
                )

            return write

        return [writer(cls, data) for cls, data in planes.items()]
