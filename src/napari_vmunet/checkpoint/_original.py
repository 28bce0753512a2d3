"""The original VM-UNet files (JCruan519/VM-UNet): ``best.pth`` and
``latest.pth`` in, ``best.pth`` out.  They record no metadata: the
architecture is read from the tensors and the metadata gets defaults that
say so (and the Synapse setup's for 9 classes)."""

from __future__ import annotations

import datetime as _dt
import os
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .._files import write_atomically_one
from ._checkpoint import Checkpoint, unwrap
from ._errors import CheckpointError
from ._io import prepare_destination, torch_load
from ._metadata import default_metadata
from ._sidecar import plain
from ._state import (
    VMAMBA_NOT_A_MODEL,
    clean_state_dict,
    infer_config,
    load_strict,
    looks_like_vmamba,
    require_vmunet,
)

OUR_SUFFIX = '.safetensors'
ORIGINAL_SUFFIXES = ('.pth', '.pt')
_SYNAPSE_CLASSES = 9
_SYNAPSE_TILE = 224


def load_original(path: Path, kind: str) -> Checkpoint:
    """``best.pth`` / ``latest.pth`` of JCruan519/VM-UNet (or any flat VM-UNet
    state dict): the architecture is inferred from the tensors."""
    obj = torch_load(path, kind)
    raw, source_format, training_state = _split_original(obj)
    sd = clean_state_dict(raw)
    require_vmunet(sd)
    config = infer_config(sd)
    model = load_strict(config, sd, 'architecture read from its tensors')
    metadata = _original_metadata(config, path, source_format, training_state)
    return Checkpoint(model, config, metadata, path, source_format, training_state)


def _split_original(obj: Any) -> tuple[Any, str, dict | None]:
    """(state dict, source format, training state) of an original file."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f'holds a {type(obj).__name__}, not a state dict; VM-UNet '
            'checkpoints are a dict of named tensors (best.pth) or a dict with '
            'model_state_dict (latest.pth)'
        )
    if 'model_state_dict' in obj:
        training_state = {
            k: plain(v) for k, v in obj.items() if k != 'model_state_dict'
        }
        return obj['model_state_dict'], 'original-latest', training_state
    # a dict without a single tensor at the top is a container, not weights
    if obj and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        inner = obj.get('model')
        if isinstance(inner, Mapping) and looks_like_vmamba(inner):
            raise CheckpointError(VMAMBA_NOT_A_MODEL)
        keys = ', '.join(map(str, list(obj)[:6]))
        raise CheckpointError(
            f'is a dict with the entries {keys} but no model weights VM-UNet '
            'knows; VM-UNet checkpoints are a flat state dict (best.pth) or a '
            'dict with model_state_dict (latest.pth)'
        )
    return obj, 'original-best', None


def _original_metadata(
    config: dict, path: Path, source_format: str, training_state: dict | None
) -> dict:
    """Defaults for a file that carries no metadata, saying so in the notes."""
    layout = 'latest.pth' if source_format == 'original-latest' else 'best.pth'
    notes = (
        f'Weights from an original VM-UNet {layout}-layout file ({path.name}), '
        'which records no class names, normalisation or tile size.'
    )
    tile = 256
    if config['num_classes'] == _SYNAPSE_CLASSES:
        tile = _SYNAPSE_TILE
        notes += (
            ' 9 output classes match the original Synapse setup (224x224 '
            'slices; background + aorta, gallbladder, left kidney, right '
            'kidney, liver, pancreas, spleen, stomach in TransUNet order -- '
            'not recorded in the file, check before relying on it). Synapse '
            'models were trained on CT clipped to [-125, 275] HU and scaled '
            'to [0, 1], not min-max to [0, 255].'
        )
    epoch = (training_state or {}).get('epoch')
    epochs = epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else 0
    created = _dt.datetime.fromtimestamp(path.stat().st_mtime, _dt.timezone.utc)
    return default_metadata(
        config,
        tile_size=tile,
        epochs=max(epochs, 0),
        created=created.isoformat(timespec='seconds'),
        notes=notes,
    )


def export_original(model_or_checkpoint: Any, path: str | os.PathLike) -> Path:
    """Write the original ``best.pth`` layout: ``torch.save`` of the flat
    state dict (keys ``vmunet.*``), loadable by the original code with
    ``model.load_state_dict(torch.load(path))``.  Written atomically."""
    net, _ = unwrap(model_or_checkpoint)
    path = Path(path).expanduser()
    if path.suffix == OUR_SUFFIX:
        raise ValueError(
            f'{path}: the original layout is a PyTorch .pth file; use '
            'save_checkpoint() for .safetensors'
        )
    sd = net.state_dict()
    out = OrderedDict((k, v.detach().cpu()) for k, v in sd.items())
    if hasattr(sd, '_metadata'):  # module versions, as in the original file
        out._metadata = sd._metadata
    return write_atomically_one(
        prepare_destination(path), lambda tmp: torch.save(out, tmp)
    )
