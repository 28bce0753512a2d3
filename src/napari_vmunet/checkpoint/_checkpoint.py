"""A loaded checkpoint: the model and everything known about it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..model import VMUNet
from ..rules.input_stats import InputStats
from ._schema import Metadata

SOURCE_FORMATS = ('napari-vmunet', 'original-best', 'original-latest', 'bioimageio')


@dataclass
class Checkpoint:
    """A loaded checkpoint: the ready model plus everything known about it."""

    #: the network, in eval mode, on the requested device
    model: VMUNet
    #: VMUNet keyword arguments (``num_classes`` ... ``d_state``)
    config: dict
    #: the metadata document (defaults filled in for original files)
    metadata: dict
    path: Path
    #: ``'napari-vmunet'``, ``'original-best'``, ``'original-latest'`` or
    #: ``'bioimageio'`` (a bioimage.io model package)
    source_format: str
    #: optimizer/scheduler/epoch... when the file (or our sidecar) has them
    training_state: dict | None = None
    #: summary of the training inputs (``rules.input_stats``); None for files
    #: written before it was recorded, and for the original's
    training_stats: dict | None = None

    @property
    def parameter_count(self) -> int:
        """Number of weights in the model."""
        return sum(p.numel() for p in self.model.parameters())

    @property
    def meta(self) -> Metadata:
        """:attr:`metadata` read by name (``meta.input.tile``, ...)."""
        return Metadata.from_dict(self.metadata)

    @property
    def input_stats(self) -> InputStats | None:
        """:attr:`training_stats` read by name (None: not recorded)."""
        return InputStats.from_dict(self.training_stats)

    @property
    def class_names(self) -> list[str]:
        """The class names, background first."""
        return list(self.meta.classes.names)


def unwrap(model: Any) -> tuple[VMUNet, dict | None]:
    """The VMUNet inside a Checkpoint, DataParallel/DDP or torch.compile
    wrapper, plus the checkpoint's metadata when there is one."""
    metadata = None
    if isinstance(model, Checkpoint):
        metadata, model = model.metadata, model.model
    for attr in ('module', '_orig_mod'):
        while not isinstance(model, VMUNet) and isinstance(
            getattr(model, attr, None), torch.nn.Module
        ):
            model = getattr(model, attr)
    if not isinstance(model, VMUNet):
        raise TypeError(
            f'expected a VMUNet or a Checkpoint, got {type(model).__name__}'
        )
    return model, metadata
