"""Our normalisation as bioimage.io preprocessing, and back.

A checkpoint's ``input.normalization`` (see
:mod:`napari_vmunet.rules.normalization`) becomes operations of the
bioimage.io model spec 0.5, applied per sample over all channels and
pixels together (``axes: [channel, y, x]``), as our normalisation takes its
statistics over the whole 2-D image:

* ``minmax`` to ``[a, b]``: ``scale_range`` with percentiles 0 and 100
  (-> [0, 1]), then ``scale_linear`` (gain ``b - a``, offset ``a``).
* ``percentile`` ``low``/``high`` to ``[a, b]``: ``scale_range`` with those
  percentiles, ``scale_linear``, then ``clip`` to ``[a, b]``.
* ``window`` ``low``/``high`` to ``[a, b]``: one ``scale_linear`` (gain
  ``(b - a) / (high - low)``, offset ``a - low * gain``), then ``clip``.
* ``none``: no operation.

``scale_range`` divides by ``upper - lower + 1e-6`` where we divide by
``upper - lower``: on images whose range is a few units or more that is a
relative difference below 1e-6, far inside bioimage.io's test tolerance.
What the spec cannot say is refused (:class:`NotExpressible`): percentile
bounds with ``high <= 1`` (the spec keeps ``max_percentile`` above 1 so that
fractions are not mistaken for percentiles) and modes this module does not
know.  The operations are plain dicts (``{'id': ..., 'kwargs': ...}``), so
this module needs no bioimageio package; :func:`normalization_from` reads
them back when a package carries no napari-vmunet metadata.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from ..rules.normalization import check_normalization

#: the per-sample reduction that matches our per-image statistics
AXES = ['channel', 'y', 'x']


class NotExpressible(ValueError):
    """A normalisation the bioimage.io spec's operations cannot express."""


def preprocessing_for(normalization: Mapping[str, Any] | None) -> list[dict]:
    """The spec 0.5 preprocessing steps that reproduce ``normalization``."""
    norm = check_normalization(dict(normalization or {}))
    mode = norm['mode']
    a, b = norm['range']
    steps: list[dict] = []
    if mode == 'none':
        return steps
    if mode in ('minmax', 'percentile'):
        low, high = (0.0, 100.0) if mode == 'minmax' else (norm['low'], norm['high'])
        if high <= 1.0:
            raise NotExpressible(
                f'normalization percentile:{low:g},{high:g} cannot be written as '
                'bioimage.io preprocessing: the spec requires the upper '
                'percentile to be above 1 (scale_range max_percentile > 1, so '
                'that fractions are not mistaken for percentiles); re-train or '
                'save the checkpoint with an upper percentile above 1, e.g. '
                'percentile:1,99.8'
            )
        steps.append(
            {
                'id': 'scale_range',
                'kwargs': {
                    'axes': list(AXES),
                    'min_percentile': float(low),
                    'max_percentile': float(high),
                },
            }
        )
        steps += _linear(b - a, a)
    elif mode == 'window':
        gain = (b - a) / (norm['high'] - norm['low'])
        steps += _linear(gain, a - norm['low'] * gain)
    else:  # pragma: no cover - check_normalization knows every mode
        raise NotExpressible(
            f'normalization mode {mode!r} has no bioimage.io equivalent'
        )
    if mode != 'minmax':
        steps.append({'id': 'clip', 'kwargs': {'min': float(a), 'max': float(b)}})
    return steps


def _linear(gain: float, offset: float) -> list[dict]:
    """A ``scale_linear`` step, or none when it would change nothing (the
    spec refuses a redundant one)."""
    if math.isclose(gain, 1.0, rel_tol=0, abs_tol=1e-12) and offset == 0:
        return []
    return [
        {'id': 'scale_linear', 'kwargs': {'gain': float(gain), 'offset': float(offset)}}
    ]


def describe(normalization: Mapping[str, Any] | None) -> str:
    """One sentence for the README."""
    norm = check_normalization(dict(normalization or {}))
    a, b = norm['range']
    target = f'[{a:g}, {b:g}]'
    mode = norm['mode']
    if mode == 'minmax':
        return f'each image scaled by its own minimum and maximum to {target}'
    if mode == 'percentile':
        return (
            f'each image scaled from its {norm["low"]:g}th to its '
            f'{norm["high"]:g}th percentile to {target}, then clipped'
        )
    if mode == 'window':
        return (
            f'the fixed intensity window [{norm["low"]:g}, {norm["high"]:g}] '
            f'scaled to {target}, then clipped'
        )
    return 'none: the network takes the values as they are'


def normalization_from(steps: Sequence[Any] | None) -> dict | None:
    """Our normalisation for a package's preprocessing, when it is one of the
    forms :func:`preprocessing_for` writes (else None: the caller falls back
    to the default and says so).  Steps are the package's YAML dicts."""
    steps = [s for s in (steps or []) if _id(s) != 'ensure_dtype']
    ids = [_id(s) for s in steps]
    kw = [dict(s.get('kwargs') or {}) if isinstance(s, Mapping) else {} for s in steps]
    if not steps:
        return check_normalization({'mode': 'none'})
    gain, offset = 1.0, 0.0
    if 'scale_linear' in ids:
        lin = kw[ids.index('scale_linear')]
        if 'axis' in lin:
            return None
        gain, offset = float(lin.get('gain', 1.0)), float(lin.get('offset', 0.0))
    if ids[0] == 'scale_range' and ids[1:] in ([], ['scale_linear']):
        sr = kw[0]
        if _axes_ok(sr) and (
            sr.get('min_percentile', 0),
            sr.get('max_percentile', 100),
        ) == (0, 100):
            return _with_range({'mode': 'minmax'}, offset, offset + gain)
    if ids[0] == 'scale_range' and ids[1:] in (['clip'], ['scale_linear', 'clip']):
        sr = kw[0]
        if _axes_ok(sr):
            low, high = (
                float(sr.get('min_percentile', 0)),
                float(sr.get('max_percentile', 100)),
            )
            return _with_range(
                {'mode': 'percentile', 'low': low, 'high': high}, offset, offset + gain
            )
    if ids == ['scale_linear', 'clip'] and gain > 0:
        a, b = float(kw[1].get('min')), float(kw[1].get('max'))
        low, high = (a - offset) / gain, (b - offset) / gain
        return _with_range({'mode': 'window', 'low': low, 'high': high}, a, b)
    return None


def _id(step: Any) -> Any:
    return step.get('id') if isinstance(step, Mapping) else None


def _axes_ok(kwargs: Mapping) -> bool:
    axes = kwargs.get('axes')
    return axes is not None and sorted(map(str, axes)) == sorted(AXES)


def _with_range(norm: dict, a: float, b: float) -> dict | None:
    out = {**norm, 'range': [float(a), float(b)]}
    try:
        return check_normalization(out)
    except ValueError:
        return None
