"""Training and fine-tuning VM-UNet on annotated slices: no Qt, no napari.

The engine behind ``napari-vmunet train``, notebooks and the napari dock::

    from napari_vmunet.training import TrainConfig, Trainer, TrainingPair

    pair = TrainingPair(image, labels)           # arrays, e.g. napari layers
    config = TrainConfig(output='nuclei.safetensors', init='model.safetensors')
    finished = Trainer(config, [pair]).fit(callback=print)

:class:`Trainer` is a generator of events (:mod:`.events`), so every front
end follows a run the same way; :class:`TrainingProcess` runs it in a
separate process for the GUI (stop, kill, crash detection).
"""

from .._generators import as_stop_callable
from .augment import AugmentConfig, random_tile
from .config import PRESETS, TrainConfig, default_preset, last_path
from .data import (
    AnnotatedSlice,
    Sample,
    TileDataset,
    TrainingPair,
    extract_slices,
    prepare_samples,
)
from .events import EpochEnd, Event, Finished, Saved, Started, Step
from .losses import BceDiceLoss, CeDiceLoss, DiceScore, make_loss
from .process import TrainingProcess
from .split import split_validation
from .trainer import Trainer
from .validation import Validation, evaluate

__all__ = [
    'PRESETS',
    'AnnotatedSlice',
    'AugmentConfig',
    'BceDiceLoss',
    'CeDiceLoss',
    'DiceScore',
    'EpochEnd',
    'Event',
    'Finished',
    'Sample',
    'Saved',
    'Started',
    'Step',
    'TileDataset',
    'TrainConfig',
    'Trainer',
    'TrainingPair',
    'TrainingProcess',
    'Validation',
    'as_stop_callable',
    'evaluate',
    'extract_slices',
    'default_preset',
    'last_path',
    'make_loss',
    'prepare_samples',
    'random_tile',
    'split_validation',
]
