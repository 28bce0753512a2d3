"""The training state next to a checkpoint (``<stem>.train_state.pt``).

``torch.save`` of a small document -- format name, version, the id it
shares with its weights, the training state -- read back with
``weights_only=True``.  The shared id pairs a sidecar with its weights: a
sidecar from another save is ignored with a warning, and one left in its
temporary file by an interrupted save is recovered.  Training state may
hold only tensors, numbers, strings, None and containers of them.
"""

from __future__ import annotations

import os
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._files import stale_temporaries
from ._errors import CheckpointError, CheckpointWarning
from ._io import check_file, torch_load
from ._metadata import FORMAT_VERSION

TRAIN_STATE_SUFFIX = '.train_state.pt'
#: safetensors string-metadata key pairing a checkpoint with its sidecar
TRAIN_STATE_ID_KEY = 'napari_vmunet_training_state'
_SIDECAR_FORMAT = 'napari-vmunet-training-state'
#: the leaves a training state may hold besides tensors
PLAIN = (str, int, float, bool, complex, type(None))


def training_state_path(path: str | os.PathLike) -> Path:
    """Where the training state of ``path`` lives: ``model.safetensors`` ->
    ``model.train_state.pt`` (same folder, same stem)."""
    return Path(path).with_suffix(TRAIN_STATE_SUFFIX)


def sidecar_document(training_state: dict, pair_id: str) -> dict:
    """What the sidecar file holds for ``training_state`` of the weights
    with id ``pair_id``."""
    return {
        'format': _SIDECAR_FORMAT,
        'format_version': FORMAT_VERSION,
        'checkpoint_id': pair_id,
        'training_state': training_state,
    }


def read_sidecar(path: Path, expected_id: str | None) -> dict | None:
    """The training state saved next to ``path``, if it belongs to it.

    A sidecar from another save (its id differs, e.g. the weights were
    overwritten without training state) is ignored with a warning: resuming
    from it would pair the weights with the wrong optimizer state.  When a
    save was killed between writing the weights and renaming the sidecar
    into place, the complete new sidecar is still in its temporary file
    (see :func:`save_checkpoint`): it is read from there.
    """
    side = training_state_path(path)
    state = _sidecar_state(side, path) if side.exists() else None
    if expected_id is None:
        if state is not None:
            warnings.warn(
                f'{path}: ignoring {side.name}, which was saved with other '
                'weights; training from this checkpoint starts a fresh optimizer',
                CheckpointWarning,
                stacklevel=4,
            )
        return None
    if state is not None and state.get('checkpoint_id') == expected_id:
        return dict(state['training_state'])
    recovered = _recover_sidecar(side, path, expected_id)
    if recovered is not None:
        return recovered
    if state is None:
        warnings.warn(
            f'{path}: its training state {side.name} is missing; the weights '
            'load, but training cannot resume where it stopped',
            CheckpointWarning,
            stacklevel=4,
        )
    else:
        warnings.warn(
            f'{path}: ignoring {side.name}, which was saved with other weights; '
            'training from this checkpoint starts a fresh optimizer',
            CheckpointWarning,
            stacklevel=4,
        )
    return None


def _sidecar_state(side: Path, path: Path) -> dict:
    """The sidecar document (format checked), or a CheckpointError."""
    try:
        check_file(side)
        obj = torch_load(side)
    except CheckpointError as err:
        raise CheckpointError(
            f'has a training state next to it that cannot be used: {side.name} '
            f'{err.problem}. Move or delete {side.name} to load the weights '
            'alone (training then cannot resume where it stopped)',
            path,
        ) from err
    if not _is_sidecar(obj):
        raise CheckpointError(
            f'has a file {side.name} next to it that is not a napari-vmunet '
            f'training state; move or rename it',
            path,
        )
    return dict(obj)


def _is_sidecar(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and obj.get('format') == _SIDECAR_FORMAT
        and isinstance(obj.get('training_state'), Mapping)
    )


def _recover_sidecar(side: Path, path: Path, expected_id: str) -> dict | None:
    """The training state of an interrupted save, from its temporary file.

    Temporary files are complete once the first rename of a save happened
    (all are written and fsynced before any rename), so one carrying the
    weights' id is exactly the sidecar that save meant to put in place.
    """
    for tmp in stale_temporaries(side):
        try:
            obj = torch_load(tmp)
        except CheckpointError:
            continue
        if _is_sidecar(obj) and obj.get('checkpoint_id') == expected_id:
            warnings.warn(
                f'{path}: its save was interrupted before {side.name} was '
                f'renamed into place; the training state was read from '
                f'{tmp.name} (the next save tidies up)',
                CheckpointWarning,
                stacklevel=5,
            )
            return dict(obj['training_state'])
    return None


def plain(value: Any) -> Any:
    """numpy scalars (the original stores ``min_loss`` as numpy.float64) ->
    Python numbers, so training state only holds tensors, numbers, strings
    and containers."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, OrderedDict):
        return OrderedDict((k, plain(v)) for k, v in value.items())
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(plain(v) for v in value)
    return value


def check_training_state(state: Any) -> dict:
    """Only data that ``torch.load(weights_only=True)`` reads back: tensors,
    numbers, strings, None, and dicts/lists/tuples of them (numpy scalars
    become Python numbers)."""
    state = plain(state)
    if not isinstance(state, Mapping):
        raise ValueError(f'training_state must be a dict, got {type(state).__name__}')
    _check_plain(state, 'training_state')
    return dict(state)


def _check_plain(value: Any, where: str) -> None:
    if isinstance(value, (torch.Tensor, *PLAIN)):
        return
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, (str, int, float, bool, type(None))):
                raise ValueError(f'{where} has a key of type {type(k).__name__}: {k!r}')
            _check_plain(v, f'{where}[{k!r}]')
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_plain(v, f'{where}[{i}]')
        return
    raise ValueError(
        f'{where} is of type {type(value).__name__}; training state may only '
        'hold tensors, numbers, strings, None and dicts/lists of them (save '
        'optimizer.state_dict(), not the optimizer)'
    )
