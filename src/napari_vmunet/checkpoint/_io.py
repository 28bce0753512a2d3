"""Reading checkpoint files without running code, and writing them atomically.

Reading: a file is first *sniffed* (its first bytes say whether it is a
PyTorch zip archive, a legacy PyTorch pickle, a safetensors file, text or
something else), so that every failure can be explained in words a user acts
on instead of an unpickler's traceback.  PyTorch files are only ever opened
with ``torch.load(..., weights_only=True)``: the restricted unpickler builds
tensors, numbers and plain containers and refuses every other Python object,
so nothing in a file can run.  A handful of harmless *data* types that real
VM-UNet / VMamba files contain are mapped onto plain types (see
:func:`_extra_safe_globals`).

Writing goes through :mod:`napari_vmunet._files` (temporary file, fsync,
rename), so a failure or a crash never leaves a damaged checkpoint.

Size limits: a few kilobytes can claim gigabytes (a zip whose members
decompress a thousandfold, a header with absurd values), so what a file
declares is checked against its real size and the memory available before
anything is allocated (:func:`check_zip_size`).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import re
import threading
import warnings
import zipfile
from collections import OrderedDict
from pathlib import Path

import torch

from .._memory import check_fits_in_memory, format_bytes
from ._errors import CheckpointError

#: what :func:`sniff` can answer
KINDS = ('torch-zip', 'pickle', 'safetensors', 'text', 'binary')

_SNIFF_BYTES = 4096
# the largest safetensors header the library itself accepts (100 MB)
_MAX_SAFETENSORS_HEADER = 100_000_000
_CHECKPOINT_SUFFIXES = ('.pth', '.pt', '.safetensors', '.ckpt', '.bin')

# torch's allow-list of extra globals is process-wide state; our additions are
# made (and removed) under this lock so concurrent loads do not race on it
_SAFE_GLOBALS_LOCK = threading.Lock()


def check_file(path: Path) -> Path:
    """Fail early, in plain words, for paths that are not a readable file."""
    if not path.exists():
        raise CheckpointError(
            'no such file (FileNotFoundError); check the path and the spelling',
            path,
        )
    if path.is_dir():
        found = sorted(
            p.name for p in path.iterdir() if p.suffix in _CHECKPOINT_SUFFIXES
        )
        hint = (
            f'; it contains {", ".join(found[:5])}' + (' ...' if len(found) > 5 else '')
            if found
            else ''
        )
        raise CheckpointError(
            f'is a folder, not a checkpoint file; pass the .pth or .safetensors '
            f'file inside it{hint}',
            path,
        )
    if not os.access(path, os.R_OK):
        raise CheckpointError(
            'cannot be read (permission denied); check the file permissions', path
        )
    if path.stat().st_size == 0:
        raise CheckpointError(
            'is empty (0 bytes): it was not written or copied completely; '
            'copy or download it again',
            path,
        )
    return path


def sniff(path: Path) -> str:
    """Say what kind of file ``path`` is from its first bytes (one of ``KINDS``)."""
    size = path.stat().st_size
    with open(path, 'rb') as f:
        head = f.read(_SNIFF_BYTES)
    if head.startswith(b'PK\x03\x04'):
        return 'torch-zip'
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return 'pickle'
    if len(head) >= 9:
        n = int.from_bytes(head[:8], 'little')
        if 2 <= n <= min(_MAX_SAFETENSORS_HEADER, size - 8) and head[8:9] == b'{':
            return 'safetensors'
    if b'\x00' not in head:
        try:
            head.decode('utf-8')
            return 'text'
        except UnicodeDecodeError:
            # a multi-byte character cut at the sniff boundary is still text
            with contextlib.suppress(UnicodeDecodeError):
                head[:-3].decode('utf-8')
                return 'text'
    return 'binary'


def describe_unreadable(path: Path, kind: str) -> str:
    """The problem text for files that are neither PyTorch nor safetensors."""
    if kind == 'text':
        with open(path, 'rb') as f:
            text = f.read(200).decode('utf-8', errors='replace')
        low = text.lstrip().lower()
        if low.startswith(('<!doctype html', '<html')):
            return (
                'is an HTML web page, not a checkpoint: the download saved the '
                "page (e.g. a Google Drive or Baidu 'confirm download' page) "
                'instead of the file; download the file itself again'
            )
        if low.startswith('version https://git-lfs'):
            return (
                'is a Git LFS pointer, not the checkpoint itself; run '
                '`git lfs pull` in that repository to fetch the real file'
            )
        first = ' '.join(text.split())[:60]
        return (
            f'is a text file (it starts with {first!r}), not a checkpoint; pass '
            'the .pth file written by VM-UNet training or a .safetensors file '
            'written by napari-vmunet'
        )
    return (
        'is not a PyTorch or safetensors checkpoint (its first bytes match '
        'neither format); the file is damaged or of another kind, so copy it '
        'again or pick the right file'
    )


def _extra_safe_globals() -> list:
    """Harmless data types found in real files, mapped onto plain types.

    * numpy scalars and dtypes: the original ``train.py`` stores ``min_loss``
      / ``loss`` as ``numpy.float64`` in ``latest.pth`` (files from numpy 1.x
      name the module ``numpy.core``, numpy 2 ``numpy._core``).  PyTorch's own
      docs recommend allow-listing exactly these.
    * ``yacs.config.CfgNode``: VMamba's training script saves its config in
      the pretrained file.  It is a ``dict`` subclass; it is rebuilt here as a
      plain ``OrderedDict`` so neither yacs nor any of its code is needed.
    """
    import numpy as np

    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import scalar
    entries: list = [
        (scalar, 'numpy.core.multiarray.scalar'),
        (scalar, 'numpy._core.multiarray.scalar'),
        (np.dtype, 'numpy.dtype'),
        (OrderedDict, 'yacs.config.CfgNode'),
    ]
    for code in ('?', 'b', 'B', 'h', 'H', 'i', 'I', 'l', 'L', 'q', 'Q', 'e', 'f', 'd'):
        cls = type(np.dtype(code))
        if cls is not np.dtype:  # numpy >= 1.25 has one class per dtype
            entries.append((cls, f'{cls.__module__}.{cls.__qualname__}'))
    return entries


def _torch_version() -> tuple[int, int]:
    major, minor = torch.__version__.split('.')[:2]
    return int(major), int(''.join(c for c in minor if c.isdigit()) or 0)


def _allow_extra_globals() -> contextlib.AbstractContextManager:
    """Allow :func:`_extra_safe_globals` for one load.

    The ``(type, 'name')`` form needs torch >= 2.6 (and ``safe_globals``
    2.5); on older torch the extras are simply not allowed, so files holding
    numpy scalars or a yacs config are refused with the usual message.
    """
    if _torch_version() < (2, 6) or not hasattr(torch.serialization, 'safe_globals'):
        return contextlib.nullcontext()
    return torch.serialization.safe_globals(_extra_safe_globals())


def torch_load(path: Path, kind: str | None = None) -> object:
    """``torch.load`` with ``weights_only=True``; any failure -> CheckpointError."""
    kind = kind or sniff(path)
    if kind == 'safetensors':
        raise CheckpointError(
            'is a safetensors file, not a PyTorch .pth file; load it with '
            'load_checkpoint or rename it to end in .safetensors',
            path,
        )
    if kind not in ('torch-zip', 'pickle'):
        raise CheckpointError(describe_unreadable(path, kind), path)
    if kind == 'torch-zip':
        check_zip_size(path)
    try:
        with _SAFE_GLOBALS_LOCK, _allow_extra_globals(), warnings.catch_warnings():
            warnings.filterwarnings('ignore', message='.*pickle protocol.*')
            return torch.load(path, map_location='cpu', weights_only=True)
    except Exception as err:  # noqa: BLE001 - every failure becomes one message
        raise CheckpointError(explain_torch_failure(err, kind, path), path) from err


#: weights hardly compress (float noise): a far higher ratio is a zip bomb
_MAX_ZIP_RATIO = 100
_ZIP_RATIO_FLOOR = 256 * 2**20


def check_zip_size(path: Path) -> None:
    """Refuse a zip whose members decompress to more than fits in memory, or
    implausibly far beyond the file's size, before torch inflates them.

    ``torch.save`` stores tensors uncompressed, so a real checkpoint's
    uncompressed size is about its file size; a 2 MB file declaring 4 GB is
    built to exhaust memory.  A damaged directory is left for ``torch.load``
    to report as truncated.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            total = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return
    size = max(path.stat().st_size, 1)
    if total > _ZIP_RATIO_FLOOR and total > _MAX_ZIP_RATIO * size:
        raise CheckpointError(
            f'is a {format_bytes(size)} zip archive whose contents claim '
            f'{format_bytes(total)} ({total / size:.0f} times its size), far '
            'more than any checkpoint compresses; it is damaged or built to '
            'exhaust memory, so it was not opened'
        )
    try:
        check_fits_in_memory(total, 'unpacking it')
    except MemoryError as err:
        raise CheckpointError(str(err), path) from None


