"""Sliding-window tiles and their blending weights (MONAI's conventions).

Every tile has the model's training size; neighbouring tiles overlap and
are blended with a Gaussian importance map, so there are no seams and the
cost grows linearly with the image area.  Images smaller than a tile are
padded up to one tile.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from monai.data.utils import compute_importance_map, dense_patch_slices


def check_tile_size(tile: int, multiple: int = 32) -> int:
    tile = int(tile)
    if tile < multiple or tile % multiple:
        raise ValueError(
            f'tile size must be a positive multiple of {multiple}, got {tile}'
        )
    return tile


def padded_shape(height: int, width: int, tile: int) -> tuple[int, int]:
    """An image is padded (bottom/right) to at least one tile per side."""
    return max(height, tile), max(width, tile)


def tile_slices(
    height: int, width: int, tile: int, overlap: float
) -> list[tuple[slice, slice]]:
    """Tile windows covering a (padded) ``height x width`` image."""
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f'overlap must be in [0, 1), got {overlap}')
    interval = tuple(
        size if size == tile else max(1, int(tile * (1 - overlap)))
        for size in (height, width)
    )
    return dense_patch_slices((height, width), (tile, tile), interval)


@functools.lru_cache(maxsize=8)
def _weights(tile: int, device: str) -> torch.Tensor:
    return compute_importance_map(
        (tile, tile), mode='gaussian', sigma_scale=0.125, device=device
    )


def blend_weights(tile: int, device: torch.device | str = 'cpu') -> torch.Tensor:
    """Gaussian ``(tile, tile)`` weights, strictly positive everywhere."""
    return _weights(int(tile), str(device))


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
