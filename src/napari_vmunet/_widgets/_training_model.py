"""The fine-tune dock's *Model* group: where training starts, which classes.

*Start from* lists the inference dock's model, the built-in models, two
models from scratch and the ImageNet VMamba-S weights (the original's
initialisation, chosen as a file); Browse… adds any checkpoint.  The
classes are the dock's (count and names) or, left empty, the starting
model's; they also name the values of sparse scribbles.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QLineEdit,
    QSpinBox,
)

from ._controls import browse_row
from ._docking import compact
from ._training_request import (
    FROM_INFERENCE,
    SCRATCH,
    SCRATCH_SMALL_CHOICE,
    VMAMBA_UNCHOSEN,
    parse_class_names,
    start_choice,
)

if TYPE_CHECKING:
    import napari


class TrainModelSection(QGroupBox):
    """*Start from* with Browse…, *Classes* and *Class names*."""

    def __init__(self, viewer: napari.Viewer, parent=None):
        super().__init__('Model', parent)
        self.viewer = viewer
        self._model_class_cache: dict[str, tuple] = {}
        form = QFormLayout(self)
        self.start_from = compact(QComboBox())
        self.start_from.setToolTip('The model training starts from')
        row, self.browse_init = browse_row(self.start_from, self._browse_init)
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
        self._fill_start_from()

    def _fill_start_from(self) -> None:
        from ..zoo import builtin_checkpoints

        self.start_from.clear()
        self.start_from.addItem("the inference dock's model", FROM_INFERENCE)
        for name, path in builtin_checkpoints().items():
            self.start_from.addItem(f'built-in: {name}', str(path))
        self.start_from.addItem(
            'scratch: small VM-UNet (2 M parameters)', SCRATCH_SMALL_CHOICE
        )
        self.start_from.addItem('scratch: VM-UNet (27 M parameters)', SCRATCH)
        self.start_from.addItem(
            'ImageNet VMamba-S weights (choose file)…', VMAMBA_UNCHOSEN
        )
        self.start_from.activated.connect(self._maybe_browse_vmamba)

    def _maybe_browse_vmamba(self, index: int) -> None:
        """The original's initialisation: VMamba-S v0 ImageNet weights
        (``vmamba_small_e238_ema.pth``) into encoder and decoder."""
        if self.start_from.itemData(index) != VMAMBA_UNCHOSEN:
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

    def start(self) -> str:
        """The *Start from* item's data (:func:`start_choice` reads it)."""
        return self.start_from.currentData()

    def inference_checkpoint(self) -> str | None:
        """The model selected in the inference dock, if one is open."""
        from .inference import InferenceWidget

        for widget in self.viewer.window.dock_widgets.values():
            if isinstance(widget, InferenceWidget):
                return widget.checkpoint_path()
        return None

    def init_choice(self) -> tuple[str | None, dict]:
        """``(init, extra config)`` for the selected starting model."""
        choice = self.start()
        inference = self.inference_checkpoint() if choice == FROM_INFERENCE else None
        return start_choice(choice, inference)

    def names(self) -> list[str]:
        return parse_class_names(self.class_names.text())

    def paint_values(self) -> tuple[list[tuple[int, str]], list | None]:
        """``[(value, class name)]`` of sparse painting, and class colours:
        from the dock's classes and names, else the starting model's."""
        from ..rules.annotation import paint_values

        names = self.names()
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
            path, _ = self.init_choice()
        except ValueError:
            return [], None
        if not path or str(path).startswith('vmamba:'):
            return [], None
        path = str(path)
        if path not in self._model_class_cache:
            from ..checkpoint import CheckpointError, load_checkpoint

            try:
                classes = load_checkpoint(path).meta.classes
                found = list(classes.names), list(classes.colors)
            except (CheckpointError, OSError):
                found = [], None
            self._model_class_cache[path] = found
        return self._model_class_cache[path]
