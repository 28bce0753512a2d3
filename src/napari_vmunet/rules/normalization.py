"""Turning whatever a user has into what a VM-UNet was trained on.

Normalisation is described by a small dict stored in the checkpoint
metadata (``metadata['input']['normalization']``) so that training and
inference always agree:

* ``{'mode': 'minmax'}`` -- the original VM-UNet: each 2-D image is mapped
  to [0, 255] by its own min and max (over all pixels and channels).
* ``{'mode': 'percentile', 'low': 1, 'high': 99.8}`` -- robust min-max.
* ``{'mode': 'window', 'low': -125, 'high': 275}`` -- a fixed intensity
  window, e.g. CT Hounsfield units (the Synapse recipe).
* ``{'mode': 'none'}`` -- the values as they are.

An optional ``'range': [a, b]`` sets the output range (default [0, 255];
the original Synapse models were trained on [0, 1]).  Statistics are taken
per 2-D image, as the original does; a volume is normalised slice by slice.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .intensity import complex_message

DEFAULT_NORMALIZATION: dict = {'mode': 'minmax'}
MODES = ('minmax', 'window', 'percentile', 'none')


class ChannelMismatchError(ValueError):
    """The image's channels cannot be mapped onto the model's inputs."""


DEFAULT_RANGE = (0.0, 255.0)
_KEYS = {'mode', 'low', 'high', 'range'}


def check_normalization(spec: dict | None) -> dict:
    """Validate a normalisation spec and fill in defaults.

    The one place that knows the schema: the checkpoint metadata validator
    and the trainer call it too.  Raises ``ValueError`` saying what is wrong.
    """
    spec = dict(spec or DEFAULT_NORMALIZATION)
    unknown = sorted(set(spec) - _KEYS)
    if unknown:
        raise ValueError(
            f'normalization has unknown field(s) {", ".join(unknown)}; '
            f'expected {", ".join(sorted(_KEYS))}'
        )
    mode = spec.get('mode', 'minmax')
    if mode not in MODES:
        raise ValueError(f'unknown normalization mode {mode!r}; use one of {MODES}')
    if mode == 'percentile':
        spec.setdefault('low', 1.0)
        spec.setdefault('high', 99.8)
    if mode in ('percentile', 'window'):
        if 'low' not in spec or 'high' not in spec:
            raise ValueError(f'normalization mode {mode!r} needs "low" and "high"')
        low, high = spec['low'], spec['high']
        if not (_is_number(low) and _is_number(high) and low < high):
            raise ValueError(
                f'normalization {mode} needs numbers low < high, got '
                f'low={low!r}, high={high!r}'
            )
        if mode == 'percentile' and not (low >= 0 and high <= 100):
            raise ValueError(
                f'normalization percentile bounds must lie in [0, 100], got '
                f'{low}, {high}'
            )
        spec['low'], spec['high'] = float(low), float(high)
    else:
        for key in ('low', 'high'):
            if key in spec:
                raise ValueError(f'normalization mode {mode!r} takes no {key!r}')
    out = spec.setdefault('range', list(DEFAULT_RANGE))
    if not (
        isinstance(out, (list, tuple))
        and len(out) == 2
        and all(_is_number(v) for v in out)
        and out[0] < out[1]
    ):
        raise ValueError(f'normalization range must be [low, high], got {out!r}')
    spec['range'] = [float(out[0]), float(out[1])]
    spec['mode'] = mode
    return spec


def override_normalization(own: dict | None, override: dict | None) -> dict:
    """The checkpoint's normalisation ``own`` replaced by a user's
    ``override`` (None: no override).  The output range is the model's
    unless the override names one: a model trained on [0, 1] inputs must
    still get [0, 1] when the user only asks for percentiles."""
    own = check_normalization(own)
    if not override:
        return own
    spec = dict(override)
    spec.setdefault('range', own['range'])
    return check_normalization(spec)


def _is_number(value) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and bool(np.isfinite(value))
    )


def _work_dtype(x: np.ndarray) -> type:
    """float64 for 8-byte inputs (float64 values beyond float32's range, or
    64-bit integers, would become inf or lose their differences), float32
    otherwise."""
    return np.float64 if x.dtype.itemsize >= 8 else np.float32


def finite(x: np.ndarray, dtype: type = np.float32) -> np.ndarray:
    """``x`` as ``dtype`` with NaN/Inf replaced by the finite extremes.

    A scanner's NaN padding or a division by zero upstream must not turn the
    whole prediction into NaN; with no finite value at all the slice is 0
    (whole images without any finite value are refused before a run, see
    :mod:`napari_vmunet.rules.intensity`).  Complex values are refused: their
    imaginary part would be dropped without a word.
    """
    x = np.asarray(x)
    if np.iscomplexobj(x):
        raise ValueError(complex_message('the image', x.dtype))
    x = x.astype(dtype, copy=False)
    bad = ~np.isfinite(x)
    if not bad.any():
        return x
    good = x[~bad]
    if good.size == 0:
        return np.zeros_like(x)
    lo, hi = float(good.min()), float(good.max())
    x = x.copy()
    x[np.isnan(x)] = lo
    x[np.isposinf(x)] = hi
    x[np.isneginf(x)] = lo
    return x


def normalize(image: np.ndarray, spec: dict | None = None) -> np.ndarray:
    """Normalise one 2-D image (any channel layout) as ``spec`` says.

    Returns float32.  A constant image maps to the bottom of the range
    rather than NaN (the original divides by zero there).  The arithmetic
    runs in float64 for float64 input, so values beyond float32's range
    are scaled, not turned into a constant image.
    """
    spec = check_normalization(spec)
    image = np.asarray(image)
    x = finite(image, _work_dtype(image))
    out_lo, out_hi = (float(v) for v in spec['range'])
    mode = spec['mode']
    if mode == 'none':
        y = x.astype(np.float32)
        if not np.isfinite(y).all():
            raise ValueError(
                'the image has values beyond the float32 range, which the '
                'network cannot take as they are (normalisation "none"); use '
                'minmax or percentile normalisation'
            )
        return y
    if mode == 'minmax':
        lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
    elif mode == 'percentile':
        lo, hi = (float(v) for v in np.percentile(x, [spec['low'], spec['high']]))
    else:
        lo, hi = float(spec['low']), float(spec['high'])
    if hi <= lo:
        return np.full(x.shape, out_lo, dtype=np.float32)
    scale = (out_hi - out_lo) / (hi - lo)
    y = ((x - lo) * scale + out_lo).astype(np.float32, copy=False)
    if mode != 'minmax':
        np.clip(y, out_lo, out_hi, out=y)
    return y


def map_channels(
    image: np.ndarray,
    model_channels: int,
    channel_map: Sequence[int] | None = None,
    rgb: bool = False,
) -> np.ndarray:
    """Arrange a channels-first ``(C, H, W)`` image for the model.

    A single channel is repeated (as the original VM-UNet does for grey
    input), RGBA drops alpha, and ``channel_map`` picks which image channel
    feeds each model channel.  Anything else is an error that says how to
    fix it.
    """
    n = image.shape[0]
    if channel_map is not None:
        channel_map = [int(c) for c in channel_map]
        if len(channel_map) not in (1, model_channels):
            raise ChannelMismatchError(
                f'channel_map {channel_map} has {len(channel_map)} entries; the '
                f'model takes {model_channels} channels'
            )
        if not all(0 <= c < n for c in channel_map):
            raise ChannelMismatchError(
                f'channel_map {channel_map} refers to channels the image does '
                f'not have (it has {n}: 0..{n - 1})'
            )
        image = image[channel_map]
        n = image.shape[0]
    if n == model_channels:
        return image
    if n == 1:
        return np.repeat(image, model_channels, axis=0)
    if rgb and n == 4 and model_channels == 3:
        return image[:3]
    hint = ', '.join(str(i % n) for i in range(model_channels))
    raise ChannelMismatchError(
        f'the model takes {model_channels} input channel(s) but the image has '
        f'{n}. Choose which image channel feeds each model channel '
        f'(e.g. channel map "{hint}"), or use a single channel.'
    )
