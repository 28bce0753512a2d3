"""NIfTI volumes: reversed voxel axes, the world affine, and the source header
kept for writing results that overlay the scan (see the package docstring)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .._memory import check_fits_in_memory, format_bytes
from ._image import ImageData, ImageIOError

_NIFTI_UNITS = {'mm': 'mm', 'µm': 'micron', 'm': 'meter'}


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


def read_nifti(path: Path, allow_channels: bool) -> ImageData:
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


def write_nifti(
    path: Path, data: np.ndarray, axes: str, like: ImageData, is_labels: bool
) -> None:
    import nibabel as nib

    ndim = len(like.spatial_axes)
    # ([C,] [Z,] Y, X) -> (X, Y[, Z][, C]) : the exact inverse of read_nifti
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
