"""The inference dock's collapsed *Options*: how the model is run.

Device, threshold, tiling, batch, channel map, normalisation, missing data
and probabilities; :meth:`OptionsSection.settings` turns them into the
settings fields of a
:class:`~napari_vmunet.inference.request.PredictionRequest`.
"""

from __future__ import annotations

from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QLineEdit,
    QSpinBox,
    QWidget,
)
from superqt import QCollapsible

from ..rules.tiling import DEFAULT_OVERLAP
from ._controls import device_picker
from ._docking import compact

#: the Normalisation choices: (shown text, the mode that overrides the
#: model's own, or None)
NORMALIZATION_CHOICES = (
    ("the model's own", None),
    ('percentiles 1-99.8 (robust)', 'percentile'),
    ('min-max of each slice', 'minmax'),
)


def parse_channel_map(text: str) -> tuple[int, ...] | None:
    """``'0, 1,1'`` -> ``(0, 1, 1)``; empty: None (the model's order)."""
    text = text.strip()
    if not text:
        return None
    return tuple(int(c) for c in text.replace(' ', '').split(','))


class OptionsSection(QCollapsible):
    """The run settings, collapsed: the defaults suit most images."""

    def __init__(self, parent=None):
        super().__init__('Options', parent)
        inner = QWidget()
        form = QFormLayout(inner)
        self.device = device_picker()
        form.addRow('Device', self.device)
        self.threshold = QDoubleSpinBox(minimum=0.01, maximum=0.99, singleStep=0.05)
        self.threshold.setValue(0.5)
        self.threshold.setToolTip('Probability threshold (one-class models)')
        form.addRow('Threshold', self.threshold)
        self.overlap = QDoubleSpinBox(minimum=0.0, maximum=0.9, singleStep=0.05)
        self.overlap.setValue(DEFAULT_OVERLAP)
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
        self.addWidget(inner)

    def settings(self) -> dict:
        """The request's run settings as the options say."""
        mode = self.normalization.currentData()
        return dict(
            device=self.device.currentData() or 'auto',
            tile_size=0
            if self.whole_image.isChecked()
            else self.tile_size.value() or None,
            batch_size=self.batch_size.value() or None,
            overlap=self.overlap.value(),
            threshold=self.threshold.value(),
            normalization={'mode': mode} if mode else None,
            nonfinite_background=self.nonfinite_background.isChecked(),
            channel_map=parse_channel_map(self.channel_map.text()),
            probabilities=self.probabilities.isChecked(),
        )
