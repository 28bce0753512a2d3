"""Reading and writing by extension: the public functions of the package."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .._files import write_atomically_one
from ._formats import (
    FORMAT_NAMES,
    READ_EXTENSIONS,
    WRITE_IMAGE_EXTENSIONS,
    WRITE_LABELS_EXTENSIONS,
    format_kind,
    is_ome,
)
from ._image import ImageData, ImageIOError, PathLike
from .nifti import read_nifti, write_nifti
from .plain import check_png, read_plain, write_png
from .tiff import read_tiff, write_tiff


def read_image(path: PathLike, *, allow_channels: bool = False) -> ImageData:
    """Read a NIfTI, TIFF, PNG or JPEG image with its physical geometry.

    ``allow_channels`` accepts 4D NIfTI files whose 4th axis holds
    channels/modalities (e.g. Medical Segmentation Decathlon T1/T1c/T2/FLAIR)
    as ``'CZYX'``; without it they are refused because that axis is usually
    time.  Raises :class:`FileNotFoundError` or :class:`ImageIOError` with a
    message that says what is wrong.
    """
    path = Path(path)
    kind = format_kind(path, READ_EXTENSIONS, 'read')
    if path.is_dir():
        raise ImageIOError(f'{path} is a folder; pass an image file')
    if not path.exists():
        raise FileNotFoundError(f'no such image file: {path}')
    reader = {
        'nifti': read_nifti,
        'tiff': read_tiff,
        'png': read_plain,
        'jpeg': read_plain,
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
            f'{path.name} is not a readable {FORMAT_NAMES[kind]} file '
            f'({type(exc).__name__}: {exc}); is it truncated or mislabelled?'
        ) from exc


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
    kind = format_kind(path, WRITE_LABELS_EXTENSIONS, 'write labels to')
    labels = np.asarray(labels)
    dtype = label_dtype(labels)
    labels = labels.astype(dtype, copy=False)
    like = _check_like(labels, like)
    if kind == 'png':
        check_png(labels, None, path)
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
    kind = format_kind(path, WRITE_IMAGE_EXTENSIONS, 'write an image to')
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
        check_png(data, axes, path)
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
        return lambda tmp: write_nifti(tmp, data, axes, like, is_labels)
    if kind == 'tiff':
        ome = is_ome(path)
        return lambda tmp: write_tiff(tmp, data, axes, like, ome)

    return lambda tmp: write_png(tmp, data)


def _atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """Run ``write`` on a hidden sibling file, fsync it, then move it over
    ``path`` (see :mod:`napari_vmunet._files`)."""
    return write_atomically_one(path.absolute(), write)
