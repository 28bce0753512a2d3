"""Reading and writing images and label maps, shared by the CLI, the predictor
and the napari docks.  No napari or Qt imports: this module runs headless.

Axis conventions
----------------
Every :class:`ImageData` lists its axes in ``axes`` using the letters
``Z``, ``Y``, ``X`` (spatial) and ``C`` (channels):

* 2D: ``'YX'``; with channels the channel axis is last, ``'YXC'`` (RGB(A)
  images have ``rgb=True``; napari and scikit-image use that order too).
* 3D: ``'ZYX'``; with channels the channel axis is first, ``'CZYX'`` (the
  order of MONAI/PyTorch and of napari's ``channel_axis=0``).

``scale`` and ``translate`` always have one entry per *spatial* axis, in
``axes`` order without ``C``.

NIfTI
-----
nibabel returns voxel arrays indexed ``(i, j, k)`` with a 4x4 ``affine``
mapping ``(i, j, k, 1)`` to RAS+ world millimetres ``(x, y, z, 1)``.  napari
puts the *first* axis on the slider, and the slices of a scan are along
``k``, so volumes are presented **with the voxel axes reversed**:
``data[z, y, x] == nifti[x, y, z]`` i.e. ``axes='ZYX'`` with ``Z=k, Y=j,
X=i``.  The world axes are reversed the same way, so ``ImageData.affine`` is
``P @ A @ P`` (``P`` swaps axes 0 and 2) and maps ``(z, y, x, 1)`` to world
``(S, A, R, 1)`` millimetres.  ``scale`` holds the voxel sizes (column norms
of that affine) and ``translate`` the world position of voxel ``(0, 0, 0)``.
For axis-aligned, unflipped images ``affine == diag(scale) + translate``;
oblique or flipped images need the full ``affine`` (see
:meth:`ImageData.layer_kwargs`).  A volume stored as ``(X, Y, 1)`` is
presented as a 2D ``'YX'`` image.  4D files (``X, Y, Z, T/C``) are refused
unless ``read_image(..., allow_channels=True)``, which gives ``'CZYX'``.

:func:`write_labels` and :func:`write_image` undo the reversal and reuse the
source header and affine (kept in ``ImageData.meta``), so results overlay the
scan in ITK-SNAP, 3D Slicer or FSLeyes.

In napari's 2D view rows grow downwards, so an axial RAS slice shows anterior
at the bottom; set ``viewer.camera.orientation2d = ('up', 'right')`` for the
usual upright view.  The data and world coordinates are unaffected.

TIFF
----
Pixel sizes and axes come from OME-XML or ImageJ metadata and are converted
to micrometres.  Plain TIFF resolution tags (DPI) are ignored: they are
usually set by screen software, not by the microscope.  TIFFs are written in
ImageJ format (Fiji reads the calibration natively) when the dtype allows
(uint8, uint16, float32), otherwise, or for ``*.ome.tif``, as OME-TIFF.

All writes are atomic: the file is written next to the target under a hidden
temporary name, flushed to disk and moved over it with :func:`os.replace`
(:mod:`napari_vmunet._files`), so a crash never leaves a half-written file
and never destroys an older result.
"""

from __future__ import annotations

import copy
import os
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ._files import write_atomically_one
from ._memory import check_fits_in_memory, format_bytes

__all__ = [
    'READ_EXTENSIONS',
    'SAMPLES',
    'WRITE_IMAGE_EXTENSIONS',
    'WRITE_LABELS_EXTENSIONS',
    'ImageData',
    'ImageIOError',
    'label_dtype',
    'load_sample',
    'read_image',
    'write_image',
    'write_labels',
]

PathLike = str | os.PathLike

READ_EXTENSIONS: tuple[str, ...] = (
    '.nii',
    '.nii.gz',
    '.tif',
    '.tiff',
    '.png',
    '.jpg',
    '.jpeg',
)
WRITE_LABELS_EXTENSIONS: tuple[str, ...] = ('.nii.gz', '.nii', '.tif', '.tiff', '.png')
WRITE_IMAGE_EXTENSIONS: tuple[str, ...] = ('.nii.gz', '.nii', '.tif', '.tiff', '.png')

