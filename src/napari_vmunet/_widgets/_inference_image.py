"""The inference dock's *Image* group: which layer, and how its axes read.

It offers the axes a layer has (a channel axis for a multichannel image, a
slice axis for a volume, time points for a 4-D stack), preselects a
channel axis that looks right for the model unless the user chose one
(``rules.channels``), and turns its choices and the plane the viewer
shows into the axis fields of a
:class:`~napari_vmunet.inference.request.PredictionRequest`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qtpy.QtWidgets import (
    QButtonGroup,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QRadioButton,
)

from ._docking import compact
from ._layers import LayerComboBox

if TYPE_CHECKING:
    import napari


class ImageSection(QGroupBox):
    """Layer, channel axis, slice axis, whole volume or current slice, and
    the time points of a 4-D stack."""

    def __init__(self, viewer: napari.Viewer, parent=None):
        super().__init__('Image', parent)
        import napari.layers

        self.viewer = viewer
        self.channel_chosen = False  # the user picked a channel axis
        form = QFormLayout(self)
        self.image_layer = LayerComboBox(viewer, napari.layers.Image)
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
        self.scope_all = QRadioButton('whole image')
        self.scope_slice = QRadioButton('current slice')
        self.scope_all.setToolTip('Every slice of a volume, every pixel of a 2D image')
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
        self.channel_axis.currentIndexChanged.connect(self.refresh_slice_axes)
        self.channel_axis.activated.connect(self._channel_axis_chosen)

    def layer(self):
        return self.image_layer.value()

    def _channel_axis_chosen(self, *_args) -> None:
        self.channel_chosen = True

    def layer_changed(self, model_channels: int | None) -> str | None:
        """Offer the new layer's axes; returns what the channel guess says
        (:meth:`guess_channels`)."""
        layer = self.layer()
        self.channel_axis.clear()
        self.slice_axis.clear()
        if layer is None:
            return None
        ndim = layer.data.ndim
        self.channel_axis.addItem('RGB' if layer.rgb else 'none', None)
        if not layer.rgb:
            for axis in range(ndim):
                self.channel_axis.addItem(
                    f'{axis} (size {layer.data.shape[axis]})', axis
                )
        self.channel_axis.setEnabled(not layer.rgb and ndim >= 3)
        self.channel_chosen = False  # a new layer: guess again
        reason = self.guess_channels(model_channels)
        self.refresh_slice_axes()
        return reason

    def guess_channels(self, model_channels: int | None) -> str | None:
        """Preselect the channel axis of a layer that looks multichannel
        (:func:`~napari_vmunet.rules.channels.guess_channel_axis`), unless
        the user chose one; returns the reason to show, or None."""
        from ..rules.channels import guess_channel_axis

        layer = self.layer()
        if layer is None or self.channel_chosen:
            return None
        guess = guess_channel_axis(
            layer.data.shape, model_channels, rgb=bool(layer.rgb)
        )
        if guess is None:
            return None
        index = self.channel_axis.findData(guess.axis)
        if index >= 0 and index != self.channel_axis.currentIndex():
            self.channel_axis.setCurrentIndex(index)
        return guess.reason if index >= 0 else None

    def refresh_slice_axes(self, *_args) -> None:
        """Offer the spatial axes (data axes without the channel axis) of a
        volume as slice axes."""
        self.slice_axis.clear()
        layer = self.layer()
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

    def request_axes(self) -> tuple[Any, dict]:
        """The data to predict (the full resolution of a multiscale layer)
        and the request's axis fields: channel and slice axes, the plane or
        time point the viewer shows when only that is asked for."""
        layer = self.layer()
        channel_axis = self.channel_axis.currentData()
        slice_axis = self.slice_axis.currentData()  # a data axis, or None
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
        return data, dict(
            rgb=bool(layer.rgb),
            channel_axis=channel_axis,
            slice_axis=slice_axis,
            slice_index=slice_index,
            time_axis=time_axis,
            time_index=time_index,
        )

    def _current_index(self, layer, axis: int) -> int:
        """The data index along ``axis`` of the plane the viewer shows."""
        point = layer.world_to_data(self.viewer.dims.point[-layer.ndim :])
        index = int(round(point[axis]))
        return min(max(index, 0), layer.data.shape[axis] - 1)
