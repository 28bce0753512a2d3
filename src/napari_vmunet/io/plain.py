"""PNG and JPEG: 2D grey or RGB(A), no geometry."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ._formats import format_suffix
from ._image import ImageData, ImageIOError


def read_plain(path: Path) -> ImageData:
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
            meta={'format': format_suffix(path).lstrip('.')},
        )
    raise ImageIOError(
        f'{path.name}: expected a 2D grey or RGB(A) image, got shape {data.shape} '
        '(animated or multi-page files are not supported; use TIFF)'
    )


def write_png(path: Path, data: np.ndarray) -> None:
    import imageio.v3 as iio

    iio.imwrite(str(path), data, extension='.png')


def check_png(data: np.ndarray, axes: str | None, path: Path) -> None:
    ok_shape = data.ndim == 2 or (axes == 'YXC' and data.shape[-1] in (3, 4))
    if not ok_shape or data.dtype not in (np.uint8, np.uint16):
        raise ImageIOError(
            f'{path.name}: PNG holds 2D uint8/uint16 (or RGB) only, got '
            f'{data.dtype} {data.shape}; write .tif or .nii.gz instead'
        )
