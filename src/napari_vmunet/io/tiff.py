"""TIFF: OME and ImageJ pixel sizes (converted to µm or mm) and axes."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np

from .._memory import check_fits_in_memory
from ._image import ImageData, ImageIOError

_UNITS: dict[str, tuple[str, float]] = {
    'nm': ('µm', 1e-3),
    'nanometer': ('µm', 1e-3),
    'um': ('µm', 1.0),
    'µm': ('µm', 1.0),  # micro sign U+00B5
    'μm': ('µm', 1.0),  # Greek mu U+03BC
    '\\u00b5m': ('µm', 1.0),  # ImageJ's escaped form
    'micron': ('µm', 1.0),
    'microns': ('µm', 1.0),
    'micrometer': ('µm', 1.0),
    'mm': ('mm', 1.0),
    'millimeter': ('mm', 1.0),
    'cm': ('mm', 10.0),
    'm': ('mm', 1e3),
}

_IMAGEJ_DTYPES = (np.uint8, np.uint16, np.float32)


def read_tiff(path: Path) -> ImageData:
    import tifffile

    with tifffile.TiffFile(str(path)) as tif:
        series = tif.series[0]
        check_fits_in_memory(
            int(np.prod(series.shape, dtype=object)) * np.dtype(series.dtype).itemsize,
            f'{path.name} declares {" x ".join(map(str, series.shape))} '
            f'{series.dtype} pixels',
        )
        data = series.asarray()
        axes = series.axes
        rgb = series.keyframe.photometric == tifffile.PHOTOMETRIC.RGB
        sizes, units, flavour = _tiff_pixel_sizes(tif, series)
    data, axes, rgb = _normalise_axes(data, axes, rgb, path)
    spatial = axes.replace('C', '')
    sizes.setdefault('Y', sizes.get('X', 1.0))
    scale = tuple(sizes.get(a, 1.0) for a in spatial) if units else ()
    meta = {'format': 'tiff', 'tiff_flavour': flavour, 'original_axes': series.axes}
    return ImageData(
        data=data,
        axes=axes,
        scale=scale,
        rgb=rgb,
        source=path,
        meta=meta,
        units=units,
    )


def _tiff_pixel_sizes(tif: Any, series: Any) -> tuple[dict, str | None, str]:
    """Pixel sizes per axis letter from OME or ImageJ metadata, in µm (or in
    mm when the file says mm or larger, e.g. exported medical slices)."""
    if tif.is_ome and tif.ome_metadata:
        pixels = ET.fromstring(tif.ome_metadata).find('.//{*}Pixels')
        found = {}
        for axis in 'XYZ' if pixels is not None else '':
            value = pixels.get(f'PhysicalSize{axis}')
            unit = pixels.get(f'PhysicalSize{axis}Unit', 'µm').lower()
            if value is not None and unit in _UNITS:
                found[axis] = (float(value), unit)
        return (*_to_common_unit(found), 'ome')
    if tif.is_imagej:
        md = tif.imagej_metadata or {}
        unit = str(md.get('unit', '')).lower()
        if unit not in _UNITS:
            return {}, None, 'imagej'
        found = {}
        tags = series.keyframe.tags
        for axis, tag in (('X', 'XResolution'), ('Y', 'YResolution')):
            num, den = tags[tag].value if tag in tags else (0, 1)
            if num:
                found[axis] = (den / num, unit)
        if 'spacing' in md:
            found['Z'] = (float(md['spacing']), unit)
        return (*_to_common_unit(found), 'imagej')
    return {}, None, 'plain'


def _to_common_unit(found: dict[str, tuple[float, str]]) -> tuple[dict, str | None]:
    """Express every axis in the canonical unit of the X (or first) axis."""
    if not found:
        return {}, None
    target = _UNITS[found.get('X', next(iter(found.values())))[1]][0]
    microns = {'µm': 1.0, 'mm': 1e3}
    sizes = {}
    for axis, (value, unit) in found.items():
        canonical, factor = _UNITS[unit]
        sizes[axis] = value * factor * microns[canonical] / microns[target]
    return sizes, target


def _normalise_axes(
    data: np.ndarray, axes: str, rgb: bool, path: Path
) -> tuple[np.ndarray, str, bool]:
    """Map tifffile axis letters onto ``YX``/``YXC``/``ZYX``/``CZYX``.

    Singleton axes are dropped; samples (``S``) are channels; one stack axis
    (``Z``, or ``I``/``Q``/``T`` when there is no ``Z``) becomes ``Z``.
    """
    keep = [
        i
        for i, (a, s) in enumerate(zip(axes, data.shape, strict=True))
        if s > 1 or a in 'YX'
    ]
    data = data.reshape([data.shape[i] for i in keep])
    axes = ''.join('C' if axes[i] == 'S' else axes[i] for i in keep)
    if 'Z' not in axes:
        stacks = [a for a in axes if a not in 'CYX']
        if len(stacks) == 1:
            axes = axes.replace(stacks[0], 'Z')
    if (
        set(axes) - set('CZYX')
        or len(set(axes)) != len(axes)
        or not {'Y', 'X'} <= set(axes)
    ):
        raise ImageIOError(
            f'{path.name}: cannot map axes {axes!r} (shape {data.shape}) onto '
            'YX, YXC, ZYX or CZYX; save one time point / one stack per file'
        )
    rgb = rgb and 'C' in axes and data.shape[axes.index('C')] in (3, 4)
    target = ('C' if 'C' in axes else '') + 'ZYX'
    if 'Z' not in axes:
        target = 'YX' + ('C' if 'C' in axes else '')
    target = ''.join(a for a in target if a in axes)
    data = np.ascontiguousarray(data.transpose([axes.index(a) for a in target]))
    return data, target, rgb


def write_tiff(
    path: Path, data: np.ndarray, axes: str, like: ImageData, ome: bool
) -> None:
    import tifffile

    spacing = dict(zip(like.spatial_axes, like.scale, strict=True))
    unit = like.units
    kwargs: dict[str, Any] = {'compression': 'zlib', 'compressionargs': {'level': 6}}
    rgb = (
        axes == 'YXC'
        and data.shape[-1] in (3, 4)
        and (like.rgb or data.dtype == np.uint8)
    )
    if not ome and data.dtype in _IMAGEJ_DTYPES and (not rgb or data.dtype == np.uint8):
        # ImageJ wants TZCYXS order; our C is first for 3D and last for 2D
        order = ''.join(a for a in 'ZCYX' if a in axes)
        if rgb:
            order, kwargs['photometric'] = 'YXC', 'rgb'
        data = data.transpose([axes.index(a) for a in order])
        metadata: dict[str, Any] = {'axes': order.replace('C', 'S' if rgb else 'C')}
        if unit:
            metadata['unit'] = 'um' if unit == 'µm' else unit
            kwargs['resolution'] = (1.0 / spacing['X'], 1.0 / spacing['Y'])
            if 'Z' in spacing:
                metadata['spacing'] = spacing['Z']
        tifffile.imwrite(str(path), data, imagej=True, metadata=metadata, **kwargs)
        return
    metadata = {'axes': axes.replace('C', 'S') if rgb else axes}
    if rgb:
        kwargs['photometric'] = 'rgb'
    if unit:
        for axis, size in spacing.items():
            metadata[f'PhysicalSize{axis}'] = size
            metadata[f'PhysicalSize{axis}Unit'] = unit
    tifffile.imwrite(str(path), data, ome=True, metadata=metadata, **kwargs)
