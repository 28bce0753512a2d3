"""Loading, saving, exporting and converting VM-UNet checkpoints."""

from __future__ import annotations

import datetime as _dt
import json
import os
import uuid
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._files import (
    remove_quietly,
    stale_temporaries,
    write_atomically,
    write_atomically_one,
)
from .._version import __version__
from ..model import VMUNet
from ..rules.input_stats import check_stats
from ._errors import CheckpointError, CheckpointWarning
from ._io import (
    check_file,
    describe_unreadable,
    prepare_destination,
    read_safetensors,
    sniff,
    torch_load,
)
from ._metadata import (
    FORMAT_VERSION,
    METADATA_KEY,
    architecture_of,
    default_metadata,
    merge_metadata,
    now_iso,
    validate_metadata,
)
from ._schema import Metadata
from ._state import (
    VMAMBA_NOT_A_MODEL,
    clean_state_dict,
    describe_architecture,
    infer_config,
    load_strict,
    looks_like_vmamba,
    require_vmunet,
)

SOURCE_FORMATS = ('napari-vmunet', 'original-best', 'original-latest', 'bioimageio')
OUR_SUFFIX = '.safetensors'
ORIGINAL_SUFFIXES = ('.pth', '.pt')
TRAIN_STATE_SUFFIX = '.train_state.pt'
#: safetensors string-metadata key pairing a checkpoint with its sidecar
TRAIN_STATE_ID_KEY = 'napari_vmunet_training_state'
#: safetensors metadata entry: what the training inputs looked like
#: (``rules.input_stats``); outside the validated document, so older readers
#: ignore it and older files simply have none
TRAINING_STATS_KEY = 'napari_vmunet_training_stats'
_SIDECAR_FORMAT = 'napari-vmunet-training-state'
_SYNAPSE_CLASSES = 9
_SYNAPSE_TILE = 224


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
    def class_names(self) -> list[str]:
        """The class names, background first."""
        return list(self.meta.classes.names)


def training_state_path(path: str | os.PathLike) -> Path:
    """Where the training state of ``path`` lives: ``model.safetensors`` ->
    ``model.train_state.pt`` (same folder, same stem)."""
    return Path(path).with_suffix(TRAIN_STATE_SUFFIX)


# --------------------------------------------------------------------------
# loading


def load_checkpoint(path: str | os.PathLike, device: Any = 'cpu') -> Checkpoint:
    """Load any accepted checkpoint; the model is built from the file itself.

    Accepted: napari-vmunet ``.safetensors`` (with its training-state
    sidecar, if any); the original ``best.pth`` (flat state dict) and
    ``latest.pth`` (``model_state_dict`` + optimizer/scheduler/epoch, exposed
    as ``training_state``); keys prefixed ``module.`` (DataParallel/DDP) or
    ``_orig_mod.`` (torch.compile); thop's ``total_ops``/``total_params``
    buffers, which are dropped; a bioimage.io model package (.zip or
    folder) whose weights are a VM-UNet (see :mod:`napari_vmunet.bioimageio`).
    The format is recognised from the content, not the extension.

    Every problem -- missing, empty, truncated, foreign or malicious files,
    wrong shapes, missing or unexpected keys, invalid metadata -- raises
    :class:`CheckpointError` naming the file, what is wrong and what to do.
    Nothing in a file is ever executed and nothing is written.
    """
    dev = _device(device)
    path = Path(path).expanduser()
    from ..bioimageio._import import is_package, load_package

    try:
        if is_package(path):
            ckpt = load_package(path)
        elif (kind := sniff(check_file(path))) == 'safetensors':
            ckpt = _load_ours(path)
        else:
            ckpt = _load_original(path, kind)
    except CheckpointError as err:
        if err.path is None:
            raise err.with_path(path) from err
        raise
    ckpt.model.to(dev)
    return ckpt


