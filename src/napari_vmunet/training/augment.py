"""Random training tiles: crop, rotate, flip and jitter, image and mask alike.

Every geometric operation is applied to the image and the mask with the
same parameters; the mask is always resampled with nearest neighbour, so
targets stay class indices (the original VM-UNet resized masks bilinearly
and trained on soft targets; we do not).  Small rotations read the tile
straight out of the whole slice with one ``grid_sample`` and reflect at the
borders, so a rotated tile has no empty corners.  Intensity jitter (gamma,
contrast, brightness) acts on the image only, relative to the slice's value
range, and keeps the normalised scale the network sees at inference.

All randomness comes from a ``numpy.random.Generator`` passed in, so a tile
is a pure function of its seed: runs are reproducible, resuming continues
the same stream, and data-loader workers or DDP ranks never repeat tiles.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from .config import TrainConfig
    from .data import AnnotatedSlice


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges of the random transforms.

    ``foreground_prob``: share of tiles centred on a random foreground pixel
    (as nnU-Net oversamples foreground), so sparse annotations are seen
    often.  ``image_interpolation``: ``'bilinear'`` for training;
    ``'nearest'`` makes the image follow exactly the mask's pixels (tests).
    """

    flips: bool = True
    rot90: bool = True
    rotate_prob: float = 0.3
    max_angle: float = 15.0  # degrees
    intensity_prob: float = 0.5
    gamma: tuple[float, float] = (0.7, 1.5)
    contrast: tuple[float, float] = (0.9, 1.1)
    brightness: float = 0.05  # fraction of the value range
    foreground_prob: float = 0.33
    image_interpolation: str = 'bilinear'

    @classmethod
    def off(cls) -> AugmentConfig:
        """Plain random crops (still foreground-biased), nothing else."""
        return cls(flips=False, rot90=False, rotate_prob=0.0, intensity_prob=0.0)


