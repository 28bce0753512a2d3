"""Sliding-window tiles and their blending weights (MONAI's conventions).

Every tile has the model's training size; neighbouring tiles overlap and
are blended with a Gaussian importance map, so there are no seams and the
cost grows linearly with the image area (by ``1 / (1 - overlap)^2`` more
than the area itself for large images).  Images smaller than a tile are
padded up to one tile.  A tile size of 0 means one window over the whole
image (padded to a multiple of 32): VM-UNet takes any such size, and its
cost is then exactly linear in the area.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from monai.data.utils import compute_importance_map, dense_patch_slices


def check_tile_size(tile: int, multiple: int = 32) -> int:
    """A positive multiple of ``multiple``, or 0 for whole-image windows."""
    tile = int(tile)
    if tile != 0 and (tile < multiple or tile % multiple):
        raise ValueError(
            f'tile size must be a positive multiple of {multiple} (or 0 for '
            f'the whole image at once), got {tile}'
        )
    return tile


Tile = tuple[int, int]


def tile_shape(height: int, width: int, tile: int, multiple: int = 32) -> Tile:
    """The window for an image: ``tile x tile``, or with ``tile == 0`` the
    whole image rounded up to ``multiple`` (one window, no blending)."""
    if tile == 0:
        return (-(-height // multiple) * multiple, -(-width // multiple) * multiple)
    return (tile, tile)


def padded_shape(height: int, width: int, tile: Tile) -> tuple[int, int]:
    """An image is padded (bottom/right) to at least one window per side."""
    return max(height, tile[0]), max(width, tile[1])


def tile_slices(
    height: int, width: int, tile: Tile, overlap: float
) -> list[tuple[slice, slice]]:
    """Windows covering a (padded) ``height x width`` image."""
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f'overlap must be in [0, 1), got {overlap}')
    interval = tuple(
        size if size == t else max(1, int(t * (1 - overlap)))
        for size, t in zip((height, width), tile, strict=True)
    )
    return dense_patch_slices((height, width), tile, interval)


@functools.lru_cache(maxsize=8)
def _weights(tile: Tile, device: str) -> torch.Tensor:
    return compute_importance_map(
        tile, mode='gaussian', sigma_scale=0.125, device=device
    )


def blend_weights(tile: Tile, device: torch.device | str = 'cpu') -> torch.Tensor:
    """Gaussian weights of a window, strictly positive everywhere."""
    return _weights(tuple(int(t) for t in tile), str(device))


def pad_to(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Mirror-pad a ``(C, H, W)`` image at the bottom/right to ``height x width``.

    Mirroring keeps texture statistics at the border (zero padding would look
    like a dark object to the network); 'symmetric' also copes with images a
    single pixel wide.
    """
    ph, pw = height - image.shape[-2], width - image.shape[-1]
    if ph == 0 and pw == 0:
        return image
    return np.pad(image, ((0, 0), (0, ph), (0, pw)), mode='symmetric')