def check_checkpoint_file(path: str | os.PathLike) -> Path:
    """Refuse, without reading the weights, a file that is plainly no checkpoint.

    Missing, empty, folder, unreadable, text and unknown binary files raise
    the :class:`CheckpointError` that :func:`load_checkpoint` would raise;
    anything that could be one passes (a full load may still refuse it).
    It costs a ``stat`` and a 4 KB read, so a GUI can check a chosen file at
    once, and a list of remembered files on start, instead of keeping a text
    file offered as a model.
    """
    path = Path(path).expanduser()
    from ..bioimageio._import import is_package

    if is_package(path):
        return path
    try:
        kind = sniff(check_file(path))
    except OSError as err:  # vanished or unreadable between the checks
        raise CheckpointError(
            f'cannot be read ({type(err).__name__}); check the path', path
        ) from err
    if kind in ('text', 'binary'):
        raise CheckpointError(describe_unreadable(path, kind), path)
    return path


def _device(device: Any) -> torch.device:
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(
            f'unknown device {device!r}; use e.g. "cpu", "cuda", "cuda:1" or "mps"'
        ) from err


def _load_original(path: Path, kind: str) -> Checkpoint:
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
            k: _plain(v) for k, v in obj.items() if k != 'model_state_dict'
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


def _plain(value: Any) -> Any:
    """numpy scalars (the original stores ``min_loss`` as numpy.float64) ->
    Python numbers, so training state only holds tensors, numbers, strings
    and containers."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, OrderedDict):
        return OrderedDict((k, _plain(v)) for k, v in value.items())
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    return value


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


def _load_ours(path: Path) -> Checkpoint:
    """A napari-vmunet ``.safetensors``: metadata first, then tensors that
    must agree with it exactly."""
    tensors, st_meta = read_safetensors(path)
    metadata = _read_metadata(st_meta)
    config = dict(metadata['architecture'])
    inferred = infer_config(tensors)
    if inferred != config:
        diff = '; '.join(
            f'{k}: metadata {config[k]}, tensors {inferred[k]}'
            for k in config
            if config[k] != inferred[k]
        )
        raise CheckpointError(
            f'has tensors that disagree with its own metadata ({diff}); the file '
            'was edited or damaged; re-save it from the model or convert the '
            'original .pth again'
        )
    model = load_strict(config, tensors, 'architecture in its metadata')
    training_state = _read_sidecar(path, st_meta.get(TRAIN_STATE_ID_KEY))
    return Checkpoint(
        model,
        config,
        metadata,
        path,
        'napari-vmunet',
        training_state,
        _read_training_stats(st_meta.get(TRAINING_STATS_KEY)),
    )


def _read_training_stats(raw: str | None) -> dict | None:
    """The training-input summary, or None when absent or not understood
    (it only informs warnings, so it never makes a file unusable)."""
    if raw is None or len(raw) > 100_000:
        return None
    try:
        return check_stats(json.loads(raw))
    except (ValueError, RecursionError):
        return None


def _read_metadata(st_meta: Mapping[str, str]) -> dict:
    raw = st_meta.get(METADATA_KEY)
    if raw is None:
        raise CheckpointError(
            f'is a safetensors file without napari-vmunet metadata (no '
            f'"{METADATA_KEY}" entry), so its architecture, classes and '
            'normalisation are unknown; save it with '
            'napari_vmunet.checkpoint.save_checkpoint, or convert the original '
            '.pth with `napari-vmunet convert IN.pth OUT.safetensors`'
        )
    try:
        return validate_metadata(json.loads(raw))
    except json.JSONDecodeError as err:
        problem = f'is not valid JSON ({err})'
    except RecursionError:
        problem = 'is nested too deeply to be a napari-vmunet document'
    except ValueError as err:
        problem = f'is invalid: {err}'
    raise CheckpointError(
        f'has napari-vmunet metadata that {problem}; the file was edited or '
        'written by other software; re-save it with napari-vmunet'
    )


def _read_sidecar(path: Path, expected_id: str | None) -> dict | None:
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


# --------------------------------------------------------------------------
# saving


def _unwrap(model: Any) -> tuple[VMUNet, dict | None]:
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


def save_checkpoint(
    model: VMUNet | Checkpoint,
    path: str | os.PathLike,
    metadata: dict | None = None,
    training_state: dict | None = None,
    training_stats: dict | None = None,
) -> Path:
    """Write ``model`` as a napari-vmunet ``.safetensors`` checkpoint.

    The weights go into a safetensors file whose string metadata holds the
    JSON document (key ``"napari_vmunet"``; schema in ``._metadata`` and
    docs/checkpoints.md).  ``metadata`` is merged section by section over
    the defaults (or over the metadata of a :class:`Checkpoint` passed as
    ``model``); ``created`` and
    ``package_version`` are set to now / this version unless given.  It is
    validated first: a bad class-name count, colour or tile size raises
    ``ValueError`` and nothing is written.

    ``training_state`` (optimizer/scheduler state, epoch...; tensors,
    numbers, strings, None and containers of them only) is written next to
    the checkpoint as ``<stem>.train_state.pt`` (``model.safetensors`` ->
    ``model.train_state.pt``) with ``torch.save`` and read back with
    ``weights_only=True``.  The two files share a random id, so a stale
    sidecar is never paired with other weights; saving without
    ``training_state`` removes an old sidecar.

    ``training_stats``: the summary of the training inputs
    (:func:`~napari_vmunet.rules.input_stats.summarize_inputs`), stored so
    that inference can warn about images far from them; a
    :class:`Checkpoint` passed as ``model`` keeps its own unless given.

    Both files are written atomically (temporary file, fsync, rename): on
    failure the previous files are untouched.  A crash cannot leave a pair
    that does not resume: both temporary files are complete before the
    weights are renamed into place, then the sidecar; if the process dies in
    between, loading finds the new sidecar in its temporary file (by the
    shared id).  Missing parent folders are created.  Returns the path
    written.
    """
    net, base = _unwrap(model)
    if training_stats is None and isinstance(model, Checkpoint):
        training_stats = model.training_stats
    if training_stats is not None and check_stats(training_stats) is None:
        raise ValueError('training_stats is not a summary from summarize_inputs()')
    path = Path(path).expanduser()
    if path.suffix != OUR_SUFFIX:
        raise ValueError(
            f'{path}: napari-vmunet checkpoints end in {OUR_SUFFIX}; use '
            'export_original() for the original .pth layout'
        )
    config = architecture_of(net.config)
    if base is None:
        base = default_metadata(config)
    else:
        base = {**base, 'architecture': config}
    base['provenance'] = {
        **base['provenance'],
        'created': now_iso(),
        'package_version': __version__,
    }
    meta = merge_metadata(base, metadata)
    if training_state is not None:
        training_state = _check_training_state(training_state)
    tensors = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    st_meta = {
        'format': 'pt',
        METADATA_KEY: json.dumps(meta, allow_nan=False),
        'napari_vmunet_format_version': str(FORMAT_VERSION),
    }
    if training_stats is not None:
        st_meta[TRAINING_STATS_KEY] = json.dumps(training_stats, allow_nan=False)
    path = prepare_destination(path)
    side = training_state_path(path)
    # the weights first: they are never older than their sidecar, and a
    # sidecar left behind in its temporary file is found by its id
    jobs = [(path, lambda tmp: _save_safetensors(tensors, tmp, st_meta))]
    if training_state is not None:
        st_meta[TRAIN_STATE_ID_KEY] = pair_id = uuid.uuid4().hex
        sidecar = {
            'format': _SIDECAR_FORMAT,
            'format_version': FORMAT_VERSION,
            'checkpoint_id': pair_id,
            'training_state': training_state,
        }
        jobs.append((side, lambda tmp: torch.save(sidecar, tmp)))
    write_atomically(jobs)
    if training_state is None:
        remove_quietly([side, *stale_temporaries(side)])
    return path


def _save_safetensors(tensors: dict, tmp: Path, st_meta: dict) -> None:
    # looked up at call time, so tests can make the serializer fail midway
    import safetensors.torch

    safetensors.torch.save_file(tensors, str(tmp), metadata=st_meta)


_PLAIN = (str, int, float, bool, complex, type(None))


def _check_training_state(state: Any) -> dict:
    """Only data that ``torch.load(weights_only=True)`` reads back: tensors,
    numbers, strings, None, and dicts/lists/tuples of them (numpy scalars
    become Python numbers)."""
    state = _plain(state)
    if not isinstance(state, Mapping):
        raise ValueError(f'training_state must be a dict, got {type(state).__name__}')
    _check_plain(state, 'training_state')
    return dict(state)


def _check_plain(value: Any, where: str) -> None:
    if isinstance(value, (torch.Tensor, *_PLAIN)):
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


def export_original(model_or_checkpoint: Any, path: str | os.PathLike) -> Path:
    """Write the original ``best.pth`` layout: ``torch.save`` of the flat
    state dict (keys ``vmunet.*``), loadable by the original code with
    ``model.load_state_dict(torch.load(path))``.  Written atomically."""
    net, _ = _unwrap(model_or_checkpoint)
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


def convert(
    src: str | os.PathLike, dst: str | os.PathLike, *, metadata: dict | None = None
) -> Path:
    """Convert between the original ``.pth`` and napari-vmunet ``.safetensors``.

    The direction follows ``dst``'s extension: ``.safetensors`` writes our
    format (metadata from the source, or defaults for an original file,
    merged with ``metadata``; a ``latest.pth``'s training state goes to the
    sidecar); ``.pth``/``.pt`` writes the original ``best.pth`` layout
    (weights only: it has no place for metadata or training state).  Any
    accepted source format works in either direction.
    """
    dst = Path(dst).expanduser()
    if dst.suffix not in (OUR_SUFFIX, *ORIGINAL_SUFFIXES):
        raise ValueError(
            f'{dst}: cannot tell the output format from the extension '
            f'{dst.suffix or "(none)"!r}; use .safetensors (napari-vmunet) or '
            '.pth (original VM-UNet)'
        )
    if dst.suffix != OUR_SUFFIX and metadata:
        raise ValueError(
            'the original .pth layout has no metadata; class names, '
            'normalisation and tile size apply only when writing .safetensors'
        )
    ckpt = load_checkpoint(src)
    if dst.suffix == OUR_SUFFIX:
        return save_checkpoint(
            ckpt, dst, metadata=metadata, training_state=ckpt.training_state
        )
    return export_original(ckpt, dst)


def summary(ckpt: Checkpoint) -> dict:
    """JSON-ready description of a loaded checkpoint (used by ``info``)."""
    return {
        'path': str(ckpt.path),
        'source_format': ckpt.source_format,
        'architecture': ckpt.config,
        'architecture_text': describe_architecture(ckpt.config),
        'parameters': ckpt.parameter_count,
        'metadata': ckpt.metadata,
        'training_state': _state_summary(ckpt.training_state),
    }


def _state_summary(state: Mapping | None) -> dict | None:
    """Top-level entries of a training state: numbers and strings as they
    are, anything bigger as a short description."""
    if state is None:
        return None
    out = {}
    for key, value in state.items():
        if isinstance(value, _PLAIN) and not isinstance(value, complex):
            out[str(key)] = value
        elif isinstance(value, torch.Tensor):
            out[str(key)] = f'tensor {list(value.shape)}'
        elif isinstance(value, Mapping):
            out[str(key)] = f'dict with {len(value)} entries'
        else:
            out[str(key)] = type(value).__name__
    return out
