"""The small VM-UNets the tests build, in one place.

``TINY`` keeps the original depths at the smallest widths; ``TINY_SHALLOW``
also has one block per stage, for tests that train.  :func:`save_tiny`
writes a seeded checkpoint with the metadata a dock or the CLI reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from napari_vmunet.checkpoint import default_metadata, save_checkpoint
from napari_vmunet.model import VMUNet

TINY = dict(dims=(8, 16, 32, 64))
TINY_SHALLOW = dict(
    dims=[8, 16, 32, 64], depths=[1, 1, 1, 1], depths_decoder=[1, 1, 1, 1]
)


def tiny_model(num_classes: int = 1, *, seed: int = 0, **kwargs) -> VMUNet:
    """A seeded ``VMUNet`` of the ``TINY`` widths (kwargs override)."""
    torch.manual_seed(seed)
    return VMUNet(num_classes=num_classes, **{**TINY, **kwargs})


def save_tiny(
    folder: Path,
    name: str = 'tiny',
    *,
    num_classes: int = 1,
    class_names: Sequence[str] | None = None,
    tile_size: int = 64,
    seed: int = 0,
    **kwargs,
) -> Path:
    """``folder/name.safetensors``: a :func:`tiny_model` with its metadata."""
    model = tiny_model(num_classes, seed=seed, **kwargs)
    names = {} if class_names is None else {'class_names': list(class_names)}
    meta = default_metadata(model.config, tile_size=tile_size, **names)
    return save_checkpoint(model, Path(folder) / f'{name}.safetensors', meta)