def random_tile(
    image: np.ndarray,
    mask: np.ndarray,
    tile: int,
    rng: np.random.Generator,
    config: AugmentConfig = AugmentConfig(),  # noqa: B008 - frozen, immutable
    *,
    foreground: np.ndarray | None = None,
    value_range: tuple[float, float] | None = None,
    annotated: np.ndarray | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One augmented ``tile x tile`` crop of a ``(C, H, W)`` image and its
    ``(H, W)`` mask (both at least ``tile`` per side).

    ``foreground``: flat indices of foreground pixels to centre some tiles
    on (see :attr:`AugmentConfig.foreground_prob`).  ``value_range``: the
    slice's (min, max) for the intensity jitter (default: the tile's).
    ``annotated``: flat indices of painted pixels (sparse scribbles, whose
    mask holds ``IGNORE`` elsewhere); tiles not centred on an object are
    then centred on one of them.  Returns a float32 ``(C, tile, tile)``
    image and an int64 ``(tile, tile)`` mask.
    """
    c, h, w = image.shape
    if h < tile or w < tile or mask.shape != (h, w):
        raise ValueError(
            f'need an image of at least {tile}x{tile} with a matching mask, got '
            f'{image.shape} and {mask.shape}'
        )
    y0, x0 = _corner(h, w, tile, rng, config.foreground_prob, foreground, annotated)
    if config.rotate_prob > 0 and rng.random() < config.rotate_prob:
        angle = math.radians(rng.uniform(-config.max_angle, config.max_angle))
        x, m = _rotated_crop(image, mask, y0, x0, tile, angle, config)
    else:
        x = torch.from_numpy(
            np.ascontiguousarray(image[:, y0 : y0 + tile, x0 : x0 + tile])
        )
        m = torch.from_numpy(np.ascontiguousarray(mask[y0 : y0 + tile, x0 : x0 + tile]))
        x, m = x.float(), m.long()
    if config.flips:
        if rng.random() < 0.5:
            x, m = x.flip(-1), m.flip(-1)
        if rng.random() < 0.5:
            x, m = x.flip(-2), m.flip(-2)
    if config.rot90:
        k = int(rng.integers(4))
        if k:
            x, m = torch.rot90(x, k, (-2, -1)), torch.rot90(m, k, (-2, -1))
    if config.intensity_prob > 0 and rng.random() < config.intensity_prob:
        x = _jitter(x, rng, config, value_range)
    return x.contiguous(), m.contiguous()


def _corner(h, w, tile, rng, fg_prob, foreground, annotated=None) -> tuple[int, int]:
    """Top-left corner of a crop inside the image, sometimes around an
    object pixel, else (sparse) around a painted one, else anywhere."""
    if foreground is not None and len(foreground) and rng.random() < fg_prob:
        points = foreground
    elif annotated is not None and len(annotated):
        points = annotated
    else:
        return int(rng.integers(h - tile + 1)), int(rng.integers(w - tile + 1))
    cy, cx = divmod(int(points[rng.integers(len(points))]), w)
    y0 = min(max(cy - tile // 2, 0), h - tile)
    x0 = min(max(cx - tile // 2, 0), w - tile)
    return y0, x0


def _rotated_crop(image, mask, y0, x0, tile, angle, config):
    """The crop at ``(y0, x0)`` rotated by ``angle`` about its centre, read
    from the slice (reflection beyond its borders).

    Only the window that the rotated tile can reach (radius tile/sqrt 2) is
    converted, so the cost does not grow with the slice size; the window
    ends early only at the slice's own borders, where reflection belongs.
    """
    h, w = mask.shape
    cy, cx = y0 + (tile - 1) / 2, x0 + (tile - 1) / 2
    reach = math.ceil((tile - 1) / 2 * math.sqrt(2)) + 2
    ya, yb = max(0, math.floor(cy - reach)), min(h, math.ceil(cy + reach) + 1)
    xa, xb = max(0, math.floor(cx - reach)), min(w, math.ceil(cx + reach) + 1)
    cy, cx = cy - ya, cx - xa
    wh, ww = yb - ya, xb - xa
    r = torch.arange(tile, dtype=torch.float64) - (tile - 1) / 2
    v, u = torch.meshgrid(r, r, indexing='ij')
    cos, sin = math.cos(angle), math.sin(angle)
    src_x = cx + cos * u - sin * v
    src_y = cy + sin * u + cos * v
    # align_corners=True: -1 and 1 are the centres of the first/last pixel
    grid = torch.stack(
        [2 * src_x / max(ww - 1, 1) - 1, 2 * src_y / max(wh - 1, 1) - 1], dim=-1
    )[None].float()
    img = torch.from_numpy(np.ascontiguousarray(image[:, ya:yb, xa:xb]))
    msk = torch.from_numpy(np.ascontiguousarray(mask[ya:yb, xa:xb]))
    x = F.grid_sample(
        img.float()[None],
        grid,
        mode=config.image_interpolation,
        padding_mode='reflection',
        align_corners=True,
    )[0]
    m = F.grid_sample(
        msk.float()[None, None],
        grid,
        mode='nearest',
        padding_mode='reflection',
        align_corners=True,
    )[0, 0]
    return x, m.round().long()


def _jitter(x, rng, config, value_range):
    """Gamma, contrast and brightness in the slice's own value range."""
    lo, hi = value_range if value_range else (float(x.min()), float(x.max()))
    span = hi - lo
    if span <= 0:
        return x
    t = ((x - lo) / span).clamp_(0, 1)
    t = t.pow(float(np.exp(rng.uniform(*np.log(config.gamma)))))
    t = (t - 0.5) * rng.uniform(*config.contrast) + 0.5
    t = t + rng.uniform(-config.brightness, config.brightness)
    return t * span + lo


def augment_choice(
    config: TrainConfig, slices: Sequence[AnnotatedSlice]
) -> tuple[bool, str | None]:
    """Whether tiles are augmented, and a note when they are not by default.

    Unless the caller said, yes -- except for a new model (the scratch
    preset) learning from slices of volumes: their orientation is fixed, and
    on the bundled few-slice settings flips and rotations cost VM-UNet Dice
    (brain white matter 0.975 without vs 0.966 with, grey and white matter
    0.962 vs 0.942), while on a 2-D microscopy crop they helped (0.913 vs
    0.891; ``benchmarks/fewshot.py``, docs/training.md)."""
    if config.augment is not None:
        return bool(config.augment), None
    volumes = bool(slices) and all(s.from_volume for s in slices)
    if config.preset == 'scratch' and volumes:
        return False, (
            'no augmentation: a new model learning from slices of volumes '
            '(fixed orientation) does better without it; augment=True '
            '(CLI: --augment) turns it on'
        )
    return True, None
