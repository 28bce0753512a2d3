"""Which format a file name means, and what can be read and written."""

from __future__ import annotations

from pathlib import Path

from ._image import ImageIOError

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

FORMAT_NAMES = {'nifti': 'NIfTI', 'tiff': 'TIFF', 'png': 'PNG', 'jpeg': 'JPEG'}


def format_suffix(path: Path) -> str:
    """The extension that decides the format (``.nii.gz`` counts as one)."""
    name = path.name.lower()
    if name.endswith('.nii.gz'):
        return '.nii.gz'
    return path.suffix.lower()


def format_kind(path: Path, allowed: tuple[str, ...], action: str) -> str:
    ext = format_suffix(path)
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


def is_ome(path: Path) -> bool:
    return path.name.lower().endswith(('.ome.tif', '.ome.tiff'))