#: sample name -> one-line description (files live in ``napari_vmunet/data``)
SAMPLES: dict[str, str] = {
    'nuclei': 'DSB2018 fluorescence nuclei, 512x512 uint16, with 125 '
    'human-drawn instance labels (BBBC038, CC0; via stardist)',
    'brain': 'MNI ICBM152 2009a T1 template, 1 mm, 189x233x197 (ZYX), with '
    'tissue labels 0 background, 1 grey matter, 2 white matter',
}
_SAMPLE_FILES: dict[str, tuple[str, str]] = {
    'nuclei': ('nuclei_image.tif', 'nuclei_labels.tif'),
    'brain': ('brain_t1.nii.gz', 'brain_tissue_labels.nii.gz'),
}

# unit spelling -> (canonical unit, factor): microscopy in µm, medical in mm
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
_NIFTI_UNITS = {'mm': 'mm', 'µm': 'micron', 'm': 'meter'}
_IMAGEJ_DTYPES = (np.uint8, np.uint16, np.float32)
_FORMAT_NAMES = {'nifti': 'NIfTI', 'tiff': 'TIFF', 'png': 'PNG', 'jpeg': 'JPEG'}


class ImageIOError(ValueError):
    """An image could not be read or written; the message says what to do."""


@dataclass
class ImageData:
    """An image with the geometry needed to show it in physical space and to
    write results back so that they overlay the source in other tools.

    See the module docstring for the axis conventions.
    """

    data: Any  # np.ndarray or a dask array
    axes: str
    scale: tuple[float, ...] = ()
    translate: tuple[float, ...] = ()
    affine: np.ndarray | None = None
    rgb: bool = False
    source: Path | None = None
    meta: dict = field(default_factory=dict)
    units: str | None = None  # 'mm', 'µm' or None (pixels)

    def __post_init__(self) -> None:
        if len(self.axes) != self.data.ndim or set(self.axes) - set('CZYX'):
            raise ValueError(
                f'axes {self.axes!r} do not describe an array of shape '
                f'{tuple(self.data.shape)} (use letters from CZYX)'
            )
        n = len(self.spatial_axes)
        self.scale = tuple(float(s) for s in self.scale) or (1.0,) * n
        self.translate = tuple(float(t) for t in self.translate) or (0.0,) * n
        if len(self.scale) != n or len(self.translate) != n:
            raise ValueError(
                f'scale {self.scale} and translate {self.translate} need one '
                f'value per spatial axis of {self.axes!r}'
            )
        if self.affine is not None:
            self.affine = np.asarray(self.affine, dtype=float)
            if self.affine.shape != (n + 1, n + 1):
                raise ValueError(f'affine must be {n + 1}x{n + 1} for {self.axes!r}')
        if self.source is not None:
            self.source = Path(self.source)

    @property
    def spatial_axes(self) -> str:
        """``axes`` without ``C``: ``'YX'`` or ``'ZYX'``."""
        return self.axes.replace('C', '')

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """The shape of the spatial axes; label maps must have this shape."""
        return tuple(
            s for s, a in zip(self.data.shape, self.axes, strict=True) if a != 'C'
        )

    @property
    def channel_axis(self) -> int | None:
        """Index of ``C`` in ``axes``, or None for single-channel images."""
        return self.axes.index('C') if 'C' in self.axes else None

    def world_affine(self) -> np.ndarray:
        """The full spatial voxel->world matrix, from ``affine`` when set,
        else from ``scale`` and ``translate``."""
        if self.affine is not None:
            return self.affine.copy()
        n = len(self.scale)
        out = np.eye(n + 1)
        out[:n, :n] = np.diag(self.scale)
        out[:n, n] = self.translate
        return out

    def to_metadata(self) -> dict:
        """Everything but the pixels, for a napari layer's ``metadata`` so a
        writer can restore the source geometry (see :meth:`from_metadata`)."""
        return {
            'axes': self.axes,
            'shape': tuple(int(s) for s in self.data.shape),
            'dtype': str(self.data.dtype),
            'scale': self.scale,
            'translate': self.translate,
            'affine': None if self.affine is None else self.affine.tolist(),
            'rgb': self.rgb,
            'source': None if self.source is None else str(self.source),
            'meta': self.meta,
            'units': self.units,
        }

    @classmethod
    def from_metadata(cls, md: dict) -> ImageData:
        """Rebuild the geometry from :meth:`to_metadata` output.  The pixels
        are a zero-cost read-only placeholder with the original shape."""
        data = np.broadcast_to(np.zeros((), md.get('dtype', 'uint8')), md['shape'])
        return cls(
            data=data,
            axes=md['axes'],
            scale=tuple(md['scale']),
            translate=tuple(md['translate']),
            affine=None if md.get('affine') is None else np.asarray(md['affine']),
            rgb=bool(md.get('rgb', False)),
            source=md.get('source'),
            meta=dict(md.get('meta') or {}),
            units=md.get('units'),
        )

    def layer_kwargs(self, *, split_channels: bool = True) -> dict:
        """Keyword arguments for ``viewer.add_image`` / a layer data tuple.

        Axis-aligned images get ``scale`` + ``translate``; oblique or flipped
        ones get ``scale`` (so napari's slider steps are one voxel) and an
        ``affine`` carrying the rest.  Channels become separate layers when
        ``split_channels`` (napari ``channel_axis``), else an extra slider.
        """
        n = len(self.scale)
        full = self.world_affine()
        linear = full[:n, :n]
        kwargs: dict[str, Any] = {}
        if np.allclose(linear, np.diag(np.diag(linear))) and np.all(
            np.diag(linear) > 0
        ):
            kwargs['scale'] = tuple(float(s) for s in np.diag(linear))
            kwargs['translate'] = tuple(float(t) for t in full[:n, n])
        else:
            kwargs['scale'] = self.scale
            kwargs['affine'] = full @ np.diag([*(1.0 / np.array(self.scale)), 1.0])
        if self.units:
            kwargs['units'] = (self.units,) * n
        if self.rgb:
            kwargs['rgb'] = True
        elif self.channel_axis is not None:
            if split_channels:
                kwargs['channel_axis'] = self.channel_axis
            else:
                kwargs = _prepend_axis(kwargs, self.channel_axis)
        kwargs['metadata'] = {'napari_vmunet': self.to_metadata()}
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


