"""Image layout: which axes of a user's array are channels, slices, space.

One home for the rule, shared by the Predictor, training and the fit
check: a 2-D image (grey, RGB(A) last, or channels on a named axis) or a
3-D volume predicted slice by slice along one spatial axis.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class ImageLayout:
    """Where the channel and slice axes of an input array are."""

    shape: tuple[int, ...]
    channel_axis: int | None
    slice_axis: int | None
    rgb: bool

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(s for i, s in enumerate(self.shape) if i != self.channel_axis)

    @property
    def n_slices(self) -> int:
        return 1 if self.slice_axis is None else self.shape[self.slice_axis]

    def plane(self, image: Any, index: int) -> np.ndarray:
        """Slice ``index`` as a channels-first ``(C, H, W)`` float array."""
        key: list[Any] = [slice(None)] * len(self.shape)
        if self.slice_axis is not None:
            key[self.slice_axis] = index
        plane = np.asarray(image[tuple(key)])
        if self.channel_axis is None:
            return plane[None]
        c = self.channel_axis
        if self.slice_axis is not None and self.slice_axis < c:
            c -= 1
        return np.moveaxis(plane, c, 0)


def image_layout(
    shape: Sequence[int],
    channel_axis: int | None,
    slice_axis: int | None,
    rgb: bool | None,
) -> ImageLayout:
    """Where the channel and slice axes of an array of ``shape`` are, as
    the Predictor and training read images: RGB(A) last when ``rgb`` (or
    guessed for a 3-D array ending in 3 or 4 without a slice axis), the
    slice axis the first spatial axis unless given.  ``ValueError`` says
    how to fix an array that is not a 2-D image or a 3-D volume."""
    shape = tuple(int(s) for s in shape)
    ndim = len(shape)
    if ndim < 2:
        raise ValueError(f'expected a 2-D image or a 3-D volume, got shape {shape}')
    if rgb is None:
        rgb = channel_axis is None and ndim == 3 and shape[-1] in (3, 4)
        rgb = rgb and slice_axis is None
    if rgb and channel_axis is None:  # napari's RGB layers: colour last
        channel_axis = ndim - 1
    if channel_axis is not None:
        channel_axis = _axis(channel_axis, ndim, 'channel_axis')
    spatial = [i for i in range(ndim) if i != channel_axis]
    if len(spatial) == 2:
        if slice_axis is not None and _axis(slice_axis, ndim, 'slice_axis') in spatial:
            raise ValueError('a 2-D image has no slice axis; leave slice_axis unset')
        slice_axis = None
    elif len(spatial) == 3:
        slice_axis = (
            spatial[0] if slice_axis is None else _axis(slice_axis, ndim, 'slice_axis')
        )
        if slice_axis not in spatial:
            raise ValueError('slice_axis cannot be the channel axis')
    else:
        raise ValueError(
            f'cannot predict a {len(spatial)}-D image of shape {shape}: pick one '
            'time point / set channel_axis so that 2 or 3 spatial axes remain'
        )
    if any(s == 0 for s in shape):
        raise ValueError(f'the image is empty (shape {shape})')
    return ImageLayout(shape, channel_axis, slice_axis, bool(rgb))


def _axis(axis: int, ndim: int, name: str) -> int:
    if not -ndim <= axis < ndim:
        raise ValueError(f'{name}={axis} is out of range for a {ndim}-D image')
    return axis % ndim


def slice_position(layout: ImageLayout) -> int | None:
    """Position of the slice axis among the spatial axes."""
    if layout.slice_axis is None:
        return None
    return [i for i in range(len(layout.shape)) if i != layout.channel_axis].index(
        layout.slice_axis
    )
