"""What a run records about itself in the checkpoints it writes.

Two parts, each decided once when the :class:`~.trainer.Trainer` is built:

* :class:`ModelSetup` -- what the model is told about its inputs and
  outputs (class names and colours, normalisation, tile size): the config's
  choice, else the starting checkpoint's, checked at once (bad class names
  or normalisation fail before any work);
* the provenance -- where the weights came from, what data trained them,
  the recipe -- and :func:`summarize_training_inputs`, the statistics of the
  training images that inference compares new images with.

:func:`checkpoint_metadata` assembles the ``classes`` / ``input`` /
``provenance`` metadata a run's checkpoint is saved with.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from ..checkpoint import (
    Metadata,
    architecture_of,
    default_class_names,
    default_metadata,
    parse_normalization,
)
from ..model import VMUNet
from ..rules.input_stats import summarize_inputs
from ..rules.normalization import check_normalization, override_normalization
from ..rules.tiling import DEFAULT_TILE, check_tile
from .config import TrainConfig
from .data import AnnotatedSlice, Sample


@dataclass(frozen=True)
class ModelSetup:
    """What the run's model knows of its inputs and outputs."""

    num_classes: int
    input_channels: int
    class_names: list[str]
    class_colors: list
    normalization: dict
    tile: int


def model_setup(
    config: TrainConfig, model: nn.Module, metadata: dict | None
) -> ModelSetup:
    """Classes, normalisation and tile size: ``config``'s, else those of
    the checkpoint the model came from (``metadata``), else the defaults.

    Raises ``ValueError`` for a class list, normalisation or tile the model
    cannot be saved with, and for a network other than VM-UNet that would
    have to be saved (``config.output`` set).
    """
    c = config
    meta = Metadata.from_dict(metadata) if metadata else None
    num_classes = int(model.num_classes)
    names = c.class_names
    if names is None and meta:
        names = meta.classes.names
    class_names = list(names or default_class_names(num_classes))
    colors = meta.classes.colors if meta and c.class_names is None else None
    class_colors = list(colors or [None] * len(class_names))
    own = meta.input.normalization.to_dict() if meta else None
    norm = own
    if c.normalization is not None:  # keeps a fine-tuned model's range
        norm = override_normalization(own, parse_normalization(c.normalization))
    norm = norm or {'mode': 'minmax'}
    tile = check_tile(
        int(c.tile_size or (meta.input.tile if meta else None) or DEFAULT_TILE)
    )
    if not isinstance(model, VMUNet):
        # another network (benchmarks compare one under this recipe):
        # trained the same way, but there is no VM-UNet file to write
        if c.output is not None:
            raise ValueError(
                f'only VM-UNet models are saved as checkpoints; train a '
                f'{type(model).__name__} with output=None'
            )
        norm = check_normalization(norm)
    else:  # validate now, before any work: wrong class names or normalisation
        norm = default_metadata(
            architecture_of(model.config),
            class_names=class_names,
            class_colors=class_colors,
            normalization=norm,
            tile_size=tile,
        )['input']['normalization']
    return ModelSetup(
        num_classes=num_classes,
        input_channels=int(model.input_channels),
        class_names=class_names,
        class_colors=class_colors,
        normalization=norm,
        tile=tile,
    )


def image_names(slices: Sequence[AnnotatedSlice]) -> list[str]:
    """The images the slices come from, in the order given."""
    names: list[str] = []
    for s in slices:
        name = s.source.rsplit(' slice ', 1)[0]
        if name not in names:
            names.append(name)
    return names


def describe_training_data(names: Sequence[str], n_train: int, n_val: int) -> str:
    """provenance.training_data: how many slices from which images."""
    shown = ', '.join(names[:5]) + (
        f' and {len(names) - 5} more' if len(names) > 5 else ''
    )
    return f'{n_train} training and {n_val} validation slice(s) from {shown}'


def summarize_training_inputs(
    slices: Sequence[AnnotatedSlice], samples: Sequence[Sample], normalization: dict
) -> dict:
    """The summary of the network's training inputs that the checkpoint
    keeps, so that inference can tell an image far from them."""
    kinds = {s.from_volume for s in slices}
    kind = 'mixed' if len(kinds) > 1 else ('volume' if kinds == {True} else '2d')
    return summarize_inputs(
        (s.image for s in samples),
        kind=kind,
        channels=max((s.image.shape[0] for s in slices), default=1),
        value_range=tuple(normalization.get('range', (0.0, 255.0))),
    )


def describe_preset_choice(config: TrainConfig) -> str:
    """Why a run that named no preset got the one it has."""
    why = 'a new model' if config.preset == 'scratch' else 'a trained model'
    return (
        f'recipe: the {config.preset} preset for {why} (lr {config.lr:g}, '
        f'{config.epochs} epochs)'
    )


def describe_recipe(
    config: TrainConfig, *, batch_size: int, tile: int, steps_per_epoch: int, seed: int
) -> str:
    """provenance.command of a run started from Python (no command line)."""
    c = config
    return (
        f'napari_vmunet.training preset={c.preset} epochs={c.epochs} '
        f'lr={c.lr:g} batch_size={batch_size} tile={tile} '
        f'steps_per_epoch={steps_per_epoch} seed={seed}'
        + (' freeze_encoder=True' if c.freeze_encoder else '')
        + (' annotation=sparse' if c.annotation == 'sparse' else '')
    )


def checkpoint_metadata(
    setup: ModelSetup,
    *,
    initialized_from: str,
    training_data: str,
    epochs: int,
    best_mean_dice: float | None,
    command: str,
    notes: Sequence[str],
) -> dict:
    """The metadata a run's checkpoints are saved with."""
    dice = best_mean_dice
    return {
        'classes': {
            'names': list(setup.class_names),
            'colors': list(setup.class_colors),
        },
        'input': {
            'normalization': setup.normalization,
            'tile_size': [setup.tile] * 2,
        },
        'provenance': {
            'initialized_from': initialized_from,
            'training_data': training_data,
            'epochs': int(epochs),
            'best_val_dice': None if dice is None else min(max(dice, 0.0), 1.0),
            'command': command,
            'notes': '; '.join(n for n in notes if n) or None,
        },
    }
