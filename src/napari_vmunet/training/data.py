"""Training data from arrays -- what napari layers hold -- without files.

Three stages, each with one job:

1. :class:`TrainingPair` names an image and its labels as the user has them
   (2-D or 3-D; grey, RGB or multichannel; numpy, dask or zarr).
2. :func:`extract_slices` picks the 2-D slices that teach something -- those
   with any non-zero label, plus slices the user marked as background only
   -- and **copies** them.  A run never sees later edits of the user's
   layers and never writes to them.  This is also what crosses into the
   training process, so only the annotated slices travel.
3. :func:`prepare_samples` turns them into model inputs exactly as
   inference does (:func:`~napari_vmunet.rules.normalization.normalize`
   per 2-D image, then :func:`map_channels`) and labels into targets:
   any positive label is foreground for a one-class model (instance ids
   such as nuclei work as they are); for K classes a label is a class index
   and a value >= K is an error.  Sparse scribbles (``annotation='sparse'``,
   :mod:`~napari_vmunet.rules.annotation`) give targets and the mask of
   painted pixels instead: a slice with any stroke is used, and only its
   strokes teach.

:mod:`.split` then holds out validation data.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import KW_ONLY, dataclass
from typing import Any

import numpy as np
import torch

from ..rules.annotation import check_annotation, sparse_targets, with_ignore
from ..rules.intensity import UnusableImageError, inspect_intensities
from ..rules.layout import image_layout, slice_position
from ..rules.normalization import map_channels, normalize
from ..rules.tiling import pad_to
from .augment import AugmentConfig, random_tile


@dataclass(eq=False)
class TrainingPair:
    """An image and its labels, as a napari Image and Labels layer hold them.

    ``image``: ``(Y, X)`` grey, ``(Y, X, 3|4)`` RGB(A), multichannel with
    ``channel_axis``, a ``(Z, Y, X)`` volume (slices along ``slice_axis``,
    default the first spatial axis, i.e. 0 for ZYX) or a volume with
    channels.  ``labels``: integers with the image's spatial shape.

    In a volume the annotated slices are those with any non-zero label;
    ``background_slices`` lists slices the user declares to contain only
    background, so the model also learns what is *not* an object.  A 2-D
    image is a volume of one slice (index 0).  Nothing is read or copied
    until :func:`extract_slices`.
    """

    image: Any
    labels: Any
    _: KW_ONLY
    channel_axis: int | None = None
    rgb: bool | None = None
    slice_axis: int | None = None
    background_slices: Sequence[int] = ()
    channel_map: Sequence[int] | None = None
    name: str | None = None


@dataclass(eq=False)
class AnnotatedSlice:
    """One 2-D slice that training uses: a private copy, still raw."""

    image: np.ndarray  # (C, H, W), the source dtype
    labels: np.ndarray  # (H, W), integers as drawn
    source: str  # e.g. 'nuclei' or 'brain slice 80'
    background: bool  # declared background-only
    rgb: bool = False
    channel_map: tuple[int, ...] | None = None
    from_volume: bool = False  # a slice of a volume, not a 2-D image


@dataclass(eq=False)
class Sample:
    """A slice ready for the network: normalised input and class targets.

    ``annotated``: where the targets hold (sparse scribbles); None = every
    pixel (dense annotation)."""

    image: np.ndarray  # (C, H, W) float32, normalised like inference
    mask: np.ndarray  # (H, W) uint8/int16 class indices (0/1 for one class)
    source: str
    background: bool
    annotated: np.ndarray | None = None  # (H, W) bool

    @property
    def shape(self) -> tuple[int, int]:
        return self.mask.shape

    def target(self) -> np.ndarray:
        """The class indices with ``IGNORE`` where nothing is annotated."""
        return with_ignore(self.mask, self.annotated)

    def crop(self, key: tuple[slice, slice], source: str | None = None) -> Sample:
        """A copy of the part ``key`` (rows, columns) of this sample."""
        return Sample(
            np.ascontiguousarray(self.image[(slice(None), *key)]),
            np.ascontiguousarray(self.mask[key]),
            source or self.source,
            self.background,
            None if self.annotated is None else self.annotated[key].copy(),
        )


def extract_slices(
    pairs: Sequence[TrainingPair | AnnotatedSlice],
    annotation: str = 'dense',
) -> list[AnnotatedSlice]:
    """The annotated and background slices of every pair, copied.

    Already extracted slices pass through unchanged.  Raises ``ValueError``
    naming the pair when shapes disagree, labels are not integers or
    negative, a background slice carries labels, or a pair has nothing
    marked at all (``annotation`` only words that message).
    """
    check_annotation(annotation)
    if isinstance(pairs, (TrainingPair, AnnotatedSlice)):
        pairs = [pairs]
    if not pairs:
        raise ValueError('no training data: give at least one image with labels')
    out: list[AnnotatedSlice] = []
    for i, pair in enumerate(pairs):
        if isinstance(pair, AnnotatedSlice):
            out.append(pair)
        elif isinstance(pair, TrainingPair):
            name = pair.name or f'image {i + 1}'
            out.extend(_extract_pair(pair, name, annotation))
        else:
            raise TypeError(
                f'training data item {i} is a {type(pair).__name__}; wrap arrays '
                'in TrainingPair(image, labels)'
            )
    return out


def _extract_pair(
    pair: TrainingPair, name: str, annotation: str
) -> list[AnnotatedSlice]:
    try:
        layout = image_layout(
            np.shape(pair.image), pair.channel_axis, pair.slice_axis, pair.rgb
        )
    except ValueError as err:
        raise ValueError(f'{name}: {err}') from None
    labels = _integer_labels(pair.labels, name)
    spatial = layout.spatial_shape
    if labels.shape != spatial:
        chan = (
            f' (channel axis {layout.channel_axis} removed)'
            if layout.channel_axis is not None
            else ''
        )
        raise ValueError(
            f'{name}: the labels have shape {labels.shape} but the image '
            f'{tuple(np.shape(pair.image))} has spatial shape {spatial}{chan}; '
            'pair each image with the labels drawn on it'
        )
    pos = slice_position(layout)
    stack = labels[None] if pos is None else np.moveaxis(labels, pos, 0)
    n = stack.shape[0]
    annotated = np.flatnonzero(stack.reshape(n, -1).any(axis=1))
    background = _background_slices(pair.background_slices, n, name, pos is None)
    clash = sorted(set(background) & set(annotated.tolist()))
    if clash:
        raise ValueError(
            f'{name}: slice(s) {_short(clash)} are marked as background only but '
            'have labels; erase the labels or unmark them'
        )
    if not len(annotated) and not background and annotation == 'sparse':
        what = 'the image has no scribble' if pos is None else 'no slice has a scribble'
        raise ValueError(
            f'{name}: {what} (sparse annotation: 0 = not annotated); paint a '
            'few strokes of background with 1 and of the objects with 2 '
            '(class k with k + 1)'
        )
    if not len(annotated) and not background:
        what = 'the image has no labels' if pos is None else 'no slice has a label'
        raise ValueError(
            f'{name}: {what}; draw the objects on at least one slice, or mark '
            'slices that contain none as background'
        )
    channel_map = None if pair.channel_map is None else tuple(pair.channel_map)
    out = []
    for z in sorted({*annotated.tolist(), *background}):
        source = name if pos is None else f'{name} slice {z}'
        out.append(
            AnnotatedSlice(
                image=np.array(layout.plane(pair.image, z), copy=True),
                labels=np.array(stack[z], copy=True),
                source=source,
                background=z in background,
                rgb=layout.rgb,
                channel_map=channel_map,
                from_volume=pos is not None,
            )
        )
    return out


def _integer_labels(labels: Any, name: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.dtype == bool:
        return labels.astype(np.uint8)
    if np.issubdtype(labels.dtype, np.floating):
        finite = np.isfinite(labels)
        if not finite.all() or not np.array_equal(labels, np.round(labels)):
            raise ValueError(
                f'{name}: labels must be whole numbers (a Labels layer), got '
                f'{labels.dtype} values with fractions or NaN'
            )
        labels = labels.astype(np.int64)
    elif not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f'{name}: labels must be integers, got {labels.dtype}')
    if labels.size and labels.min() < 0:
        raise ValueError(
            f'{name}: labels contain negative values ({labels.min()}); use 0 for '
            'background and positive numbers for objects or classes'
        )
    return labels


def _background_slices(
    given: Sequence[int], n: int, name: str, flat: bool
) -> list[int]:
    out = []
    for z in given:
        if isinstance(z, bool) or not isinstance(z, (int, np.integer)):
            raise ValueError(f'{name}: background slice {z!r} is not an index')
        if not 0 <= z < n:
            what = 'a 2-D image has only slice 0' if flat else f'it has {n} slices'
            raise ValueError(f'{name}: background slice {z} does not exist ({what})')
        out.append(int(z))
    return sorted(set(out))


def _short(items: Sequence[int], limit: int = 8) -> str:
    shown = ', '.join(map(str, items[:limit]))
    return shown + (f' and {len(items) - limit} more' if len(items) > limit else '')


def data_channels(slices: Sequence[AnnotatedSlice]) -> int | None:
    """The input-channel count the data suggests for a new model: 3 for
    grey or RGB (grey is repeated, as the original does), else the channel
    count shared by all images; ``None`` when they differ."""
    counts = set()
    for s in slices:
        c = len(s.channel_map) if s.channel_map else s.image.shape[0]
        counts.add(3 if c == 1 or (s.rgb and c in (3, 4)) else c)
    return counts.pop() if len(counts) == 1 else None


def prepare_samples(
    slices: Sequence[AnnotatedSlice],
    *,
    num_classes: int,
    input_channels: int,
    normalization: dict | None,
    class_names: Sequence[str] | None = None,
    annotation: str = 'dense',
) -> list[Sample]:
    """Normalise, map channels and turn labels into class targets.

    ``normalization`` is the same spec inference uses (checkpoint metadata).
    ``annotation='sparse'``: labels are scribbles (0 = not annotated); a
    slice declared background-only is background everywhere.
    """
    check_annotation(annotation)
    samples = []
    for s in slices:
        try:
            x = normalize(s.image, normalization)
            x = map_channels(x, input_channels, s.channel_map, rgb=s.rgb)
        except ValueError as err:
            raise ValueError(f'{s.source}: {err}') from None
        annotated = None
        if annotation == 'sparse' and s.background:
            mask = np.zeros(s.labels.shape, np.uint8)
        elif annotation == 'sparse':
            mask, annotated = sparse_targets(
                s.labels, num_classes, class_names=class_names, source=s.source
            )
        else:
            mask = _targets(s, num_classes, class_names)
        missing = missing_data(s.image)
        if missing is not None:  # no value, nothing to learn: left out
            annotated = ~missing if annotated is None else annotated & ~missing
        samples.append(
            Sample(
                image=np.ascontiguousarray(x, dtype=np.float32),
                mask=mask,
                source=s.source,
                background=s.background,
                annotated=annotated,
            )
        )
    return samples


def missing_data(image: np.ndarray) -> np.ndarray | None:
    """``(H, W)``: the pixels of a ``(C, H, W)`` slice without a finite
    value in some channel, or None when every pixel has one.  Training
    leaves them out of the loss and the validation Dice (the network sees
    them as the nearest finite extreme, which no label describes)."""
    if not np.issubdtype(image.dtype, np.floating):
        return None
    bad = ~np.isfinite(image).all(axis=0)
    return bad if bad.any() else None


def inspect_slices(
    slices: Sequence[AnnotatedSlice], normalization: dict | None
) -> list[str]:
    """Refuse slices a network cannot learn from (complex, no finite value);
    return warnings about the others (NaN/inf pixels, outliers that ruin
    min-max normalisation), one per kind, naming the slices."""
    found: dict[str, list[str]] = {}
    for s in slices:
        report = inspect_intensities(s.image, normalization=normalization, name='it')
        if report.nonfinite_fraction == 1.0 or any(
            'complex' in e for e in report.errors
        ):
            raise UnusableImageError(f'{s.source}: {" ".join(report.errors)}')
        if report.nonfinite_fraction > 0:
            found.setdefault('nan', []).append(s.source)
        if report.outliers and any('min-max' in w for w in report.warnings):
            found.setdefault('outliers', []).append(s.source)
    notes = []
    if 'nan' in found:
        notes.append(
            f'{_short(found["nan"])}: some pixels are NaN or infinite (missing '
            'data); they are left out of the loss and the validation Dice.'
        )
    if 'outliers' in found:
        notes.append(
            f'{_short(found["outliers"])}: a few pixels lie far outside the '
            'rest, so per-image min-max normalisation squeezes the image into a '
            'small part of the input range; train with percentile normalisation '
            '(normalization "percentile") or clip the outliers.'
        )
    return notes


def _targets(s: AnnotatedSlice, num_classes: int, names: Sequence[str] | None):
    labels = s.labels
    if num_classes == 1:
        return (labels > 0).astype(np.uint8)
    top = int(labels.max()) if labels.size else 0
    if top >= num_classes:
        classes = ', '.join(
            f'{i} {names[i]}' if names else str(i) for i in range(num_classes)
        )
        hint = (
            ' For instance labels (one id per object) train a one-class model '
            '(num_classes=1): every non-zero label is then foreground.'
            if top > 2 * num_classes
            else ''
        )
        raise ValueError(
            f'{s.source}: the labels contain the value {top}, but the model '
            f'has {num_classes} classes ({classes}); relabel, or train with '
            f'num_classes={top + 1}.{hint}'
        )
    return labels.astype(np.uint8 if num_classes <= 256 else np.int16)


def pad_for_tiles(sample: Sample, tile: int) -> Sample:
    """The sample mirror-padded (bottom/right) to at least one tile per side,
    as the predictor pads small images; the mask is padded the same way."""
    h, w = sample.shape
    ph, pw = max(h, tile), max(w, tile)
    if (ph, pw) == (h, w):
        return sample
    annotated = sample.annotated
    return dataclasses.replace(
        sample,
        image=pad_to(sample.image, ph, pw),
        mask=pad_to(sample.mask[None], ph, pw)[0],
        annotated=None if annotated is None else pad_to(annotated[None], ph, pw)[0],
    )


def tiles_to_cover(samples: Sequence[Sample], tile: int) -> int:
    """How many tiles cover the samples once (the default epoch length)."""
    return sum(
        math.ceil(s.shape[0] / tile) * math.ceil(s.shape[1] / tile) for s in samples
    )


class TileDataset(torch.utils.data.Dataset):
    """Random augmented tiles from training samples; item ``i`` of epoch
    ``e`` is a pure function of ``(seed, e, i)``.

    That makes a run reproducible, lets a resumed run continue with the very
    tiles the interrupted one would have drawn, and lets data-loader workers
    and DDP ranks draw disjoint index ranges without coordinating RNGs.
    Samples are picked in proportion to their area.  Call
    :meth:`set_epoch` before each epoch (as with ``DistributedSampler``).

    Sparse samples yield targets with ``IGNORE`` at unannotated pixels, and
    every tile is centred on a stroke (a share of them on an object stroke,
    the rest on any), so no step is spent on a tile with nothing painted.
    """

    #: foreground pixels remembered per sample for object-centred crops
    MAX_FOREGROUND_POINTS = 20_000

    def __init__(
        self,
        samples: Sequence[Sample],
        tile: int,
        length: int,
        seed: int,
        augment: AugmentConfig | None = None,
    ):
        if not samples:
            raise ValueError('no training samples')
        self.samples = [pad_for_tiles(s, tile) for s in samples]
        self.tile = tile
        self.length = int(length)
        self.seed = int(seed)
        self.augment = augment or AugmentConfig.off()
        self.epoch = 1
        areas = np.array([s.mask.size for s in self.samples], dtype=np.float64)
        self.weights = areas / areas.sum()
        rng = np.random.default_rng([self.seed, 0])
        self.foreground = [self._points(s.mask, rng) for s in self.samples]
        self.strokes = [
            None if s.annotated is None else self._points(s.annotated, rng)
            for s in self.samples
        ]
        self.targets = [s.target() for s in self.samples]
        self.ranges = [
            (float(s.image.min()), float(s.image.max())) for s in self.samples
        ]

    def _points(self, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Flat indices of ``mask``'s pixels, at most MAX_FOREGROUND_POINTS."""
        points = np.flatnonzero(mask)
        if len(points) > self.MAX_FOREGROUND_POINTS:
            points = rng.choice(points, self.MAX_FOREGROUND_POINTS, replace=False)
        return points

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        k = int(rng.choice(len(self.samples), p=self.weights))
        s = self.samples[k]
        return random_tile(
            s.image,
            self.targets[k],
            self.tile,
            rng,
            self.augment,
            foreground=self.foreground[k],
            value_range=self.ranges[k],
            annotated=self.strokes[k],
        )