# ---------------------------------------------------------------------------
# file kinds


def _suffix(path: Path) -> str:
    """The extension that decides the format (``.nii.gz`` counts as one)."""
    name = path.name.lower()
    if name.endswith('.nii.gz'):
        return '.nii.gz'
    return path.suffix.lower()


def _kind(path: Path, allowed: tuple[str, ...], action: str) -> str:
    ext = _suffix(path)
    if ext not in allowed:
        raise ImageIOError(
            f'cannot {action} {path.name!r}: unsupported extension '
            f'{ext or "(none)"!r}; supported: {", ".join(allowed)}'
        )
    return {
        '.nii': 'nifti',
        '.nii.gz': 'nifti',
        '.tif': 'tiff',
        '.tiff': 'tiff',
        '.png': 'png',
        '.jpg': 'jpeg',
        '.jpeg': 'jpeg',
    }[ext]


def _is_ome(path: Path) -> bool:
    return path.name.lower().endswith(('.ome.tif', '.ome.tiff'))


# ---------------------------------------------------------------------------
# reading


def read_image(path: PathLike, *, allow_channels: bool = False) -> ImageData:
    """Read a NIfTI, TIFF, PNG or JPEG image with its physical geometry.

    ``allow_channels`` accepts 4D NIfTI files whose 4th axis holds
    channels/modalities (e.g. Medical Segmentation Decathlon T1/T1c/T2/FLAIR)
    as ``'CZYX'``; without it they are refused because that axis is usually
    time.  Raises :class:`FileNotFoundError` or :class:`ImageIOError` with a
    message that says what is wrong.
    """
    path = Path(path)
    kind = _kind(path, READ_EXTENSIONS, 'read')
    if path.is_dir():
        raise ImageIOError(f'{path} is a folder; pass an image file')
    if not path.exists():
        raise FileNotFoundError(f'no such image file: {path}')
    reader = {
        'nifti': _read_nifti,
        'tiff': _read_tiff,
        'png': _read_plain,
        'jpeg': _read_plain,
    }[kind]
    try:
        if kind == 'nifti':
            return reader(path, allow_channels)
        return reader(path)
    except (ImageIOError, FileNotFoundError):
        raise
    except MemoryError as exc:
        raise ImageIOError(
            str(exc) or f'{path.name} is too large to read into memory'
        ) from exc
    except Exception as exc:  # noqa: BLE001 - any library error means corrupt
        raise ImageIOError(
            f'{path.name} is not a readable {_FORMAT_NAMES[kind]} file '
            f'({type(exc).__name__}: {exc}); is it truncated or mislabelled?'
        ) from exc


