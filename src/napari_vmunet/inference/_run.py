"""What one prediction run keeps between its batches of windows.

:meth:`~napari_vmunet.inference.Predictor.iter_predict` batches windows
across consecutive slices, so a slice is read when its first window enters
a batch and finished when its last one comes back.  The pieces here hold
that state, so the Predictor's loop reads as the steps of a run: read a
slice, run a batch, write the slices that are complete.

* :class:`RunOutputs`: the arrays the run fills (labels, probabilities,
  uncertainty), and how a finished slice is written into them;
* :class:`SliceInFlight`: a slice whose windows are still coming back;
* :class:`Pace`: the time left, from the pace so far.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from ..rules.layout import ImageLayout, slice_position
from ..rules.tiled_prediction import BlendedSlice
from .uncertainty import pixel_uncertainty


@dataclass
class SliceInFlight:
    """A slice read and normalised, whose window outputs are being blended."""

    blend: BlendedSlice
    #: its pixels that are NaN or infinite in a channel, when those are to be
    #: background (``nonfinite_background``); None otherwise or if none
    missing: np.ndarray | None
    #: one value throughout (air around a head): nothing to annotate there
    blank: bool


@dataclass
class RunOutputs:
    """The arrays a run fills, with views that put the slice axis first
    (a leading axis of length 1 for a 2-D image), so slice ``z`` is
    ``view[z]`` whatever the image's layout."""

    num_classes: int
    threshold: float
    labels: np.ndarray
    probabilities: np.ndarray | None
    uncertainty: np.ndarray | None
    slice_uncertainty: np.ndarray | None
    _labels: np.ndarray
    _probabilities: np.ndarray | None
    _uncertainty: np.ndarray | None

    @classmethod
    def allocate(
        cls,
        layout: ImageLayout,
        num_classes: int,
        threshold: float,
        probability_dtype: type,
        *,
        probabilities: bool,
        uncertainty: bool,
    ) -> RunOutputs:
        spatial = layout.spatial_shape
        k = num_classes
        labels = np.zeros(spatial, dtype=np.uint8 if k < 255 else np.uint16)
        probs = unc = slice_unc = None
        if probabilities:
            probs = np.zeros(((k,) if k > 1 else ()) + spatial, dtype=probability_dtype)
        if uncertainty:
            unc = np.zeros(spatial, dtype=np.float16)
            slice_unc = np.full(layout.n_slices, np.nan)
        return cls(
            k,
            threshold,
            labels,
            probs,
            unc,
            slice_unc,
            _slice_first(labels, layout),
            _slice_first(probs, layout, offset=1 if k > 1 else 0),
            _slice_first(unc, layout),
        )

    def write(self, z: int, p: torch.Tensor, state: SliceInFlight) -> None:
        """Write slice ``z`` from its probabilities ``p`` ``(K, h, w)``."""
        one_class = self.num_classes == 1
        if state.missing is not None:  # missing data is background, for certain
            bad = torch.from_numpy(state.missing).to(p.device)
            p = p.clone()
            p[:, bad] = 0.0
            if not one_class:
                p[0, bad] = 1.0
        if one_class:
            self._labels[z] = (p[0] >= self.threshold).cpu().numpy()
        else:
            # max().indices is argmax (the first maximum on ties); argmax
            # over a short class axis takes a slow path on CPUs: 10 ms
            # against 0.6 ms for a 3 x 233 x 197 slice, 5 % of a brain run
            self._labels[z] = p.max(0).indices.cpu().numpy()
        if self._probabilities is not None:
            self._probabilities[z] = (p[0] if one_class else p).cpu().numpy()
        if self._uncertainty is not None:
            # from the probabilities as written, missing data included
            u = pixel_uncertainty(p, one_class=one_class)
            # a blank slice (air around a head) has nothing to annotate: it
            # gets no score and is never suggested
            self.slice_uncertainty[z] = np.nan if state.blank else float(u.mean())
            self._uncertainty[z] = u.cpu().numpy()


class Pace:
    """The time left, from the pace since the first batch: that one carries
    one-off costs (imports, allocations, the first forward's set-up) that
    would make every estimate too long."""

    def __init__(self) -> None:
        self._warm = 0  # windows done by the end of the first batch
        self._since = 0.0

    def seconds_left(self, done: int, total: int) -> float | None:
        """None until there is a pace to go by."""
        if not self._warm:
            return None
        pace = (time.perf_counter() - self._since) / max(done - self._warm, 1)
        return pace * (total - done)

    def first_batch_done(self, done: int) -> None:
        """Start the clock (once) after the first batch has been reported."""
        if not self._warm:
            self._warm, self._since = done, time.perf_counter()


def _slice_first(array: np.ndarray | None, layout: ImageLayout, offset: int = 0):
    if array is None:
        return None
    pos = slice_position(layout)
    if pos is None:
        return array[None]
    return np.moveaxis(array, pos + offset, 0)
