"""The inference dock's *Model* group: which checkpoint, and what it is.

The list holds the built-in models and the checkpoints chosen in earlier
sessions (only files that could still be checkpoints).  A chosen file is
read in a worker thread and described in one line; a file that cannot be
used is said so in that line, forgotten for later sessions, and the dock
keeps Run disabled while it is selected.  Until the user chooses, the model
that suits the image layer (``inference.fit``) is selected, and none when no
listed model is known to suit it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path

from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import QComboBox, QFileDialog, QFormLayout, QGroupBox, QLabel

from ._controls import RecentFiles, browse_row, button
from ._docking import compact


def _could_be_checkpoint(path: str) -> bool:
    from ..checkpoint import CheckpointError, check_checkpoint_file

    try:
        check_checkpoint_file(path)
    except CheckpointError:
        return False
    return True


#: the checkpoints chosen in earlier sessions (an older version remembered
#: text and empty files too: those are not offered)
RECENT = RecentFiles('inference/recent_checkpoints', _could_be_checkpoint)


def remembered_checkpoints() -> list[str]:
    """The checkpoints chosen in earlier sessions, newest first: only files
    that are there and could be checkpoints."""
    return RECENT.paths()


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


def describe(ckpt) -> str:
    """The model line: classes, inputs, size, tile and normalisation."""
    meta = ckpt.meta
    arch = meta.architecture
    return (
        f'{arch.num_classes} class(es): {", ".join(meta.classes.names[1:]) or "?"}; '
        f'{arch.input_channels} input channels; dims {arch.dims}; '
        f'{ckpt.parameter_count / 1e6:.2f} M parameters; tile '
        f'{meta.input.tile}; normalisation {meta.input.normalization.mode}'
    )


class ModelSection(QGroupBox):
    """The checkpoint list with Browse…, the model line and the export button.

    Signals: ``usability_changed`` when Run may have to be enabled or
    disabled, ``described(checkpoint)`` when the selected file was read,
    ``preselected(text)`` with the status line for a model chosen by fit.
    """

    usability_changed = Signal()
    described = Signal(object)
    preselected = Signal(str)

    def __init__(self, current_layer: Callable[[], object], parent=None):
        super().__init__('Model', parent)
        #: the image layer the dock reads now (preselection follows it)
        self._current_layer = current_layer
        self._checkpoint_cache = None
        self._info_worker = None
        self._fit_worker = None
        #: checkpoint path -> why it cannot be used (Run stays disabled)
        self.unusable: dict[str, str] = {}
        # the user (or a published model) chose the checkpoint: no more
        # preselection by fit
        self.chosen = False
        form = QFormLayout(self)
        self.checkpoint = compact(QComboBox())
        self.checkpoint.setToolTip(
            'A VM-UNet checkpoint: ours (.safetensors), '
            "the original repo's best.pth / latest.pth, or a bioimage.io "
            'package (.zip)'
        )
        row, self.browse = browse_row(self.checkpoint, self._browse)
        form.addRow('Checkpoint', row)
        self.model_info = QLabel('')
        self.model_info.setWordWrap(True)
        form.addRow(self.model_info)
        self.export_button = button(
            'Export for bioimage.io…',
            tooltip='Write this model as a bioimage.io package (.zip) for '
            'bioimageio.core, ilastik, deepImageJ, QuPath and the zoo',
        )
        form.addRow(self.export_button)
        self._fill()
        self.checkpoint.currentIndexChanged.connect(self.selection_changed)
        self.checkpoint.activated.connect(self._user_chose)

    def _fill(self) -> None:
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

    def _user_chose(self, *_args) -> None:
        self.chosen = True

    def path(self) -> str | None:
        return self.checkpoint.currentData()

    def usable(self) -> bool:
        path = self.path()
        return bool(path) and path not in self.unusable

    def set_checkpoint(self, path: str | os.PathLike) -> None:
        """Select ``path`` (adding it to the list); see
        :meth:`InferenceWidget.set_checkpoint`."""
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
            self.mark_unusable(path, str(err))
        else:
            self.unusable.pop(path, None)
            if not path.startswith(str(Path(__file__).parents[1])):
                RECENT.remember(path)
        self.chosen = True
        self.checkpoint.setCurrentIndex(index)
        self.selection_changed()

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self,
            'Choose a VM-UNet checkpoint',
            str(Path(self.path() or Path.home()).parent),
            'Checkpoints (*.safetensors *.pth *.pt *.zip *.yaml);;All files (*)',
        )
        if path:
            self.set_checkpoint(path)

    def selection_changed(self, *_args) -> None:
        """Load the chosen checkpoint in a worker thread and describe it."""
        path = self.path()
        self.usability_changed.emit()
        if not path:
            self.model_info.setText('No checkpoint: choose one, or Browse….')
            return
        if path in self.unusable:
            self._show_unusable(path)
            return
        from napari.qt.threading import create_worker

        self.model_info.setText(f'Reading {Path(path).name}…')
        worker = create_worker(self.load, path, _ignore_errors=True)
        worker.returned.connect(self._show_model_info)
        worker.returned.connect(lambda _: _warm_prediction_imports())
        worker.errored.connect(lambda err: self._read_failed(path, err))
        self._info_worker = worker  # keep a reference while it runs
        worker.start()

    def _read_failed(self, path: str, err: BaseException) -> None:
        # the dock may have been closed while the file was read: it is
        # forgotten all the same, and there is nothing left to show
        with contextlib.suppress(RuntimeError):
            self.mark_unusable(path, str(err))

    def mark_unusable(self, path: str, reason: str) -> None:
        """Remember (for this session) that ``path`` cannot be used, forget it
        for later sessions, and disable Run while it is selected."""
        self.unusable[path] = reason
        RECENT.forget(path)
        if path == self.path():
            self._show_unusable(path)
        self.usability_changed.emit()

    def _show_unusable(self, path: str) -> None:
        self.model_info.setText(f'<b>Cannot use this file:</b> {self.unusable[path]}')

    def load(self, path: str):
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
        try:
            current = self.path()
        except RuntimeError:  # the dock was closed while the file was read
            return
        if str(ckpt.path) != current:
            return  # the user picked another file meanwhile
        self.unusable.pop(str(ckpt.path), None)
        self.usability_changed.emit()
        self.model_info.setText(describe(ckpt))
        self.described.emit(ckpt)

    # ----------------------------------------------------- preselection
    def preselect(self, layer) -> None:
        """Select the listed model that suits ``layer`` (``inference.fit``);
        select none when no model is known to suit it, so that a wrong
        guess is never made for the user.  Runs off the GUI thread: each
        checkpoint is read and a few planes of the image are compared."""
        if self.chosen or layer is None or self.checkpoint.count() == 0:
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
            current = self._current_layer()
        except RuntimeError:  # the dock was closed while the check ran
            return
        if self.chosen or layer is not current:
            return  # the user chose meanwhile, or moved to another image
        index = best_fit(fits)
        if index is None:
            self.checkpoint.setCurrentIndex(-1)
            self.model_info.setText(
                f'<b>No listed model is known to suit “{layer.name}”.</b> '
                'Choose one (Checkpoint or Browse…), or fine-tune a new model '
                'on a few annotated slices (Fine-tune dock).'
            )
            self.usability_changed.emit()
            return
        self.checkpoint.setCurrentIndex(index)
        self.preselected.emit(
            f'Chose {self.checkpoint.itemText(index)}: it was trained on images '
            f'like “{layer.name}”.'
        )


_warm_worker = None


def _warm_prediction_imports() -> None:
    """Once per session, after the first model is read: the imports of a
    first prediction (:func:`~napari_vmunet.rules.tiling.load_window_helpers`)
    in a worker, so the first Run does not pay for them."""
    global _warm_worker
    if _warm_worker is not None:
        return
    from napari.qt.threading import create_worker

    from ..rules.tiling import load_window_helpers

    _warm_worker = create_worker(load_window_helpers, _ignore_errors=True)
    _warm_worker.start()
