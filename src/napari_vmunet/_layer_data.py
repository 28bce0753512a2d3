"""napari layer arguments for an image: the adapter between
:mod:`napari_vmunet.io` and napari's layers (the reader and the docks use it).

Nothing here imports napari; it only builds the keyword dicts napari takes.
The geometry travels in ``layer.metadata['napari_vmunet']``
(:meth:`ImageData.to_metadata`) so that the writer can save labels that
overlay the source scan in other tools.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .io import ImageData

#: the key of the geometry in a layer's ``metadata``
METADATA_KEY = 'napari_vmunet'


def layer_kwargs(image: ImageData, *, split_channels: bool = True) -> dict:
    """Keyword arguments for ``viewer.add_image`` / a layer data tuple.

    Axis-aligned images get ``scale`` + ``translate``; oblique or flipped
    ones get ``scale`` (so napari's slider steps are one voxel) and an
    ``affine`` carrying the rest.  Channels become separate layers when
    ``split_channels`` (napari ``channel_axis``), else an extra slider.
    """
    n = len(image.scale)
    full = image.world_affine()
    linear = full[:n, :n]
    kwargs: dict[str, Any] = {}
    if np.allclose(linear, np.diag(np.diag(linear))) and np.all(np.diag(linear) > 0):
        kwargs['scale'] = tuple(float(s) for s in np.diag(linear))
        kwargs['translate'] = tuple(float(t) for t in full[:n, n])
    else:
        kwargs['scale'] = image.scale
        kwargs['affine'] = full @ np.diag([*(1.0 / np.array(image.scale)), 1.0])
    if image.units:
        kwargs['units'] = (image.units,) * n
    if image.rgb:
        kwargs['rgb'] = True
    elif image.channel_axis is not None:
        if split_channels:
            kwargs['channel_axis'] = image.channel_axis
        else:
            kwargs = _prepend_axis(kwargs, image.channel_axis)
    kwargs['metadata'] = {METADATA_KEY: image.to_metadata()}
    return kwargs


def _prepend_axis(kwargs: dict, index: int) -> dict:
    """Insert a unit-scaled, non-spatial axis (a 4D NIfTI's 4th axis shown
    as a slider) into napari layer geometry."""
    out = dict(kwargs)
    out['scale'] = _insert(kwargs['scale'], index, 1.0)
    if 'translate' in kwargs:
        out['translate'] = _insert(kwargs['translate'], index, 0.0)
    if 'affine' in kwargs:
        a = kwargs['affine']
        n = a.shape[0]
        big = np.eye(n + 1)
        keep = [i for i in range(n + 1) if i != index]
        big[np.ix_(keep, keep)] = a
        out['affine'] = big
    if 'units' in kwargs:
        out['units'] = _insert(kwargs['units'], index, 'pixel')
    return out


def _insert(values: tuple, index: int, value: Any) -> tuple:
    values = list(values)
    values.insert(index, value)
    return tuple(values)
