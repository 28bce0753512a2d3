"""What the fine-tune dock asks for, as plain values, and its ``TrainConfig``.

The request of a training run is :class:`~napari_vmunet.training.TrainConfig`
(the CLI builds one too).  :class:`FineTuneChoices` holds what the dock's
widgets say, without Qt, and :func:`train_config` is the one translation of
those choices into a config: the starting point, the output name, the class
names, and which settings count as the user's own (all those the dock shows,
so that a resume with other values is refused instead of silently changed).
Both are tested without a viewer or a training run.
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..training import TrainConfig

#: the stage widths of the dock's small model from scratch (2 M parameters)
SCRATCH_SMALL = (24, 48, 96, 192)
#: the *Start from* items that are not a checkpoint path
SCRATCH, SCRATCH_SMALL_CHOICE = 'scratch', 'scratch-small'
FROM_INFERENCE, VMAMBA_UNCHOSEN = 'inference', 'vmamba?'


def default_output(image_name: str) -> Path:
    """Where a model trained on ``image_name`` is saved unless the user
    says otherwise: a new, time-stamped file under ``~/napari-vmunet/models``."""
    stamp = _dt.datetime.now().strftime('%Y%m%d-%H%M%S')
    safe = re.sub(r'[^\w.-]+', '_', image_name).strip('_') or 'model'
    return Path.home() / 'napari-vmunet' / 'models' / f'{safe}-{stamp}.safetensors'


def parse_class_names(text: str) -> list[str]:
    """``'background, grey matter, '`` -> ``['background', 'grey matter']``."""
    return [n.strip() for n in text.split(',') if n.strip()]


def start_choice(choice: str, inference_checkpoint: str | None) -> tuple:
    """``(init, extra config)`` for a *Start from* item: a checkpoint path,
    ``'vmamba:PATH'``, a model from scratch, or the inference dock's model
    (``inference_checkpoint``)."""
    if choice == SCRATCH_SMALL_CHOICE:
        return None, {'dims': list(SCRATCH_SMALL)}
    if choice == SCRATCH:
        return None, {}
    if choice == VMAMBA_UNCHOSEN:
        raise ValueError('choose the VMamba-S weights file first')
    if choice == FROM_INFERENCE:
        if inference_checkpoint is None:
            raise ValueError(
                'the inference dock has no model selected: choose one there, '
                'or pick another starting point'
            )
        return inference_checkpoint, {}
    return choice, {}


def init_kind(choice: str) -> str | None:
    """What :func:`~napari_vmunet.training.default_preset` needs to know
    of a *Start from* item (before its file is chosen)."""
    if choice in (SCRATCH, SCRATCH_SMALL_CHOICE):
        return None
    if choice == VMAMBA_UNCHOSEN or str(choice).startswith('vmamba:'):
        return 'vmamba:'
    return 'checkpoint'


@dataclass(frozen=True)
class FineTuneChoices:
    """The fine-tune dock's settings as its widgets show them."""

    output: str  # the *Save to* text
    preset: str
    start: str  # the *Start from* item's data (see :func:`start_choice`)
    inference_checkpoint: str | None = None  # the inference dock's model
    num_classes: int = 0  # 0: from the model / the labels
    class_names: str = ''  # comma-separated
    epochs: int = 1
    lr: float = 1e-4
    batch_size: int = 1
    tile_size: int = 0  # 0: from the model
    val_fraction: float = 0.2
    freeze_encoder: bool = False
    annotation: str = 'dense'
    device: str = 'auto'
    training_data: str = ''  # the pairs, for the checkpoint's provenance


def train_config(choices: FineTuneChoices, resume: bool = False) -> TrainConfig:
    """The :class:`~napari_vmunet.training.TrainConfig` the dock's choices
    ask for; a ValueError says what to fix."""
    from ..training import TrainConfig

    init, extra = start_choice(choices.start, choices.inference_checkpoint)
    output = choices.output.strip()
    if not output:
        raise ValueError('choose where to save the model ("Save to")')
    if not output.endswith('.safetensors'):
        output += '.safetensors'
    names = parse_class_names(choices.class_names)
    # every setting shown in the dock is the user's choice: a resume
    # with other values is refused instead of silently replaced
    given = {'preset', 'init', 'epochs', 'lr', 'batch_size', 'val_fraction'}
    given |= {'annotation', 'freeze_encoder', *extra}
    given |= {'tile_size'} if choices.tile_size else set()
    given |= {'num_classes'} if choices.num_classes else set()
    given |= {'class_names'} if names else set()
    return TrainConfig(
        output=output,
        preset=choices.preset,
        init=init,
        resume=resume,
        num_classes=choices.num_classes or None,
        class_names=names or None,
        epochs=choices.epochs,
        lr=choices.lr,
        batch_size=choices.batch_size,
        tile_size=choices.tile_size or None,
        val_fraction=choices.val_fraction,
        freeze_encoder=choices.freeze_encoder,
        annotation=choices.annotation,
        device=choices.device or 'auto',
        training_data=choices.training_data,
        command='napari dock',
        explicit=frozenset(given),
        **extra,
    )
