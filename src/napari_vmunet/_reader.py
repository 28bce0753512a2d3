"""npe2 reader: NIfTI volumes (and OME-TIFF) at their physical scale.

napari's builtin reader claims ``*.nii`` but cannot decode it, and reads TIFF
through imageio without pixel sizes, so an anisotropic OME-TIFF z-stack looks
squashed.  We claim NIfTI and OME-TIFF only: claiming every ``*.tif`` would
make napari ask which plugin to use for each TIFF and make a plain
``viewer.open('x.tif')`` raise in scripts.  The CLI and the docks read plain
and ImageJ TIFFs with their pixel sizes through :func:`napari_vmunet.io.read_image`.

The geometry (including the NIfTI header) goes into the layer's
``metadata['napari_vmunet']`` so that ``_writer`` can save labels that
overlay the source scan in other tools.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ._layer_data import layer_kwargs
from .io import ImageData, read_image

LayerData = tuple[Any, dict, str]
_PATTERNS = ('.nii', '.nii.gz', '.ome.tif', '.ome.tiff')


def napari_get_reader(path: str | list[str]) -> Callable | None:
    """Return a reader for NIfTI / OME-TIFF paths, else None (never raises)."""
    paths = [path] if isinstance(path, str | Path) else path
    if not isinstance(paths, list | tuple) or not paths:
        return None
    if all(str(p).lower().endswith(_PATTERNS) for p in paths):
        return read_layers
    return None


def read_layers(path: str | list[str]) -> list[LayerData]:
    """Read one or more files into napari layer data tuples."""
    paths = [path] if isinstance(path, str | Path) else list(path)
    layers: list[LayerData] = []
    for p in paths:
        layers.extend(image_layer_data(read_image(p, allow_channels=True)))
    return layers


def image_layer_data(image: ImageData, name: str | None = None) -> list[LayerData]:
    """One image layer tuple; a 4D NIfTI's 4th axis becomes a slider (it may
    be time), a TIFF's channels become one layer each."""
    split = image.meta.get('format') != 'nifti'
    kwargs = layer_kwargs(image, split_channels=split)
    kwargs['name'] = name or _layer_name(image.source)
    data = image.data
    if image.rgb and image.channel_axis != data.ndim - 1:
        # an RGB z-stack is read as CZYX; napari shows RGB with colour last
        data = np.moveaxis(data, image.channel_axis, -1)
    return [(data, kwargs, 'image')]


def _layer_name(source: Path | None) -> str:
    if source is None:
        return 'image'
    name = source.name
    for ext in ('.nii.gz', '.nii', '.ome.tiff', '.ome.tif', '.tiff', '.tif'):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return source.stem
