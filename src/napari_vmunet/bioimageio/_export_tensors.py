"""The package's test tensors: a real image centre-cropped to a multiple of
32, and the probabilities our Predictor computes for it on the CPU in one
window -- what bioimage.io's own test must reproduce.  (The one place the
bioimage.io engine uses the inference engine.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ._package import DEFAULT_SAMPLE, MAX_TEST_SIDE, SIZE_STEP


def make_test_input(test_image: Any, channels: int) -> tuple[np.ndarray, str]:
    """The test input, ``(C, H, W)`` float32 raw intensities (the package's
    preprocessing normalises them), and a phrase saying where it came from."""
    from ..io import read_image
    from ..io.samples import SAMPLES, load_sample
    from ..rules.normalization import map_channels

    if test_image is None or str(test_image) == '':
        test_image = DEFAULT_SAMPLE
    path = Path(str(test_image)).expanduser()
    if not path.exists() and str(test_image) in SAMPLES:
        img, _ = load_sample(str(test_image))
        label = f'the napari-vmunet {test_image} sample ({SAMPLES[str(test_image)]})'
    else:
        if not path.is_file():
            raise ValueError(
                f'{path}: the test image does not exist; give an image file or '
                f'a bundled sample ({", ".join(SAMPLES)})'
            )
        img = read_image(path, allow_channels=True)
        label = f'{path.name}'
    data = np.asarray(img.data)
    axes = img.axes
    if 'Z' in axes:
        z = axes.index('Z')
        data = np.take(data, data.shape[z] // 2, axis=z)
        axes = axes.replace('Z', '')
        label += ', middle slice'
    if 'C' in axes:
        data = np.moveaxis(data, axes.index('C'), 0)
    else:
        data = data[None]
    if np.iscomplexobj(data) or data.dtype.kind not in 'uifb':
        raise ValueError(f'{label}: the test image must hold real numbers')
    data = map_channels(data, channels, rgb=img.rgb)
    h, w = data.shape[-2:]
    th = min(MAX_TEST_SIDE, h // SIZE_STEP * SIZE_STEP)
    tw = min(MAX_TEST_SIDE, w // SIZE_STEP * SIZE_STEP)
    if th == 0 or tw == 0:
        raise ValueError(
            f'{label} is {h}x{w} pixels; the test image needs at least '
            f'{SIZE_STEP}x{SIZE_STEP} (VM-UNet works on multiples of 32)'
        )
    y0, x0 = (h - th) // 2, (w - tw) // 2
    crop = np.ascontiguousarray(data[:, y0 : y0 + th, x0 : x0 + tw], np.float32)
    if not np.isfinite(crop).all():
        raise ValueError(f'{label}: the test crop holds NaN or infinite values')
    if (th, tw) != (h, w):
        label += f', centre crop {th}x{tw} of {h}x{w}'
    return crop, label


def make_test_output(ckpt, image: np.ndarray) -> np.ndarray:
    """``(1, K, H, W)`` float32 probabilities from our Predictor on the CPU,
    in one window (the package is run on the whole test image too)."""
    from ..inference import Predictor

    predictor = Predictor(ckpt, device='cpu', tile_size=0, batch_size=1, amp=False)
    predictor.probability_dtype = np.float32
    try:
        result = predictor.predict(image, channel_axis=0, return_probabilities=True)
    finally:
        ckpt.model.cpu()
    probs = np.asarray(result.probabilities, dtype=np.float32)
    if probs.ndim == 2:
        probs = probs[None]
    return probs[None]
