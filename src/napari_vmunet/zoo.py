"""Checkpoints that ship inside the package (the demo models).

They are small VM-UNets trained by ``napari-vmunet train`` on the bundled
sample data (the exact commands are in their metadata and in
``docs/demo-model.md``).  They demonstrate the workflow; they are not
clinical or general-purpose models.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path


def builtin_checkpoints() -> dict[str, Path]:
    """``{name: path}`` of the bundled ``.safetensors`` checkpoints."""
    folder = resources.files('napari_vmunet') / 'data'
    found = {}
    if folder.is_dir():
        for entry in sorted(folder.iterdir(), key=lambda e: e.name):
            if entry.name.endswith('.safetensors'):
                found[entry.name.removesuffix('.safetensors')] = Path(str(entry))
    return found


def builtin_checkpoint(name: str) -> Path:
    """Path of a bundled checkpoint; ``KeyError`` lists the available ones."""
    models = builtin_checkpoints()
    if name not in models:
        raise KeyError(
            f'no built-in model {name!r}; available: {", ".join(models) or "none"}'
        )
    return models[name]


def resolve_model(name_or_path: str | os.PathLike) -> Path:
    """The checkpoint file a user means: a built-in model's name
    (``demo-nuclei``) or a path (``~`` expanded).

    Every entry point (``predict``, ``train --init``, ``info``, ``convert``,
    the docks) resolves models here, so a name that works in one works in
    all.  A path that does not exist and is no built-in name raises
    ``FileNotFoundError`` listing the built-in models.
    """
    text = os.fspath(name_or_path)
    models = builtin_checkpoints()
    if text in models:
        return models[text]
    path = Path(text).expanduser()
    if not path.exists() and not path.suffix and os.sep not in text:
        raise FileNotFoundError(
            f'{text!r} is neither a file nor a built-in model; built-in models: '
            f'{", ".join(models) or "none"}'
        )
    return path
