"""Is an image usable as the network's input?  Said before a run, not after.

A network fed an unusable image still returns *something*, and a blank or
degraded result that looks plausible is the worst outcome.  So images are
inspected before prediction and training:

* **errors** (nothing sensible can come out): complex values, no finite
  value at all (all NaN/inf), a constant image;
* **warnings** (the result may be degraded, and the message says how to fix
  it): some NaN/inf pixels, and outliers that ruin per-image min-max
  normalisation -- one pixel at ten times the maximum squeezes everything
  else into a tenth of the input range and halves the foreground.

In-memory arrays are inspected before a run, in full for min/max/NaN
(cheap) and on a regular subsample for percentiles.  Lazy arrays (dask,
zarr) are read plane by plane exactly once, so they are inspected as their
planes arrive (:class:`PlaneInspector`) and reported at the end.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

#: percentiles that bound "the bulk" of the intensities
BULK = (0.1, 99.9)
#: outliers: the tail beyond the bulk spans more than this times the bulk
#: (natural images, CT with metal and the bundled samples stay below 0.7)
OUTLIER_RATIO = 1.0
_PERCENTILE_SAMPLE = 2_000_000


class UnusableImageError(ValueError):
    """An image the network cannot make sense of; the message says why."""


@dataclass(frozen=True)
class IntensityReport:
    """What :func:`inspect_intensities` found."""

    errors: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    nonfinite_fraction: float = 0.0
    low: float | None = None  # finite minimum
    high: float | None = None  # finite maximum
    bulk: tuple[float, float] | None = None  # BULK percentiles
    outliers: bool = False

    def raise_errors(self) -> None:
        """Raise :class:`UnusableImageError` when there is an error."""
        if self.errors:
            raise UnusableImageError(' '.join(self.errors))


def complex_message(name: str, dtype: Any) -> str:
    return (
        f'{name} is complex-valued ({dtype}); a network takes real intensities: '
        'use its magnitude (numpy.abs) or its real part'
    )


def nonfinite_note(fraction: float, name: str, as_background: bool) -> str:
    """What the user should know about NaN/inf pixels, and the fix."""
    share = f'{100 * fraction:.3g} % of the pixels of {name} are NaN or infinite'
    if as_background:
        return f'{share}; they are labelled background, as asked.'
    return (
        f'{share}; they are treated as the darkest (NaN, -inf) or brightest '
        '(+inf) finite value, which can distort the result there. If they mark '
        "missing data, label them background (the dock's option 'NaN / Inf "
        "pixels are background', predict --nonfinite-background) or crop them "
        'away first.'
    )


def inspect_intensities(
    image: Any,
    *,
    normalization: dict | None = None,
    name: str = 'the image',
    nonfinite_background: bool = False,
) -> IntensityReport:
    """Errors and warnings about ``image`` (any layout, numpy or lazy).

    ``normalization`` (the checkpoint's) decides whether outliers matter:
    they ruin ``minmax`` only; ``nonfinite_background`` whether NaN/inf
    pixels are labelled background (else the warning offers it).
    """
    dtype = np.dtype(getattr(image, 'dtype', np.float32))
    if np.issubdtype(dtype, np.complexfloating):
        return IntensityReport(errors=(complex_message(name, dtype) + '.',))
    if dtype.kind == 'b':
        return IntensityReport()
    if not np.issubdtype(dtype, np.number):
        return IntensityReport(
            errors=(f'{name} has dtype {dtype}, not numbers; convert it first.',)
        )
    values = _values(image)
    if not np.issubdtype(values.dtype, np.floating):  # integers are finite
        return _report(values, 0.0, normalization, name, nonfinite_background)
    good = np.isfinite(values)
    bad_fraction = 1.0 - float(good.mean()) if values.size else 0.0
    finite = values if bad_fraction == 0 else values[good]
    if finite.size == 0:
        message = (
            f'{name} has no finite value (every pixel is NaN or infinite), so '
            'there is nothing to segment; check how it was exported.'
        )
        return IntensityReport(errors=(message,), nonfinite_fraction=1.0)
    return _report(finite, bad_fraction, normalization, name, nonfinite_background)


def _values(image: Any) -> np.ndarray:
    return np.asarray(image).reshape(-1)


class PlaneInspector:
    """:func:`inspect_intensities` for an image read plane by plane.

    Errors only when *every* plane is unusable (a volume may well hold a few
    empty slices); NaN/inf and outlier warnings for the whole image.
    """

    def __init__(
        self,
        normalization: dict | None = None,
        name: str = 'the image',
        nonfinite_background: bool = False,
    ):
        self.normalization, self.name = normalization, name
        self.nonfinite_background = nonfinite_background
        self.planes = self.unusable = 0
        self.bad = self.total = 0
        self.outlier_planes: list[int] = []
        self.first_errors: tuple[str, ...] = ()

    def add(self, index: int, plane: np.ndarray) -> None:
        report = inspect_intensities(plane, normalization=self.normalization)
        if any('complex' in e for e in report.errors):
            report.raise_errors()
        self.planes += 1
        self.total += plane.size
        self.bad += round(report.nonfinite_fraction * plane.size)
        if report.errors:
            self.unusable += 1
            self.first_errors = self.first_errors or report.errors
        if report.outliers and any('min-max' in w for w in report.warnings):
            self.outlier_planes.append(index)

    def report(self) -> IntensityReport:
        errors: tuple[str, ...] = ()
        warnings = []
        if self.planes and self.unusable == self.planes:
            errors = tuple(e.replace('the image', self.name) for e in self.first_errors)
        fraction = self.bad / self.total if self.total else 0.0
        if 0 < fraction < 1:
            warnings.append(
                nonfinite_note(fraction, self.name, self.nonfinite_background)
            )
        if self.outlier_planes:
            shown = ', '.join(map(str, self.outlier_planes[:8]))
            warnings.append(
                f'slice(s) {shown} of {self.name} have a few pixels far outside '
                'the rest, which ruins per-image min-max normalisation there; use '
                'percentile normalisation or clip the outliers.'
            )
        return IntensityReport(
            errors=errors, warnings=tuple(warnings), nonfinite_fraction=fraction
        )


def _report(
    values: np.ndarray,
    bad_fraction: float,
    normalization: dict | None,
    name: str,
    nonfinite_background: bool = False,
) -> IntensityReport:
    low, high = float(values.min()), float(values.max())
    errors, warnings = [], []
    if low == high:
        errors.append(
            f'{name} is constant (every pixel is {low:g}), so there is nothing '
            'to segment; check that the right layer or file is chosen.'
        )
        return IntensityReport(
            errors=tuple(errors), nonfinite_fraction=bad_fraction, low=low, high=high
        )
    if bad_fraction > 0:
        warnings.append(nonfinite_note(bad_fraction, name, nonfinite_background))
    sample = values
    if values.size > _PERCENTILE_SAMPLE:
        sample = values[:: values.size // _PERCENTILE_SAMPLE + 1]
    p_lo, p_hi = (float(v) for v in np.percentile(sample, BULK))
    span = p_hi - p_lo
    tail = max(high - p_hi, p_lo - low)
    outliers = tail > OUTLIER_RATIO * span if span > 0 else high > low
    mode = (normalization or {'mode': 'minmax'}).get('mode', 'minmax')
    if outliers and mode == 'minmax':
        share = span / (high - low) if high > low else 1.0
        warnings.append(
            f'a few pixels of {name} lie far outside the rest (values '
            f'{low:.4g} .. {high:.4g}, but 99.8 % within {p_lo:.4g} .. '
            f'{p_hi:.4g}): per-image min-max normalisation squeezes the image '
            f'into {100 * share:.2g} % of the input range and the result will '
            'be degraded. Use percentile normalisation (normalization '
            '"percentile", --normalization percentile) or clip the outliers.'
        )
    return IntensityReport(
        errors=tuple(errors),
        warnings=tuple(warnings),
        nonfinite_fraction=bad_fraction,
        low=low,
        high=high,
        bulk=(p_lo, p_hi),
        outliers=outliers,
    )
