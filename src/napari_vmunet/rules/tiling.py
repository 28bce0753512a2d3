"""Tiles: their size rules, the sliding windows and their blending weights.

The one home of every tiling rule (MONAI's conventions for the windows):

* a tile edge is a multiple of :data:`TILE_MULTIPLE` (VM-UNet halves the
  size five times: ``VMUNet.size_multiple``), at most :data:`MAX_TILE`;
* :data:`DEFAULT_TILE` is the original's ISIC training size;
* neighbouring tiles overlap by :data:`DEFAULT_OVERLAP` and are blended with
  a Gaussian importance map of sigma :data:`BLEND_SIGMA` x the tile, so
  there are no seams and the cost grows linearly with the image area (by
  ``1 / (1 - overlap)^2`` more than the area itself for large images);
* images smaller than a tile are mirror-padded up to one tile;
* a tile size of 0 means one window over the whole image (padded to a
  multiple of 32): VM-UNet takes any such size, and its cost is then
  exactly linear in the area;
* by default the window is chosen per image and device, never from the
  training tile (:func:`auto_tile`): the whole image when it is small
  enough, else tiles sized for the device (cache-sized on a CPU, large on a
  GPU).  A model trained on 64² crops does not predict through 64² windows.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

#: ``VMUNet.size_multiple`` (tests/test_architecture.py checks they agree):
#: written out so that the docks read these rules without importing torch
TILE_MULTIPLE = 32
DEFAULT_TILE = 256
#: 4096^2 is already 16 M pixels per tile; larger values in a file or an
#: option are mistakes (or an attempt to exhaust memory)
MAX_TILE = 4096
DEFAULT_OVERLAP = 0.25
BLEND_SIGMA = 0.125
#: automatic windows: the whole image when its padded area is at most this
#: (on a CPU a cache-sized 256² window; larger whole images cost more per
#: pixel as element-wise operations outgrow the caches, docs/benchmarks.md,
#: and on the held-out nuclei rows one 192x512 window split touching nuclei
#: worse than 256² tiles: object F1 0.85 vs > 0.9, tests/test_cli_measure.py)
WHOLE_IMAGE_PIXELS = {'cpu': 256 * 256, 'mps': 1024 * 1024, 'cuda': 2048 * 2048}
#: ... else tiles of this edge
AUTO_TILE = {'cpu': 256, 'mps': 512, 'cuda': 1024}


def check_tile(tile: Any, *, allow_whole: bool = False, what: str = 'tile size') -> int:
    """A tile edge: a positive multiple of 32 up to :data:`MAX_TILE` (or 0
    for whole-image windows when ``allow_whole``); ``ValueError`` otherwise."""
    if isinstance(tile, bool) or not isinstance(tile, (int, np.integer)):
        raise ValueError(f'{what} must be a whole number, e.g. 256; got {tile!r}')
    tile = int(tile)
    if allow_whole and tile == 0:
        return 0
    if tile < TILE_MULTIPLE or tile % TILE_MULTIPLE or tile > MAX_TILE:
        whole = ' (or 0 for the whole image at once)' if allow_whole else ''
        raise ValueError(
            f'{what} must be a multiple of {TILE_MULTIPLE} (VM-UNet halves '
            f'the size five times) between {TILE_MULTIPLE} and {MAX_TILE}'
            f'{whole}, e.g. 256; got {tile}'
        )
    return tile


def check_tile_size(tile: Any) -> int:
    """An inference window: a tile edge, or 0 for whole-image windows."""
    return check_tile(tile, allow_whole=True)


def check_overlap(overlap: Any) -> float:
    """A tile overlap: a fraction in [0, 1)."""
    ok = isinstance(overlap, (int, float, np.integer, np.floating)) and not isinstance(
        overlap, bool
    )
    if not (ok and np.isfinite(overlap) and 0.0 <= overlap < 1.0):
        raise ValueError(
            f'overlap must be a fraction in [0, 1), e.g. 0.25; got {overlap!r}'
        )
    return float(overlap)


Tile = tuple[int, int]


def tile_shape(
    height: int, width: int, tile: int, multiple: int = TILE_MULTIPLE
) -> Tile:
    """The window for an image: ``tile x tile``, or with ``tile == 0`` the
    whole image rounded up to ``multiple`` (one window, no blending)."""
    if tile == 0:
        return (-(-height // multiple) * multiple, -(-width // multiple) * multiple)
    return (tile, tile)


def auto_tile(height: int, width: int, device_type: str = 'cpu') -> int:
    """The window for a ``height x width`` image on a device of
    ``device_type`` (``'cpu'``, ``'mps'``, ``'cuda'``): 0 (the whole image)
    when its padded area is at most :data:`WHOLE_IMAGE_PIXELS`, else a tile
    edge of :data:`AUTO_TILE`."""
    h, w = tile_shape(height, width, 0)
    if h * w <= WHOLE_IMAGE_PIXELS.get(device_type, WHOLE_IMAGE_PIXELS['cpu']):
        return 0
    return AUTO_TILE.get(device_type, AUTO_TILE['cpu'])


def padded_shape(height: int, width: int, tile: Tile) -> tuple[int, int]:
    """An image is padded (bottom/right) to at least one window per side."""
    return max(height, tile[0]), max(width, tile[1])


def load_window_helpers() -> None:
    """Import MONAI's window helpers (``dense_patch_slices``, the Gaussian
    importance map) ahead of the first prediction.  MONAI brings ~1,600
    modules with it (SciPy, scikit-image, pandas), seconds of imports whose
    extension loads hold the GIL: done inside the first Run, they stalled the
    viewer; the inference dock does it in a worker when it opens."""
    import monai.data.utils  # noqa: F401


def tile_slices(
    height: int, width: int, tile: Tile, overlap: float
) -> list[tuple[slice, slice]]:
    """Windows covering a (padded) ``height x width`` image."""
    overlap = check_overlap(overlap)
    if (height, width) == tuple(tile):
        # one window covers it: no window arithmetic, and no import of
        # MONAI (2 s) for the commonest case, a slice in one window
        return [(slice(0, height), slice(0, width))]
    interval = tuple(
        size if size == t else max(1, int(t * (1 - overlap)))
        for size, t in zip((height, width), tile, strict=True)
    )
    from monai.data.utils import dense_patch_slices

    return dense_patch_slices((height, width), tile, interval)


@functools.lru_cache(maxsize=8)
def _weights(tile: Tile, device: str) -> torch.Tensor:
    from monai.data.utils import compute_importance_map

    return compute_importance_map(
        tile, mode='gaussian', sigma_scale=BLEND_SIGMA, device=device
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
