"""Writing files so that a crash never destroys anything: the one home of the
project's atomic-write rule, used by images (``io``) and checkpoints alike.

Every file is first written to a hidden temporary sibling
``.<stem>.<random>.partial<ext>`` (same folder, so the final rename stays on
one file system and is atomic; the real extension is kept because nibabel
and imageio choose the format from it), flushed to disk with ``fsync``, and
only then renamed over its destination with :func:`os.replace`.  Several
files written together are all written and fsynced before the first rename.
A failure removes the temporary files and leaves every destination as it
was; a *kill* may leave a complete temporary file behind, which
:func:`stale_temporaries` finds (checkpoints recover from it) and the next
write of the same destination removes.

The temporary names are recognisable (:func:`is_temporary`), so a folder
given to ``napari-vmunet predict`` never feeds a half-written file back in.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

#: marks the temporary files this module writes
PARTIAL = '.partial'
#: compound extensions that count as one (nibabel needs ``.nii.gz`` whole)
_COMPOUND = ('.nii.gz', '.ome.tiff', '.ome.tif')

Writer = Callable[[Path], None]


def split_name(name: str) -> tuple[str, str]:
    """``('scan', '.nii.gz')`` for ``'scan.nii.gz'``; compound extensions
    (``.nii.gz``, ``.ome.tif``) count as one."""
    low = name.lower()
    for ext in _COMPOUND:
        if low.endswith(ext) and len(name) > len(ext):
            return name[: -len(ext)], name[-len(ext) :]
    stem, dot, ext = name.rpartition('.')
    if not dot or not stem:
        return name, ''
    return stem, '.' + ext


def is_temporary(path: str | os.PathLike) -> bool:
    """True for a temporary file of an unfinished or interrupted write: ours
    (``.x.1a2b3c4d.partial.tif``), or an older release's ``.x.*.tmp``."""
    name = Path(path).name
    if not name.startswith('.'):
        return False
    stem, _ = split_name(name)
    return stem.endswith(PARTIAL) or name.endswith('.tmp')


def stale_temporaries(dest: str | os.PathLike) -> list[Path]:
    """Temporary files that interrupted writes of ``dest`` left behind,
    newest first."""
    dest = Path(dest)
    stem, ext = split_name(dest.name)
    patterns = (f'.{stem}.*{PARTIAL}{ext}', f'.{dest.name}.*.tmp')
    found: set[Path] = set()
    with contextlib.suppress(OSError):
        for pattern in patterns:
            found.update(p for p in dest.parent.glob(pattern) if p.is_file())
    return sorted(found, key=_mtime, reverse=True)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def remove_stale_temporaries(dest: str | os.PathLike) -> list[Path]:
    """Delete what interrupted writes of ``dest`` left; returns the removed."""
    removed = []
    for tmp in stale_temporaries(dest):
        with contextlib.suppress(OSError):
            tmp.unlink()
            removed.append(tmp)
    return removed


def temporary_sibling(dest: Path) -> Path:
    """A new, empty temporary file next to ``dest``.

    Created with ``open(..., 'x')`` so it gets the usual permissions (the
    umask), unlike :func:`tempfile.mkstemp`'s owner-only 0600.
    """
    stem, ext = split_name(dest.name)
    for _ in range(100):
        tmp = dest.with_name(f'.{stem}.{secrets.token_hex(4)}{PARTIAL}{ext}')
        try:
            with open(tmp, 'x'):
                return tmp
        except FileExistsError:
            continue
    raise OSError(f'cannot create a temporary file next to {dest}')  # pragma: no cover


def write_atomically(jobs: Sequence[tuple[Path, Writer]]) -> list[Path]:
    """Write several files so that each is either its old or its new version.

    ``jobs`` is a list of ``(destination, write)``; ``write(tmp)`` writes the
    new content to the temporary path it is given.  Leftovers of earlier
    interrupted writes of the same destinations are removed first.  All
    temporary files are written and fsynced before the first rename; the
    renames then happen in the order given, so a caller puts first the file
    that must never be older than the others.  If any writer fails, every
    temporary file is removed and no destination has changed.  Missing
    parent folders are created.  Returns the destinations.
    """
    temps: list[Path] = []
    dests = [Path(dest).absolute() for dest, _ in jobs]
    try:
        for dest, (_, write) in zip(dests, jobs, strict=True):
            dest.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(dest)
            tmp = temporary_sibling(dest)
            temps.append(tmp)
            write(tmp)
            fsync_file(tmp)
            _copy_mode(dest, tmp)
        for tmp, dest in zip(temps, dests, strict=True):
            os.replace(tmp, dest)
    except BaseException:
        for tmp in temps:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
        raise
    for directory in dict.fromkeys(dest.parent for dest in dests):
        fsync_dir(directory)
    return dests


def write_atomically_one(path: str | os.PathLike, write: Writer) -> Path:
    """:func:`write_atomically` for a single file; returns its path."""
    return write_atomically([(Path(path), write)])[0]


def fsync_file(path: Path) -> None:
    with open(path, 'rb+') as f:
        os.fsync(f.fileno())


def fsync_dir(directory: Path) -> None:
    """Make a rename itself durable (POSIX); not possible on Windows."""
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _copy_mode(dest: Path, tmp: Path) -> None:
    """A replaced file keeps its permissions; a new one gets the usual ones
    (some writers, e.g. safetensors, recreate the file owner-only)."""
    try:
        mode = dest.stat().st_mode & 0o7777
    except OSError:
        mode = 0o666 & ~_umask()
    with contextlib.suppress(OSError):
        os.chmod(tmp, mode)


def _umask() -> int:
    """The process umask, read without changing it (``os.umask`` would, which
    races with other threads creating files)."""
    with contextlib.suppress(OSError, ValueError), open('/proc/self/status') as f:
        for line in f:
            if line.startswith('Umask:'):
                return int(line.split()[1], 8)
    return 0o022


def remove_quietly(paths: Iterable[Path]) -> None:
    """Delete files that may or may not exist."""
    for p in paths:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def check_writable_folder(folder: str | os.PathLike, what: str = 'output') -> Path:
    """Make sure files can be created in ``folder`` (created if missing),
    before any long computation whose results would then be lost.

    Tries for real (a temporary file is created and removed), which is the
    only reliable test with ACLs, network shares and read-only mounts.
    Raises ``PermissionError``/``OSError`` with a message naming the folder.
    """
    folder = Path(folder).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = temporary_sibling(folder / 'write-test')
        probe.unlink()
    except FileExistsError as err:
        raise NotADirectoryError(
            f'cannot write the {what} into {folder}: it is a file, not a folder'
        ) from err
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise PermissionError(
            f'cannot write the {what} into {folder} ({reason}); choose a folder '
            'you can write to'
        ) from err
    return folder
