"""npe2 writers: Labels layers to NIfTI/TIFF and Image layers to NIfTI.

The geometry comes from the source image when the layer carries it
(``metadata['napari_vmunet']``, set by our reader, sample data and docks), so
a saved segmentation reuses the scan's NIfTI header and affine and overlays
it in ITK-SNAP or 3D Slicer.  Otherwise it is rebuilt from the layer's own
transform (scale, translate, rotate, shear, affine).  napari's builtin writer
already saves Image layers as TIFF, so the image writer adds only NIfTI.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._layer_data import METADATA_KEY
from .io import ImageData, ImageIOError, write_image, write_labels

_UNITS = {'millimeter': 'mm', 'micrometer': 'µm', 'meter': 'm'}


def napari_write_labels(path: str, data: Any, attributes: dict) -> list[str]:
    """Save a Labels layer (smallest unsigned dtype); returns the written path."""
    labels = np.asarray(data)
    return [str(write_labels(path, labels, like=layer_geometry(labels, attributes)))]


def napari_write_image(path: str, data: Any, attributes: dict) -> list[str]:
    """Save an Image layer (e.g. a probability map) as NIfTI."""
    if attributes.get('rgb'):
        raise ImageIOError('RGB layers cannot be saved as NIfTI; save them as .tif')
    image = np.asarray(data)
    like = layer_geometry(image, attributes)
    axes = like.axes if tuple(like.data.shape) == image.shape else None
    return [str(write_image(path, image, like=like, axes=axes))]


def layer_geometry(data: np.ndarray, attributes: dict) -> ImageData:
    """The reference geometry for writing ``data``: the source image stored
    in the layer metadata if its shape still fits, else the layer transform."""
    stored = (attributes.get('metadata') or {}).get(METADATA_KEY)
    if stored:
        like = ImageData.from_metadata(stored)
        if data.shape in (like.spatial_shape, tuple(like.data.shape)):
            return like
    return _from_layer_transform(data, attributes)


def _from_layer_transform(data: np.ndarray, attributes: dict) -> ImageData:
    """napari maps data to world with ``affine @ (translate + rotate @ shear
    @ diag(scale) @ x)``; collapse that into one affine."""
    n = data.ndim
    if n not in (2, 3):
        raise ImageIOError(
            f'cannot save a {n}D layer {data.shape}: save a 2D or 3D layer '
            '(one time point or channel at a time)'
        )
    scale = np.asarray(attributes.get('scale', np.ones(n)), dtype=float)
    translate = np.asarray(attributes.get('translate', np.zeros(n)), dtype=float)
    rotate = np.asarray(attributes.get('rotate', np.eye(n)), dtype=float)
    shear = _shear_matrix(attributes.get('shear'), n)
    inner = np.eye(n + 1)
    inner[:n, :n] = rotate @ shear @ np.diag(scale)
    inner[:n, n] = translate
    outer = np.asarray(attributes.get('affine', np.eye(n + 1)), dtype=float)
    full = outer @ inner
    units = attributes.get('units') or ()
    unit = _UNITS.get(str(units[0])) if len(units) else None
    spacing = np.linalg.norm(full[:n, :n], axis=0)
    return ImageData(
        data=np.broadcast_to(np.zeros((), data.dtype), data.shape),
        axes='ZYX'[3 - n :],
        scale=tuple(spacing),
        translate=tuple(full[:n, n]),
        affine=full,
        units=unit,
    )


def _shear_matrix(shear: Any, n: int) -> np.ndarray:
    """napari stores shear as the upper-triangle coefficients, row by row."""
    if shear is None:
        return np.eye(n)
    shear = np.asarray(shear, dtype=float)
    if shear.ndim == 2:
        return shear
    out = np.eye(n)
    out[np.triu_indices(n, 1)] = shear
    return out
