"""'Where to annotate next': the most uncertain slices, one click away.

Shared by the inference dock (after a prediction of a volume or stack) and
the fine-tune dock (after each training).  The ranking itself is computed
off the GUI thread (:mod:`napari_vmunet.inference.uncertainty`, part of the
prediction job); this panel only shows it, re-ranks when the user picks
another annotations layer (a cheap pass over the labels), and moves
napari's dims to a suggested slice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
)

from ._docking import compact

if TYPE_CHECKING:
    import napari

#: suggestions shown (and buttons offered)
SHOWN = 3
#: the first words of the suggestion.  benchmarks/nextslice.py decided
#: them: on the brain volume the most uncertain slices taught a model no
#: better than evenly spaced ones (Dice 0.808 vs 0.831 at 8 slices), so the
#: panel names them for what they are and recommends spreading the
#: annotations, instead of promising that they are the best to correct
LEAD = 'Least certain'
HINT = (
    'Evenly spaced slices taught the model as well as the least certain '
    'ones in our benchmark: spread your annotations through the volume, and '
    'use these to find where the model goes wrong.'
)
NONE = 'none'


class NextSlicePanel(QGroupBox):
    """The slices to annotate next, with a *Go to* button for each."""

    def __init__(self, viewer: napari.Viewer, *, choose_annotations: bool = True):
        super().__init__('Where to annotate next')
        self.viewer = viewer
        self.ranking = None  # the SliceRanking shown
        self._scores: np.ndarray | None = None
        self._layer = None  # the layer whose slices are ranked
        self._axis: int | None = None  # its data axis the slices lie along
        self._shape: tuple[int, ...] | None = None  # the labels' shape
        self._spatial_axis: int | None = None  # the slice axis in that shape
        self._excluded: tuple[int, ...] = ()  # slices excluded besides a layer
        self._watched = None  # the annotations layer whose edits re-rank
        form = QFormLayout(self)
        self.annotations = compact(QComboBox())
        self.annotations.setToolTip(
            'The labels layer you annotate: its slices with any label are '
            'left out of the suggestions'
        )
        self.annotations.currentIndexChanged.connect(self._rerank)
        if choose_annotations:
            form.addRow('Annotations', self.annotations)
        self.text = QLabel('')
        self.text.setWordWrap(True)
        form.addRow(self.text)
        self.hint = QLabel(HINT)
        self.hint.setWordWrap(True)
        self.hint.setStyleSheet('color: gray; font-size: 10px')
        form.addRow(self.hint)
        row = QHBoxLayout()
        self.buttons: list[QPushButton] = []
        for i in range(SHOWN):
            button = QPushButton('')
            button.clicked.connect(lambda _=False, i=i: self._go(i))
            button.setVisible(False)
            row.addWidget(button)
            self.buttons.append(button)
        form.addRow(row)
        self.setVisible(False)
        events = viewer.layers.events
        events.inserted.connect(self._refresh_layers)
        events.removed.connect(self._refresh_layers)

    # -------------------------------------------------------------- public
    def say(self, text: str) -> None:
        """A line instead of suggestions (e.g. while the ranking is made)."""
        self.setVisible(True)
        self.text.setText(text)
        for button in self.buttons:
            button.setVisible(False)

    def clear(self) -> None:
        self.ranking = None
        self._scores = None
        self.setVisible(False)

    def show_scores(
        self,
        scores: np.ndarray,
        layer: Any,
        axis: int,
        shape: tuple[int, ...],
        spatial_axis: int,
        *,
        annotations: Any = None,
        excluded: tuple[int, ...] = (),
    ) -> None:
        """Show the ranking of ``scores`` (one per slice of ``layer`` along
        its data ``axis``); ``shape``/``spatial_axis``: the labels' shape
        and slice axis, to tell which labels layers can be annotations.
        ``annotations``: the layer preselected; ``excluded``: slices left
        out whatever the layer (e.g. declared background-only)."""
        self._scores = np.asarray(scores)
        self._layer, self._axis = layer, axis
        self._shape, self._spatial_axis = tuple(shape), spatial_axis
        self._excluded = tuple(excluded)
        self._refresh_layers(select=annotations)
        self._rerank()

    def go_to(self, index: int) -> None:
        """Move napari's dims to slice ``index`` of the ranked layer."""
        layer, axis = self._layer, self._axis
        if layer is None or axis is None:
            return
        dims = self.viewer.dims
        offset = dims.ndim - layer.ndim
        point = np.asarray(layer.world_to_data(dims.point[offset:]), dtype=float)
        point[axis] = index
        world = layer.data_to_world(point)
        dims.set_point(offset + axis, world[axis])

    # ------------------------------------------------------------ internal
    def _go(self, i: int) -> None:
        if self.ranking is not None and i < len(self.ranking.order):
            self.go_to(int(self.ranking.order[i]))

    def _candidates(self) -> list:
        import napari.layers

        return [
            ly
            for ly in self.viewer.layers
            if isinstance(ly, napari.layers.Labels)
            and self._shape is not None
            and tuple(ly.data.shape) == self._shape
        ]

    def default_annotations(self, shape: tuple[int, ...]):
        """The labels layer of ``shape`` the user most likely annotates: the
        selected one, else the first that is not a prediction of ours."""
        self._shape = tuple(shape)
        layer = self.annotations_layer()
        if layer is not None:
            return layer
        for ly in self._candidates():
            if 'checkpoint' not in ly.metadata.get('napari_vmunet', {}):
                return ly
        return None

    def _refresh_layers(self, *_args, select: Any = None) -> None:
        current = select.name if select is not None else self.annotations.currentText()
        names = [ly.name for ly in self._candidates()]
        self.annotations.blockSignals(True)
        self.annotations.clear()
        self.annotations.addItems([NONE, *names])
        self.annotations.setCurrentText(current if current in names else NONE)
        self.annotations.blockSignals(False)
        self._watch(self.annotations_layer())

    def _watch(self, layer) -> None:
        """Re-rank when the annotations layer is painted or replaced."""
        if layer is self._watched:
            return
        for ly, connect in ((self._watched, False), (layer, True)):
            if ly is None:
                continue
            for name in ('paint', 'data'):
                event = getattr(ly.events, name, None)
                if event is not None:
                    (event.connect if connect else event.disconnect)(self._rerank)
        self._watched = layer

    def annotations_layer(self):
        name = self.annotations.currentText()
        return next((ly for ly in self._candidates() if ly.name == name), None)

    def _rerank(self, *_args) -> None:
        from ..inference.uncertainty import annotated_slices, rank_slices

        if self._scores is None:
            return
        excluded = set(self._excluded)
        layer = self.annotations_layer()
        self._watch(layer)
        if layer is not None:
            excluded |= set(annotated_slices(layer.data, self._spatial_axis).tolist())
        self.ranking = rank_slices(self._scores, sorted(excluded))
        top = self.ranking.top(SHOWN)
        text = self.ranking.describe(SHOWN)
        if top:
            text = text.replace('Next to correct', LEAD, 1)
        self.say(text)
        for button, (z, _) in zip(self.buttons, top, strict=False):
            button.setText(f'Go to {z}')
            button.setToolTip(f'Show slice {z} (move the slider there)')
            button.setVisible(True)

    def closeEvent(self, event) -> None:  # pragma: no cover - Qt teardown
        self.disconnect_viewer()
        super().closeEvent(event)

    def disconnect_viewer(self) -> None:
        self._watch(None)
        events = self.viewer.layers.events
        events.inserted.disconnect(self._refresh_layers)
        events.removed.disconnect(self._refresh_layers)