def _is_complete_zip(path: Path) -> bool:
    """True when the zip's directory is intact (so it is not truncated)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return bool(archive.namelist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return False


def explain_torch_failure(
    err: BaseException, kind: str, path: Path | None = None
) -> str:
    """Turn what ``torch.load`` raised into a sentence with a remedy.

    The restricted unpickler's own message recommends ``weights_only=False``;
    that advice is deliberately not passed on.
    """
    text = str(err)
    if isinstance(err, pickle.UnpicklingError) or 'Weights only load' in text:
        names = sorted(set(re.findall(r'GLOBAL ([\w.]+)', text)))
        if names:
            return (
                f'contains Python objects that would run code when loaded '
                f'({", ".join(names)}); napari-vmunet loads only tensors, '
                'numbers and plain containers, so it refused the file and ran '
                'nothing. If you trust where it came from, re-save just the '
                'weights in that environment: '
                'torch.save(model.state_dict(), "weights.pth")'
            )
        if kind == 'pickle' and 'Unsupported operand' in text:
            return (
                'is a plain Python pickle, not a PyTorch checkpoint; '
                'napari-vmunet refused it and ran nothing. Save weights with '
                'torch.save(model.state_dict(), "weights.pth")'
            )
        return (
            'contains pickled data napari-vmunet does not load (only tensors, '
            'numbers and plain containers are allowed); it refused the file '
            'and ran nothing. Re-save just the weights with '
            'torch.save(model.state_dict(), "weights.pth")'
        )
    truncated = (
        'is truncated or damaged ({detail}): the copy or download probably '
        'stopped early; copy or download it again'
    )
    if kind == 'torch-zip':
        if path is not None and _is_complete_zip(path):
            return (
                'is a zip archive but not a PyTorch checkpoint (it lacks the '
                'archive/data.pkl layout torch.save writes); unpack it, or pick '
                'the .pth file itself'
            )
        return truncated.format(detail='its zip archive is incomplete')
    if 'magic number' in text.lower():
        return (
            'is a plain Python pickle, not a PyTorch checkpoint; save weights '
            'with torch.save(model.state_dict(), "weights.pth")'
        )
    if isinstance(err, EOFError) or 'EOF' in text or 'corrupt' in text.lower():
        return truncated.format(detail='the data ends too early')
    first = ' '.join(text.split())[:200] or type(err).__name__
    return (
        f'could not be read as a PyTorch checkpoint ({first}); make sure it is '
        'a VM-UNet .pth file or a napari-vmunet .safetensors file'
    )


def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """All tensors (on the CPU) and the string metadata of a safetensors file."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework='pt', device='cpu') as f:
            metadata = dict(f.metadata() or {})
            tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118
    except Exception as err:  # noqa: BLE001 - every failure becomes one message
        text = ' '.join(str(err).split())
        if 'incomplete' in text or 'not fully covered' in text or 'length' in text:
            problem = (
                f'is a truncated or damaged safetensors file ({text}); copy or '
                'download it again'
            )
        else:
            problem = (
                f'is not a readable safetensors file ({text}); copy it again or '
                're-save it with napari-vmunet'
            )
        raise CheckpointError(problem, path) from err
    return tensors, metadata


# --------------------------------------------------------------------------
# writing (atomic writes themselves live in napari_vmunet._files)


def prepare_destination(path: str | os.PathLike) -> Path:
    """Resolve ``~``, create missing parent folders, refuse folders as targets."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise IsADirectoryError(
            f'cannot write {path}: it is a folder; give a file name'
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    return path
