"""Where to annotate next: slices ranked by the model's uncertainty.

After a prediction of a volume (or a stack of images) the slice the model
is least sure about is the one whose correction teaches it most.  The
per-pixel uncertainty is the *margin*: one minus the gap between the two
likeliest classes (``1 - |2p - 1|`` for a one-class model), so 0 means
certain and 1 means a coin toss, whatever the class count.  A slice's
score is the mean over its pixels.

Why the margin: ``benchmarks/nextslice.py --measures`` compared it with the
normalised entropy of the probabilities and with the disagreement between
the prediction and its flipped versions, by how well each orders the
slices of the brain volume by their actual error (docs/benchmarks.md).
The margin ordered them best (Spearman 0.98 against 0.94 for entropy) and
its first picks were as wrong as the flips' -- without the flips' two
extra predictions.

Slices that already carry annotations are left out of the ranking: the
same rule as training's (:func:`annotated_slices`: any non-zero label), so
in dense and sparse annotation alike a slice with strokes counts as done.

Pure numpy/torch, no Qt: the Predictor computes the map slice by slice
(``return_uncertainty=True``); the docks and the CLI only rank and show.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

#: the measures :func:`pixel_uncertainty` knows; the Predictor uses MEASURE
MEASURES = ('margin', 'entropy')
MEASURE = 'margin'
#: how many slices the docks show
DEFAULT_TOP = 3
_EPS = 1e-6


def pixel_uncertainty(
    probabilities: Any, one_class: bool, measure: str = MEASURE
) -> Any:
    """The uncertainty in [0, 1] of each pixel (0: certain, 1: a coin toss).

    ``measure``: ``'margin'``, one minus the gap between the two likeliest
    classes (one class: ``1 - |2p - 1|``); ``'entropy'``, the entropy of the
    class probabilities over ``log K`` (one class: binary entropy in bits).
    ``probabilities``: a torch tensor or numpy array, ``(K, ...)`` class
    probabilities, or for a one-class model ``(...)`` foreground
    probabilities (``one_class=True``).  Returns the spatial shape, of the
    same kind (torch in, torch out), float32.
    """
    if measure not in MEASURES:
        raise ValueError(
            f'unknown uncertainty measure {measure!r}; use one of {", ".join(MEASURES)}'
        )
    if isinstance(probabilities, np.ndarray):
        import torch

        with torch.inference_mode():
            t = torch.from_numpy(np.asarray(probabilities, dtype=np.float32))
            return pixel_uncertainty(t, one_class, measure).numpy()
    p = probabilities.float()
    if not one_class and p.shape[0] < 2:
        raise ValueError(
            'class probabilities need at least two classes along the first '
            f'axis; got shape {tuple(p.shape)} (one class: one_class=True)'
        )
    if measure == 'margin':
        if one_class:
            return 1.0 - (2.0 * p - 1.0).abs().clamp_(0.0, 1.0)
        top2 = p.topk(2, dim=0).values
        return (1.0 - (top2[0] - top2[1])).clamp_(0.0, 1.0)
    p = p.clamp(_EPS, 1.0 - _EPS)
    if one_class:
        h = -(p * p.log() + (1 - p) * (1 - p).log())
        return (h / math.log(2)).clamp_(0.0, 1.0)
    h = -(p * p.log()).sum(0)
    return (h / math.log(p.shape[0])).clamp_(0.0, 1.0)


def annotated_slices(labels: Any, slice_axis: int | None = 0) -> np.ndarray:
    """Indices of the slices along ``slice_axis`` with any non-zero label
    (the rule training uses, dense and sparse); ``[0]`` or ``[]`` for a 2-D
    image (``slice_axis=None``).  Reads one slice at a time (dask, zarr)."""
    if slice_axis is None:
        return np.flatnonzero([np.any(np.asarray(labels))])
    ndim = np.ndim(labels)
    if not -ndim <= slice_axis < ndim:
        raise ValueError(
            f'slice axis {slice_axis} does not exist in labels of shape '
            f'{np.shape(labels)}'
        )
    n = np.shape(labels)[slice_axis]
    key: list[Any] = [slice(None)] * ndim
    found = []
    for z in range(n):
        key[slice_axis] = z
        if np.any(np.asarray(labels[tuple(key)])):
            found.append(z)
    return np.asarray(found, dtype=np.int64)


@dataclass(frozen=True)
class SliceRanking:
    """Slices ordered by the model's uncertainty, most uncertain first.

    ``scores`` holds every slice's mean uncertainty (index = slice);
    ``order`` the candidate slices, most uncertain first, without the
    ``excluded`` (annotated) ones.
    """

    scores: np.ndarray
    order: np.ndarray
    excluded: tuple[int, ...] = ()
    measure: str = MEASURE

    def top(
        self, n: int = DEFAULT_TOP, *, spread: bool = True
    ) -> list[tuple[int, float]]:
        """``[(slice, score), ...]`` of the ``n`` most uncertain candidates.

        With ``spread`` (the default) the picks keep :meth:`gap` slices from
        each other and from the annotated slices, as long as enough
        candidates do: neighbouring slices look alike, so three suggestions
        side by side teach little more than one, and the loop benchmark
        found evenly spaced annotations at least as good as the most
        uncertain ones (docs/benchmarks.md, "Where to annotate next").
        """
        n = max(n, 0)
        picked: list[int] = []
        if spread:
            gap = self.gap(n)
            taken = list(self.excluded)
            for z in self.order:
                if len(picked) == n:
                    break
                if all(abs(int(z) - t) >= gap for t in taken):
                    picked.append(int(z))
                    taken.append(int(z))
        for z in self.order:  # too few far apart: the next most uncertain
            if len(picked) == n:
                break
            if int(z) not in picked:
                picked.append(int(z))
        return [(z, float(self.scores[z])) for z in picked]

    def gap(self, n: int = DEFAULT_TOP) -> int:
        """The spacing :meth:`top` keeps: the slices shared out evenly among
        the ``n`` picks and the annotated slices, halved (at least 1)."""
        share = len(self.scores) / (max(n, 1) + len(self.excluded))
        return max(1, int(share // 2))

    def rows(self) -> list[dict[str, Any]]:
        """One row per slice, ranked candidates first (rank 1, 2, ...), then
        the excluded slices (rank empty, ``annotated`` true)."""
        rows = [
            {
                'rank': i + 1,
                'slice': int(z),
                'uncertainty': float(self.scores[z]),
                'annotated': False,
            }
            for i, z in enumerate(self.order)
        ]
        rows += [
            {
                'rank': None,
                'slice': int(z),
                'uncertainty': float(self.scores[z]),
                'annotated': True,
            }
            for z in sorted(self.excluded)
        ]
        return rows

    @property
    def unscored(self) -> tuple[int, ...]:
        """Slices neither ranked nor annotated: those without a score (a
        blank slice, one value throughout, has nothing to annotate)."""
        ranked = {int(z) for z in self.order} | set(self.excluded)
        return tuple(z for z in range(len(self.scores)) if z not in ranked)

    def describe(self, n: int = DEFAULT_TOP) -> str:
        """``'Next to correct: slice 57 (uncertainty 0.31), ...'``."""
        top = self.top(n)
        if not top and self.unscored:
            return (
                'Every slice with content carries annotations (the others are '
                'blank): nothing left to suggest.'
            )
        if not top:
            return 'Every slice carries annotations: nothing left to suggest.'
        listed = ', '.join(f'slice {z} (uncertainty {s:.2f})' for z, s in top)
        return f'Next to correct: {listed}'


def rank_slices(
    scores: Any, annotated: Iterable[int] = (), *, measure: str = MEASURE
) -> SliceRanking:
    """Order slices by ``scores`` (higher = less certain), leaving out the
    ``annotated`` ones.  Ties keep the lower slice index first; a slice
    without a score (NaN) is never suggested."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    n = scores.size
    excluded = sorted({int(z) for z in annotated})
    outside = [z for z in excluded if not 0 <= z < n]
    if outside:
        raise ValueError(
            f'annotated slice(s) {outside} outside the {n} slice(s) predicted'
        )
    keep = np.ones(n, dtype=bool)
    keep[excluded] = False
    keep &= np.isfinite(scores)
    candidates = np.flatnonzero(keep)
    # stable sort on the negated score: ties in slice order
    order = candidates[np.argsort(-scores[candidates], kind='stable')]
    return SliceRanking(scores, order, tuple(excluded), measure)


def slice_means(values: np.ndarray, slice_axis: int | None) -> np.ndarray:
    """The mean of ``values`` over each slice along ``slice_axis`` (one
    value for a 2-D image, ``slice_axis=None``)."""
    values = np.asarray(values, dtype=np.float32)
    if slice_axis is None:
        return np.array([values.mean(dtype=np.float64)])
    moved = np.moveaxis(values, slice_axis, 0)
    return moved.reshape(moved.shape[0], -1).mean(axis=1, dtype=np.float64)
