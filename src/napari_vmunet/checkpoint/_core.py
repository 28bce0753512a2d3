"""Loading, saving and converting VM-UNet checkpoints: the entry points.

One format per module below this one: :mod:`._original` (the original
``.pth`` files), :mod:`._sidecar` (the training state next to a
checkpoint), the bioimage.io reader (:mod:`napari_vmunet.bioimageio`); the
metadata's schema in :mod:`._metadata` and :mod:`._schema`.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .._files import remove_quietly, stale_temporaries, write_atomically
from .._version import __version__
from ..model import VMUNet
from ..rules.input_stats import check_stats
from ..zoo import resolve_model
from ._checkpoint import Checkpoint, unwrap
from ._errors import CheckpointError
from ._io import (
    check_file,
    describe_unreadable,
    prepare_destination,
    read_safetensors,
    sniff,
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
from ._original import ORIGINAL_SUFFIXES, OUR_SUFFIX, export_original, load_original
from ._sidecar import (
    PLAIN,
    TRAIN_STATE_ID_KEY,
    check_training_state,
    read_sidecar,
    sidecar_document,
    training_state_path,
)
from ._state import describe_architecture, infer_config, load_strict

#: safetensors metadata entry: what the training inputs looked like
#: (``rules.input_stats``); outside the validated document, so older readers
#: ignore it and older files simply have none
TRAINING_STATS_KEY = 'napari_vmunet_training_stats'


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
    # a built-in model's name works here as on the command line, so the
    # Python API (Predictor('demo-nuclei'), Trainer's init) takes it too
    try:
        path = resolve_model(path)
    except FileNotFoundError as err:
        raise CheckpointError(f'{err}; give the path of a checkpoint file') from None
    from ..bioimageio._import import is_package, load_package

    try:
        if is_package(path):
            ckpt = load_package(path)
        elif (kind := sniff(check_file(path))) == 'safetensors':
            ckpt = _load_ours(path)
        else:
            ckpt = load_original(path, kind)
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
    training_state = read_sidecar(path, st_meta.get(TRAIN_STATE_ID_KEY))
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
    net, base = unwrap(model)
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
    meta = _metadata_to_save(net, base, metadata)
    if training_state is not None:
        training_state = check_training_state(training_state)
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
        sidecar = sidecar_document(training_state, pair_id)
        jobs.append((side, lambda tmp: torch.save(sidecar, tmp)))
    write_atomically(jobs)
    if training_state is None:
        remove_quietly([side, *stale_temporaries(side)])
    return path


def _metadata_to_save(net: VMUNet, base: dict | None, metadata: dict | None) -> dict:
    """The document a save writes: ``metadata`` merged over ``base`` (a
    loaded checkpoint's) or the defaults, stamped with now and this version,
    validated."""
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
    return merge_metadata(base, metadata)


def _save_safetensors(tensors: dict, tmp: Path, st_meta: dict) -> None:
    # looked up at call time, so tests can make the serializer fail midway
    import safetensors.torch

    safetensors.torch.save_file(tensors, str(tmp), metadata=st_meta)


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
        if isinstance(value, PLAIN) and not isinstance(value, complex):
            out[str(key)] = value
        elif isinstance(value, torch.Tensor):
            out[str(key)] = f'tensor {list(value.shape)}'
        elif isinstance(value, Mapping):
            out[str(key)] = f'dict with {len(value)} entries'
        else:
            out[str(key)] = type(value).__name__
    return out
