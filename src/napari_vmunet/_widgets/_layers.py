"""A layer chooser that follows the viewer's layer list."""

from __future__ import annotations

from typing import TYPE_CHECKING

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QComboBox

from ._docking import compact

if TYPE_CHECKING:
    import napari


class LayerComboBox(QComboBox):
    """Lists the viewer's layers of one type by name, kept in sync with
    insertions, removals, renames and reordering."""

    def __init__(self, viewer: napari.Viewer, layer_type: type, parent=None):
        super().__init__(parent)
        self.viewer = viewer
        self.layer_type = layer_type
        compact(self)  # a long layer name must not widen the dock
        events = viewer.layers.events
        for ev in (events.inserted, events.removed, events.moved, events.reordered):
            ev.connect(self.refresh)
        events.inserted.connect(self._watch_name)
        for layer in viewer.layers:
            layer.events.name.connect(self.refresh)
        self.refresh()

    def _watch_name(self, event) -> None:
        event.value.events.name.connect(self.refresh)

    def layers(self) -> list:
        return [ly for ly in self.viewer.layers if isinstance(ly, self.layer_type)]

    def refresh(self, *_args) -> None:
        current = self.currentText()
        names = [ly.name for ly in self.layers()]
        if names == [self.itemText(i) for i in range(self.count())]:
            return
        self.blockSignals(True)
        self.clear()
        self.addItems(names)
        if current in names:
            self.setCurrentText(current)
        for i, name in enumerate(names):
            self.setItemData(i, name, Qt.ItemDataRole.ToolTipRole)
        self.blockSignals(False)
        self.currentIndexChanged.emit(self.currentIndex())

    def value(self):
        """The selected layer, or None."""
        name = self.currentText()
        for layer in self.layers():
            if layer.name == name:
                return layer
        return None

    def set_value(self, layer) -> None:
        self.refresh()
        self.setCurrentText(layer.name)

    def closeEvent(self, event) -> None:  # pragma: no cover - Qt teardown
        self.disconnect_viewer()
        super().closeEvent(event)

    def disconnect_viewer(self) -> None:
        events = self.viewer.layers.events
        for ev in (events.inserted, events.removed, events.moved, events.reordered):
            ev.disconnect(self.refresh)
        events.inserted.disconnect(self._watch_name)
        for layer in self.viewer.layers:
            layer.events.name.disconnect(self.refresh)
