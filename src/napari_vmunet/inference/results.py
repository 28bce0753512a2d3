"""What a prediction yields and returns: :class:`Progress` after every batch
of windows, a :class:`PredictionResult` at the end, :class:`Cancelled` when
a caller's ``should_cancel`` stopped it.

Kept apart from the Predictor so that the front ends (the CLI's progress
bar, the inference dock, a notebook) depend on these small types, not on the
machinery that produces them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._text import format_duration
from .uncertainty import SliceRanking


class Cancelled(Exception):
    """Raised by :meth:`Predictor.predict` when ``should_cancel`` said so."""


@dataclass
class Progress:
    """One step of a prediction, as yielded by :meth:`Predictor.iter_predict`."""

    done: int  # tiles processed so far
    total: int  # tiles in the whole job
    slices_done: int
    slices_total: int
    message: str = ''
    #: what the user should know before the result arrives (the first
    #: Progress of a run carries the warnings found up front)
    warnings: tuple[str, ...] = ()
    #: estimated time to the end, from the pace so far (None: no pace yet)
    seconds_left: float | None = None

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0

    def describe(self) -> str:
        """``'slice 3/48, tile 3/48, about 40 s left'`` for a status line."""
        parts = [self.message] if self.message else []
        if self.slices_total > 1:
            parts.append(f'slice {self.slices_done}/{self.slices_total}')
        parts.append(f'tile {self.done}/{self.total}')
        if self.seconds_left is not None and self.done < self.total:
            parts.append(f'about {format_duration(self.seconds_left)} left')
        return ', '.join(parts)


@dataclass
class PredictionResult:
    labels: np.ndarray  # spatial shape of the input (channels removed)
    probabilities: (
        np.ndarray | None
    )  # float16; (K, *spatial) or (*spatial) for one class
    class_names: list[str]
    device: str  # where it finally ran
    seconds: float
    warnings: list[str] = field(default_factory=list)
    #: with ``return_uncertainty``: the per-pixel uncertainty (normalised
    #: entropy, 0 certain .. 1 a coin toss; float16, spatial shape) and
    #: its mean per slice (``inference.uncertainty``)
    uncertainty: np.ndarray | None = None
    slice_uncertainty: np.ndarray | None = None
    #: the axis of ``labels`` the slices were predicted along (None: 2-D)
    slice_axis: int | None = None

    def ranking(self, annotated: Any = ()) -> SliceRanking:
        """The slices to annotate next, most uncertain first, without the
        ``annotated`` ones (slice indices, or a labels array whose slices
        with any label count as annotated).  Needs ``return_uncertainty``."""
        from .uncertainty import annotated_slices, rank_slices

        if self.slice_uncertainty is None:
            raise ValueError(
                'this prediction has no uncertainty: predict with '
                'return_uncertainty=True (CLI: --uncertainty)'
            )
        if np.ndim(annotated) > 1:  # a labels array
            if np.shape(annotated) != self.labels.shape:
                raise ValueError(
                    f'annotations of shape {np.shape(annotated)} do not match '
                    f'the prediction, {self.labels.shape}'
                )
            annotated = annotated_slices(annotated, self.slice_axis)
        return rank_slices(self.slice_uncertainty, annotated)