def _reverse3() -> np.ndarray:
    """4x4 permutation swapping axes 0 and 2 (ijk <-> kji); its own inverse."""
    p = np.eye(4)
    p[[0, 2]] = p[[2, 0]]
    return p


def _nifti_to_array_affine(affine: np.ndarray, ndim: int) -> np.ndarray:
    """NIfTI (i, j, k) affine -> affine for the reversed array axes, world
    axes reversed too; for 2D keep the (y, x) block."""
    p = _reverse3()
    rev = p @ affine @ p
    if ndim == 3:
        return rev
    keep = [1, 2, 3]
    return rev[np.ix_(keep, keep)]


def _array_to_nifti_affine(affine: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_nifti_to_array_affine` (2D gets slice z=0)."""
    if affine.shape == (3, 3):
        full = np.eye(4)
        full[1:, 1:] = affine
        affine = full
    p = _reverse3()
    return p @ affine @ p


def _read_nifti(path: Path, allow_channels: bool) -> ImageData:
    import nibabel as nib

    img = nib.load(str(path), mmap=False)
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        raise ImageIOError(f'{path.name} is not a NIfTI-1/2 image')
    shape = tuple(int(s) for s in img.shape)
    # drop singleton axes after the 3 spatial ones (X, Y, Z, 1, C) -> (X, Y, Z, C)
    extra = [s for s in shape[3:] if s != 1]
    spatial = shape[:3]
    if len(extra) > 1 or (extra and not allow_channels):
        raise ImageIOError(_nifti_4d_message(path.name, shape, img.header))
    _check_nifti_size(path, img, shape)
    arr = np.asanyarray(img.dataobj).reshape(shape[:3] + tuple(extra))
    ndim = 2 if len(spatial) == 2 or spatial[2] == 1 else 3
    if ndim == 2:
        arr = arr.reshape(spatial[:2] + tuple(extra))
    # (i, j[, k][, c]) -> ([c,] [k,] j, i)
    order = tuple(range(ndim))[::-1]
    arr = arr.transpose(order + tuple(range(ndim, arr.ndim)))
    if extra and ndim == 3:
        arr = np.moveaxis(arr, -1, 0)  # channels first in 3D, last in 2D
    arr = np.ascontiguousarray(arr)
    affine = _nifti_to_array_affine(_usable_affine(path, img, ndim), ndim)
    scale = tuple(np.linalg.norm(affine[:ndim, :ndim], axis=0))
    # 'unknown' is read as mm, as ITK-SNAP and 3D Slicer do
    space = img.header.get_xyzt_units()[0]
    units = {'mm': 'mm', 'micron': 'µm', 'meter': 'm', 'unknown': 'mm'}[space]
    axes = 'ZYX'[3 - ndim :]
    if extra:
        axes = 'C' + axes if ndim == 3 else axes + 'C'
    meta = {
        'format': 'nifti',
        'nifti_header': img.header.copy(),
        'nifti_affine': np.asarray(img.affine, dtype=float),
        'nifti_shape': shape,
    }
    return ImageData(
        data=arr,
        axes=axes,
        scale=scale,
        translate=tuple(affine[:ndim, ndim]),
        affine=affine,
        rgb=False,
        source=path,
        meta=meta,
        units=units,
    )


#: deflate cannot compress better than about 1032:1
_MAX_GZIP_RATIO = 1032


def _check_nifti_size(path: Path, img: Any, shape: tuple[int, ...]) -> None:
    """Refuse a header that declares more voxels than the file can hold, or
    than memory can, before a single voxel is read (a 1 KB file claiming
    2000^3 voxels would otherwise take minutes and gigabytes to fail)."""
    header = img.header
    itemsize = np.dtype(header.get_data_dtype()).itemsize
    voxels = int(np.prod(shape, dtype=object))
    declared = voxels * itemsize
    size = path.stat().st_size
    described = f'{" x ".join(map(str, shape))} voxels of {header.get_data_dtype()}'
    if path.name.lower().endswith('.gz'):
        possible = size * _MAX_GZIP_RATIO
    else:
        possible = size - int(header.get('vox_offset', 0))
    if declared > possible:
        raise ImageIOError(
            f'{path.name} declares {described} ({format_bytes(declared)}), but '
            f'the file ({format_bytes(size)}) cannot hold that much: it is '
            'truncated or its header is damaged'
        )
    slope, inter = header.get_slope_inter()
    scaled = slope not in (None, 1) or inter not in (None, 0)
    check_fits_in_memory(
        voxels * (itemsize + (8 if scaled else 0)),
        f'{path.name} declares {described}',
    )


def _usable_affine(path: Path, img: Any, ndim: int) -> np.ndarray:
    """The voxel-to-world matrix, or -- when the file's is degenerate (an
    all-zero sform, zero voxel sizes) -- the qform or the voxel sizes, with
    a warning: napari cannot show a layer whose scale is 0."""
    import warnings

    def usable(affine: np.ndarray | None) -> bool:
        if affine is None or not np.isfinite(affine).all():
            return False
        linear = affine[:3, :ndim]
        if ndim == 3:
            return abs(np.linalg.det(affine[:3, :3])) > 1e-12
        return bool(np.all(np.linalg.norm(linear, axis=0) > 0))

    affine = np.asarray(img.affine, dtype=float)
    if usable(affine):
        return affine
    header = img.header
    candidates = [('its qform', header.get_qform() if header['qform_code'] else None)]
    zooms = np.asarray(header.get_zooms()[:3], dtype=float)
    if zooms.size == 3 and np.all(zooms[:ndim] > 0):
        base = np.diag([*np.where(zooms > 0, zooms, 1.0), 1.0])
        candidates.append(('its voxel sizes (pixdim)', base))
    candidates.append(('1 mm voxels', np.eye(4)))
    for what, candidate in candidates:
        if usable(candidate):
            warnings.warn(
                f'{path.name}: its voxel-to-world matrix is invalid (e.g. an '
                f'all-zero sform), so the geometry comes from {what}; check '
                'the position and orientation before measuring',
                UserWarning,
                stacklevel=4,
            )
            return np.asarray(candidate, dtype=float)
    return np.eye(4)  # pragma: no cover - the identity is always usable


def _nifti_4d_message(name: str, shape: tuple[int, ...], header: Any) -> str:
    """Explain which axis is the problem: NIfTI stores x, y, z first, then
    time (dim 4) and vector components (dim 5)."""
    time_unit = header.get_xyzt_units()[1]
    extra = ', '.join(
        f'{label} axis of size {size}'
        for label, size in zip(('4th', '5th', '6th', '7th'), shape[3:], strict=False)
    )
    hint = (
        'if the 4th axis holds channels/modalities (e.g. T1, T2, FLAIR) read it '
        'with allow_channels=True'
        if sum(s > 1 for s in shape[3:]) == 1
        else 'only one extra axis can be read as channels'
    )
    return (
        f'{name} has shape {shape}: after x, y, z it has a {extra}, which holds '
        f'time points (time unit {time_unit!r}) or channels. Split it into 3D '
        f'volumes (e.g. fslsplit, or nibabel img.slicer[..., i]); {hint}.'
    )


def _read_tiff(path: Path) -> ImageData:
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


def _read_plain(path: Path) -> ImageData:
    import imageio.v3 as iio

    data = np.asarray(iio.imread(str(path)))
    if data.ndim == 2:
        return ImageData(data=data, axes='YX', source=path, meta={'format': 'png'})
    if data.ndim == 3 and data.shape[-1] in (2, 3, 4):
        return ImageData(
            data=data,
            axes='YXC',
            rgb=data.shape[-1] in (3, 4),
            source=path,
            meta={'format': _suffix(path).lstrip('.')},
        )
    raise ImageIOError(
        f'{path.name}: expected a 2D grey or RGB(A) image, got shape {data.shape} '
        '(animated or multi-page files are not supported; use TIFF)'
    )


# ---------------------------------------------------------------------------
# writing


def label_dtype(labels: Any) -> np.dtype:
    """The smallest unsigned integer dtype holding ``labels``.

    Small label files load fast and every viewer reads uint8/uint16.
    Raises :class:`ImageIOError` for negative or non-integral values.
    """
    labels = np.asarray(labels)
    if labels.dtype == bool or labels.size == 0:
        return np.dtype(np.uint8)
    integral = np.issubdtype(labels.dtype, np.integer) or (
        np.issubdtype(labels.dtype, np.floating)
        and np.array_equal(labels, np.round(labels))
    )
    if not integral:
        raise ImageIOError(
            f'labels must be whole numbers, got dtype {labels.dtype}; '
            'use write_image for probability maps'
        )
    lo, hi = labels.min(), labels.max()
    if lo < 0:
        raise ImageIOError(f'labels must be >= 0, found {lo}')
    for dt in (np.uint8, np.uint16, np.uint32, np.uint64):
        if hi <= np.iinfo(dt).max:
            return np.dtype(dt)
    raise ImageIOError(f'label value {hi} does not fit in uint64')


def write_labels(path: PathLike, labels: Any, like: ImageData | None = None) -> Path:
    """Write a label map in the smallest unsigned dtype, atomically.

    ``labels`` has the spatial shape of ``like`` (``'YX'`` or ``'ZYX'``).
    With ``like`` from a NIfTI file, ``.nii``/``.nii.gz`` reuse its header
    and affine (in the original voxel order) and mark the file as a label
    map; ``.tif`` stores pixel sizes; ``.png`` takes 2D uint8/uint16 only.
    Returns the path written.
    """
    path = Path(path)
    kind = _kind(path, WRITE_LABELS_EXTENSIONS, 'write labels to')
    labels = np.asarray(labels)
    dtype = label_dtype(labels)
    labels = labels.astype(dtype, copy=False)
    like = _check_like(labels, like)
    if kind == 'png':
        _check_png(labels, None, path)
    writer = _writer(kind, path, labels, like, is_labels=True)
    return _atomic_write(path, writer)


def write_image(
    path: PathLike, data: Any, like: ImageData | None = None, *, axes: str | None = None
) -> Path:
    """Write an intensity image or probability map, atomically.

    ``data`` either has the spatial shape of ``like`` or one extra channel
    axis (first for 3D, ``'CZYX'``; last for 2D, ``'YXC'``), unless ``axes``
    says otherwise.  float64/float16 are stored as float32 and bool as uint8.
    Geometry handling matches :func:`write_labels`.
    """
    path = Path(path)
    kind = _kind(path, WRITE_IMAGE_EXTENSIONS, 'write an image to')
    data = np.asarray(data)
    if data.dtype == bool:
        data = data.astype(np.uint8)
    elif np.issubdtype(data.dtype, np.floating) and data.dtype != np.float32:
        data = data.astype(np.float32)
    elif not np.issubdtype(data.dtype, np.number) or np.iscomplexobj(data):
        raise ImageIOError(f'cannot write an image of dtype {data.dtype}')
    axes = axes or _guess_axes(data, like)
    if 'C' in axes:
        target = axes.replace('C', '')
        target = 'C' + target if 'Z' in target else target + 'C'
        data = data.transpose([axes.index(a) for a in target])
        axes = target
    spatial = data if 'C' not in axes else np.take(data, 0, axis=axes.index('C'))
    like = _check_like(spatial, like)
    if kind == 'png':
        _check_png(data, axes, path)
    writer = _writer(kind, path, data, like, is_labels=False, axes=axes)
    return _atomic_write(path, writer)


def _guess_axes(data: np.ndarray, like: ImageData | None) -> str:
    n_spatial = len(like.spatial_shape) if like is not None else min(data.ndim, 3)
    spatial = 'ZYX'[3 - n_spatial :]
    if data.ndim == n_spatial:
        return spatial
    if data.ndim == n_spatial + 1:
        return 'C' + spatial if n_spatial == 3 else spatial + 'C'
    raise ImageIOError(
        f'cannot tell the axes of an array of shape {data.shape}; pass axes='
    )


def _check_like(spatial: np.ndarray, like: ImageData | None) -> ImageData:
    """Validate the spatial shape against ``like``; default to pixel units."""
    if spatial.ndim not in (2, 3):
        raise ImageIOError(f'expected a 2D or 3D array, got shape {spatial.shape}')
    if like is None:
        return ImageData(
            data=np.broadcast_to(np.zeros((), spatial.dtype), spatial.shape),
            axes='ZYX'[3 - spatial.ndim :],
        )
    if tuple(spatial.shape) != like.spatial_shape:
        raise ImageIOError(
            f'array shape {tuple(spatial.shape)} does not match the reference '
            f'image ({like.spatial_axes} {like.spatial_shape}'
            f'{", " + like.source.name if like.source else ""})'
        )
    return like


def _check_png(data: np.ndarray, axes: str | None, path: Path) -> None:
    ok_shape = data.ndim == 2 or (axes == 'YXC' and data.shape[-1] in (3, 4))
    if not ok_shape or data.dtype not in (np.uint8, np.uint16):
        raise ImageIOError(
            f'{path.name}: PNG holds 2D uint8/uint16 (or RGB) only, got '
            f'{data.dtype} {data.shape}; write .tif or .nii.gz instead'
        )


def _writer(
    kind: str,
    path: Path,
    data: np.ndarray,
    like: ImageData,
    *,
    is_labels: bool,
    axes: str | None = None,
) -> Callable[[Path], None]:
    """A function writing ``data`` to a given (temporary) path."""
    axes = axes or like.spatial_axes
    if kind == 'nifti':
        return lambda tmp: _write_nifti(tmp, data, axes, like, is_labels)
    if kind == 'tiff':
        ome = _is_ome(path)
        return lambda tmp: _write_tiff(tmp, data, axes, like, ome)

    def write_png(tmp: Path) -> None:
        import imageio.v3 as iio

        iio.imwrite(str(tmp), data, extension='.png')

    return write_png


def _write_nifti(
    path: Path, data: np.ndarray, axes: str, like: ImageData, is_labels: bool
) -> None:
    import nibabel as nib

    ndim = len(like.spatial_axes)
    # ([C,] [Z,] Y, X) -> (X, Y[, Z][, C]) : the exact inverse of _read_nifti
    arr = np.moveaxis(data, 0, -1) if axes.startswith('C') else data
    order = tuple(range(ndim))[::-1]
    arr = arr.transpose(order + tuple(range(ndim, arr.ndim)))
    header = like.meta.get('nifti_header')
    if header is not None and 'nifti_affine' in like.meta:
        affine = np.asarray(like.meta['nifti_affine'], dtype=float)
        spatial = tuple(like.meta['nifti_shape'][:3])
        arr = arr.reshape(spatial + arr.shape[ndim:])
        header = header.copy()
        image_class = (
            nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
        )
        fresh = False
    else:
        # no NIfTI source: 2D becomes (X, Y, 1), which every 3D tool reads
        affine = _array_to_nifti_affine(like.world_affine())
        if ndim == 2:
            arr = arr.reshape(arr.shape[:2] + (1,) + arr.shape[2:])
        header = nib.Nifti1Header()
        header.set_xyzt_units(_NIFTI_UNITS.get(like.units or '', 'unknown'))
        image_class, fresh = nib.Nifti1Image, True
    header.set_data_dtype(arr.dtype)
    header.set_slope_inter(1.0, 0.0)
    header['cal_min'] = header['cal_max'] = 0
    header.set_intent('label' if is_labels else 'none')
    image = image_class(np.ascontiguousarray(arr), affine, header=header)
    if fresh:
        image.set_sform(affine, code='aligned')
        image.set_qform(affine, code='aligned')
    nib.save(image, str(path))


def _write_tiff(
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


def _atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """Run ``write`` on a hidden sibling file, fsync it, then move it over
    ``path`` (see :mod:`napari_vmunet._files`)."""
    return write_atomically_one(path.absolute(), write)


# ---------------------------------------------------------------------------
# samples


def load_sample(name: str) -> tuple[ImageData, np.ndarray]:
    """A real image and its reference labels, shipped with the package.

    ``'nuclei'``: 2D uint16 fluorescence image + uint16 instance labels drawn
    by people (125 nuclei, ids not contiguous).  ``'brain'``: the MNI152
    2009a T1 as ``'ZYX'`` at 1 mm + uint8 tissue labels (0 background,
    1 grey matter, 2 white matter).  A population-average template, not a
    patient: never quote accuracy on it as a clinical result.
    """
    if name not in _SAMPLE_FILES:
        raise ValueError(
            f'unknown sample {name!r}; choose one of: {", ".join(SAMPLES)}'
        )
    image_file, labels_file = _SAMPLE_FILES[name]
    folder = resources.files('napari_vmunet') / 'data'
    with (
        resources.as_file(folder / image_file) as image_path,
        resources.as_file(folder / labels_file) as labels_path,
    ):
        if not Path(image_path).exists() or not Path(labels_path).exists():
            raise FileNotFoundError(
                f'sample data for {name!r} is missing from {folder}; in a source '
                'checkout run `python scripts/make_sample_data.py`'
            )
        image = read_image(image_path)
        labels = read_image(labels_path).data
    image.meta = copy.copy(image.meta)
    image.meta['sample'] = name
    return image, labels
