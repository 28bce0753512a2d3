"""The fine-tune dock's collapsed *Recipe*: how the model is trained.

The preset follows the starting point (a new model learns at the scratch
preset's rate, a trained one is fine-tuned: ``training.default_preset``)
and fills epochs, learning rate and batch size; the user may change any of
them afterwards.
"""

from __future__ import annotations

from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QSpinBox,
    QWidget,
)
from superqt import QCollapsible

from ._controls import device_picker
from ._docking import compact
from ._training_request import init_kind


class RecipeSection(QCollapsible):
    """Preset, epochs, learning rate, batch, tile, validation share,
    decoder-only fine-tuning and the device."""

    def __init__(self, parent=None):
        super().__init__('Recipe', parent)
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
        self.preset.currentIndexChanged.connect(self.preset_changed)
        form.addRow('Preset', self.preset)
        self.epochs = QSpinBox(minimum=1, maximum=10000)
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
        self.addWidget(inner)

    def follow_start(self, choice: str) -> None:
        """Select the preset a run from ``choice`` (a *Start from* item)
        needs; a changed preset refills epochs, lr and batch, the same one
        keeps what the user typed."""
        from ..training import default_preset

        self.preset.setCurrentIndex(
            self.preset.findData(default_preset(init_kind(choice)))
        )

    def preset_changed(self, *_args) -> None:
        from ..training import PRESETS

        preset = PRESETS[self.preset.currentData()]
        self.epochs.setValue(preset['epochs'])
        self.lr.setValue(preset['lr'])
        self.batch_size.setValue(preset['batch_size'])
