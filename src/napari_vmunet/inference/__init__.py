"""Prediction on images and volumes: no Qt, no napari.

``Predictor`` is the entry point; progress and cancellation are plain
callbacks or a generator, shared by the CLI, notebooks and the napari dock.
"""

from ..devices import (
    DEVICE_CHOICES,
    available_devices,
    diagnostics,
    format_diagnostics,
    resolve_device,
)
from ..rules.normalization import ChannelMismatchError, check_normalization, normalize
from .predictor import Predictor
from .results import Cancelled, PredictionResult, Progress

__all__ = [
    'DEVICE_CHOICES',
    'Cancelled',
    'ChannelMismatchError',
    'PredictionResult',
    'Predictor',
    'Progress',
    'available_devices',
    'check_normalization',
    'diagnostics',
    'format_diagnostics',
    'normalize',
    'resolve_device',
]
