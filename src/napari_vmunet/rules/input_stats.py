"""What a model's inputs looked like in training, and how far an image is.

A checkpoint that was trained on brain MRI slices returns grey/white-matter
labels on a nuclei image without complaint.  So training records a short
summary of the inputs the network saw (:func:`summarize_inputs`): whether
they were 2-D images or slices of volumes, the number of channels, and the
histogram of the *normalised* intensities (what the network actually sees,
after the checkpoint's own normalisation).  Inference compares an image's
summary, normalised the same way, with it (:func:`histogram_distance`).

The distance is the earth mover's distance between the two histograms, as
a share of the input range: 0 for the same distribution, 1 for all mass at
opposite ends.  It is cheap, needs no model, and separates the bundled
samples clearly (``docs/inference.md`` lists the figures).  It cannot tell
whether the *objects* are alike; it catches the gross mismatches a new
user meets first: the wrong kind of image or an intensity scale the model
has never seen.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

#: bins of the normalised-intensity histogram
BINS = 16
#: version of the summary's layout
STATS_VERSION = 1
#: at most this many pixels per image enter a histogram (a regular subsample)
_MAX_PIXELS = 250_000


def histogram(
    images: Iterable[np.ndarray], value_range: tuple[float, float]
) -> list[float]:
    """The pooled histogram (shares summing to 1) of normalised images over
    ``value_range``; values outside it fall into the end bins."""
    lo, hi = value_range
    counts = np.zeros(BINS, dtype=np.float64)
    for image in images:
        flat = np.asarray(image, dtype=np.float32).reshape(-1)
        step = max(1, flat.size // _MAX_PIXELS)
        flat = flat[::step]
        flat = flat[np.isfinite(flat)]
        if not flat.size:
            continue
        idx = ((flat - lo) / max(hi - lo, 1e-12) * BINS).astype(np.int64)
        counts += np.bincount(np.clip(idx, 0, BINS - 1), minlength=BINS)
    total = counts.sum()
    return (counts / total).tolist() if total else [0.0] * BINS


def summarize_inputs(
    images: Iterable[np.ndarray],
    *,
    kind: str,
    channels: int,
    value_range: tuple[float, float],
) -> dict[str, Any]:
    """The summary training stores with a checkpoint.

    ``images``: the normalised network inputs, ``(C, H, W)`` each.
    ``kind``: ``'2d'`` (single images), ``'volume'`` (slices of volumes) or
    ``'mixed'``.  ``channels``: channels of the raw data (3 for RGB).
    """
    images = list(images)
    return {
        'version': STATS_VERSION,
        'kind': kind,
        'channels': int(channels),
        'images': len(images),
        'range': [float(value_range[0]), float(value_range[1])],
        'histogram': histogram(images, value_range),
    }


def check_stats(stats: Any) -> dict[str, Any] | None:
    """``stats`` when it is a summary this version understands, else None
    (a newer or damaged entry is ignored: it only informs warnings)."""
    if not isinstance(stats, Mapping) or stats.get('version') != STATS_VERSION:
        return None
    hist = stats.get('histogram')
    rng = stats.get('range')
    ok = (
        stats.get('kind') in ('2d', 'volume', 'mixed')
        and isinstance(stats.get('channels'), int)
        and isinstance(hist, list)
        and len(hist) == BINS
        and all(isinstance(v, (int, float)) and 0 <= v <= 1 for v in hist)
        and abs(sum(hist) - 1) < 1e-3
        and isinstance(rng, list)
        and len(rng) == 2
        and all(isinstance(v, (int, float)) and np.isfinite(v) for v in rng)
        and rng[0] < rng[1]
    )
    return dict(stats) if ok else None


@dataclass(frozen=True)
class InputStats:
    """A training-input summary read by name (the checkpoint stores the
    dict of :func:`summarize_inputs`; :meth:`to_dict` gives it back)."""

    kind: str  # '2d', 'volume' or 'mixed'
    channels: int  # of the raw data
    images: int  # how many network inputs were summarised
    range: tuple[float, float]  # the normalised range the histogram spans
    histogram: tuple[float, ...]  # BINS shares summing to 1
    version: int = STATS_VERSION

    @classmethod
    def from_dict(cls, raw: Any) -> InputStats | None:
        """The summary in ``raw``, or None when :func:`check_stats` does not
        understand it (a newer or damaged entry only loses the warnings)."""
        stats = check_stats(raw)
        if stats is None:
            return None
        return cls(
            kind=stats['kind'],
            channels=stats['channels'],
            images=stats.get('images', 0),
            range=(stats['range'][0], stats['range'][1]),
            histogram=tuple(stats['histogram']),
            version=stats['version'],
        )

    def to_dict(self) -> dict[str, Any]:
        """The stored form (the keys and order of :func:`summarize_inputs`)."""
        return {
            'version': self.version,
            'kind': self.kind,
            'channels': self.channels,
            'images': self.images,
            'range': list(self.range),
            'histogram': list(self.histogram),
        }


def histogram_distance(a: Iterable[float], b: Iterable[float]) -> float:
    """Earth mover's distance between two histograms over the same bins, as
    a share of the range (0 = same, 1 = opposite ends)."""
    a, b = np.asarray(list(a), dtype=np.float64), np.asarray(list(b), dtype=np.float64)
    if a.sum() <= 0 or b.sum() <= 0:
        return 1.0
    cdf = np.cumsum(a / a.sum() - b / b.sum())
    return float(np.abs(cdf[:-1]).sum() / (len(a) - 1))
