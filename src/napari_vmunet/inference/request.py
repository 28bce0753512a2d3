"""A prediction as a user asks for it: the request and its generator.

The inference dock, a notebook and tests share this path: a
:class:`PredictionRequest` says what to predict (the whole image, the
current plane of a volume, one or every time point of a 4-D stack) and
with which settings; :func:`iter_request` runs it, yielding the
Predictor's :class:`~.predictor.Progress`, and returns a
:class:`RequestResult` that says where its labels go in the full output.
The dock only turns its widgets into a request and the events into layers.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..rules.tiling import DEFAULT_OVERLAP
from .predictor import Predictor
from .results import PredictionResult, Progress


@dataclass(frozen=True)
class PredictionRequest:
    """What to predict and how (axes are axes of the image's data)."""

    checkpoint: str
    device: str = 'auto'
    tile_size: int | None = None  # None: chosen per image and device; 0: whole
    batch_size: int | None = None
    overlap: float = DEFAULT_OVERLAP
    threshold: float = 0.5
    #: None: the checkpoint's own; a dict overrides it (the model's output
    #: range is kept unless the dict names one)
    normalization: dict | None = None
    nonfinite_background: bool = False  # NaN/inf pixels get label 0
    rgb: bool = False
    channel_axis: int | None = None
    slice_axis: int | None = None
    channel_map: tuple[int, ...] | None = None
    #: only this plane along ``slice_axis`` (the one the viewer shows)
    slice_index: int | None = None
    #: an axis of time points (a 4-D stack), predicted one at a time ...
    time_axis: int | None = None
    #: ... only this one; None: every time point
    time_index: int | None = None
    probabilities: bool = False
    #: the uncertainty map and slice ranking (``inference.uncertainty``);
    #: a 4-D stack's time points have none
    uncertainty: bool = False

    def predictor_settings(self) -> tuple:
        """What a :class:`Predictor` is built from: a request with the same
        settings reuses the loaded one."""
        return (
            self.device,
            self.tile_size,
            self.batch_size,
            self.overlap,
            self.threshold,
            _frozen(self.normalization),
            self.nonfinite_background,
        )

    def make_predictor(self, checkpoint: Any) -> Predictor:
        return Predictor(
            checkpoint,
            device=self.device,
            tile_size=self.tile_size,
            batch_size=self.batch_size,
            overlap=self.overlap,
            threshold=self.threshold,
            normalization=self.normalization,
            nonfinite_background=self.nonfinite_background,
        )

    def output_axes(self, ndim: int) -> list[int]:
        """The data axes that the labels keep (all but the channels)."""
        channels = ndim - 1 if self.rgb else self.channel_axis
        return [i for i in range(ndim) if i != channels]

    def output_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        """The shape of the full labels for an image of ``shape``."""
        return tuple(int(shape[i]) for i in self.output_axes(len(shape)))

    def parts(self, shape: Sequence[int]) -> list[_Part]:
        """The separate predictions the request takes, in order."""
        ndim = len(shape)
        fixed: dict[int, list[int]] = {}
        if self.time_axis is not None:
            t = self.time_axis % ndim
            count = int(shape[t])
            if self.time_index is not None and not 0 <= self.time_index < count:
                raise ValueError(
                    f'time point {self.time_index} is out of range (0-{count - 1})'
                )
            fixed[t] = (
                list(range(count)) if self.time_index is None else [self.time_index]
            )
        if self.slice_index is not None and self.slice_axis is not None:
            fixed[self.slice_axis % ndim] = [self.slice_index]
        if not fixed:
            return [_Part((), (), self.channel_axis, self.slice_axis, self.rgb)]
        kept = self.output_axes(ndim)
        parts = []
        for values in np.ndindex(*(len(v) for v in fixed.values())):
            point = {a: fixed[a][i] for a, i in zip(fixed, values, strict=True)}
            data_key = tuple(point.get(a, slice(None)) for a in range(ndim))
            out_key = tuple(point.get(a, slice(None)) for a in kept)

            parts.append(
                _Part(
                    data_key,
                    out_key,
                    _after_indexing(_positive(self.channel_axis, ndim), point),
                    _after_indexing(_positive(self.slice_axis, ndim), point),
                    self.rgb,
                )
            )
        return parts

    @property
    def covers_everything(self) -> bool:
        """Whether the result replaces the whole output (not one plane)."""
        return self.slice_index is None and self.time_index is None


@dataclass(frozen=True)
class _Part:
    data_key: tuple  # index into the image's data
    out_key: tuple  # index into the full labels
    channel_axis: int | None  # axes of data[data_key]
    slice_axis: int | None
    rgb: bool


@dataclass
class RequestResult:
    """The prediction of a request; ``labels`` fill ``full[region]`` of the
    full output (``region == ()``: the whole of it)."""

    prediction: PredictionResult
    region: tuple

    def merge_into(self, full: np.ndarray) -> np.ndarray:
        """``full`` with this result's labels in its region."""
        if self.region == ():
            return self.prediction.labels
        full[self.region] = self.prediction.labels
        return full


def iter_request(
    request: PredictionRequest, data: Any, predictor: Predictor
) -> Generator[Progress, None, RequestResult]:
    """Run ``request`` on ``data`` (numpy, dask or zarr): yields Progress
    across all its parts and returns the :class:`RequestResult`."""
    parts = request.parts(np.shape(data))
    if len(parts) == 1:
        part = parts[0]
        image = data[part.data_key] if part.data_key else data
        result = yield from _predict(predictor, request, part, image)
        return RequestResult(result, part.out_key)
    return (yield from _iter_parts(request, data, predictor, parts))


def _iter_parts(request, data, predictor, parts) -> Generator:
    """Every time point of a stack, one after the other, into one output."""
    shape = request.output_shape(np.shape(data))
    labels = probs = None
    warnings: list[str] = []
    seconds = 0.0
    n = len(parts)
    start = time.perf_counter()
    for i, part in enumerate(parts):
        gen = _predict(predictor, request, part, data[part.data_key])
        try:
            while True:
                step = next(gen)
                # every time point has the same tiles: count over all of them
                done, total = i * step.total + step.done, n * step.total
                left = step.seconds_left
                if i > 0 and done:
                    left = (time.perf_counter() - start) / done * (total - done)
                yield dataclasses.replace(
                    step,
                    done=done,
                    total=total,
                    message=f'time point {i + 1}/{n}',
                    warnings=step.warnings if i == 0 else (),
                    seconds_left=left,
                )
        except StopIteration as stop:
            result: PredictionResult = stop.value
        if labels is None:
            labels = np.zeros(shape, dtype=result.labels.dtype)
            if result.probabilities is not None:
                extra = result.probabilities.shape[: -len(result.labels.shape)] or ()
                probs = np.zeros(extra + shape, dtype=result.probabilities.dtype)
        labels[part.out_key] = result.labels
        if probs is not None:
            probs[(slice(None),) * (probs.ndim - len(shape)) + part.out_key] = (
                result.probabilities
            )
        warnings += [w for w in result.warnings if w not in warnings]
        seconds += result.seconds
    final = dataclasses.replace(
        result,
        labels=labels,
        probabilities=probs,
        seconds=seconds,
        warnings=warnings,
        # one time point's ranking is not the stack's
        uncertainty=None,
        slice_uncertainty=None,
        slice_axis=None,
    )
    return RequestResult(final, ())


def _predict(predictor, request, part, image) -> Generator:
    return predictor.iter_predict(
        image,
        channel_axis=part.channel_axis,
        slice_axis=part.slice_axis,
        rgb=part.rgb,
        channel_map=request.channel_map,
        return_probabilities=request.probabilities,
        return_uncertainty=request.uncertainty,
    )


def _positive(axis: int | None, ndim: int) -> int | None:
    return None if axis is None else axis % ndim


def _after_indexing(axis: int | None, fixed: dict[int, int]) -> int | None:
    """Where ``axis`` is once the ``fixed`` axes are indexed away (None:
    gone, or never given)."""
    if axis is None or axis in fixed:
        return None
    return axis - sum(1 for a in fixed if a < axis)


def _frozen(value: Any) -> Any:
    """A hashable copy of a (nested) settings dict."""
    if isinstance(value, dict):
        return tuple(sorted((k, _frozen(v)) for k, v in value.items()))
    if isinstance(value, list):
        return tuple(_frozen(v) for v in value)
    return value
