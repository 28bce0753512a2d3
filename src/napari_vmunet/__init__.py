"""napari-vmunet: VM-UNet segmentation for napari.

The core library (model, checkpoint, inference, training, io, cli) knows
nothing of Qt or napari; the napari front end lives in ``_widgets``.
Importing this package is cheap: torch is imported only when one of the
names below is first used, so napari starts fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ._version import __version__

# public name -> submodule that defines it
_LAZY = {
    'VMUNet': 'model',
    'selective_scan': 'model',
    'CheckpointError': 'checkpoint',
    'load_checkpoint': 'checkpoint',
    'save_checkpoint': 'checkpoint',
}

if TYPE_CHECKING:  # pragma: no cover
    from .checkpoint import (  # noqa: F401
        CheckpointError,
        load_checkpoint,
        save_checkpoint,
    )
    from .model import VMUNet, selective_scan  # noqa: F401

__all__ = ['__version__', *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        module = importlib.import_module(f'.{_LAZY[name]}', __name__)
        return getattr(module, name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
