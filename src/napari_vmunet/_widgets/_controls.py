"""Controls both docks build the same way."""

from __future__ import annotations

from qtpy.QtWidgets import QComboBox


def device_picker() -> QComboBox:
    """*auto* (CUDA, then MPS, then the CPU) and every device this machine
    has, each item's data the device string the core takes."""
    from ..devices import available_devices

    combo = QComboBox()
    combo.setToolTip('Where the model runs; auto: CUDA, then Apple MPS, then the CPU')
    combo.addItem('auto', 'auto')
    for name in available_devices():
        combo.addItem(name, name)
    return combo
