"""Reading a bioimage.io model package whose weights are a VM-UNet.

A package is a folder or a .zip holding ``bioimageio.yaml`` (or the older
name ``rdf.yaml``) next to the files it names.  What is used of it:

* ``weights.pytorch_state_dict``: the weights file (inside the package; a
  URL is refused: nothing is downloaded), its ``sha256`` (verified), and the
  architecture's ``callable`` and ``kwargs``.
* ``config.napari_vmunet.metadata`` when we wrote the package (class names,
  colours, normalisation, tile size, provenance); else class names from the
  output channel names and the normalisation read back from the
  preprocessing (:func:`._processing.normalization_from`).

Safety: the description is parsed with ``yaml.safe_load`` (plain data), the
weights are read with ``torch.load(weights_only=True)``, and no source file
shipped in the package is ever imported or executed: the network is always
our own :class:`~napari_vmunet.model.VMUNet`, built from keyword arguments
that must agree with the shapes of the weights.  So a package is accepted
only when its architecture is a VM-UNet (ours, ``napari_vmunet...VMUNet*``,
or the original repository's ``VMUNet`` class) *and* its weights are one.
Reading needs no bioimageio library.
"""

from __future__ import annotations

import os
import posixpath
import tempfile
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .._memory import check_fits_in_memory, format_bytes
from ..checkpoint._errors import CheckpointError, CheckpointWarning
from ..checkpoint._metadata import ARCH_KEYS, default_metadata, validate_metadata
from ._package import CONFIG_KEY, sha256_of
from ._processing import normalization_from

#: description file names, in the order they are looked for
RDF_NAMES = ('bioimageio.yaml', 'rdf.yaml')
#: a model description is a few kB; anything far larger is not one
MAX_RDF_BYTES = 4 * 2**20
#: keyword arguments VM-UNet's constructors take (ours and the original's)
_EXTRA_KWARGS = ('drop_path_rate', 'load_ckpt_path')
_OUR_CALLABLES = ('VMUNetLogits', 'VMUNet')


def is_package(path: str | os.PathLike) -> bool:
    """True for a bioimage.io package: a folder with ``bioimageio.yaml`` /
    ``rdf.yaml``, such a file itself, or a zip archive holding one at its
    top.  Never raises (an unreadable file is simply not a package)."""
    try:
        p = Path(path).expanduser()
        if p.is_dir():
            return any((p / name).is_file() for name in RDF_NAMES)
        if not p.is_file():
            return False
        if p.name in RDF_NAMES or p.name.endswith('.bioimageio.yaml'):
            return True
        with open(p, 'rb') as f:
            if f.read(4) != b'PK\x03\x04':
                return False
        with zipfile.ZipFile(p) as archive:
            return any(n in RDF_NAMES for n in archive.namelist())
    except (OSError, zipfile.BadZipFile, ValueError):
        return False


class _Package:
    """The files of a package, in a folder or a zip, read by name only.

    Names come from the description, so they are checked: relative, inside
    the package, no ``..``; a zip member's declared size must fit in memory
    and be plausible for its compressed size."""

    def __init__(self, path: Path):
        self.path = path
        self.zip: zipfile.ZipFile | None = None
        if path.is_file() and (
            path.name in RDF_NAMES or path.name.endswith('.bioimageio.yaml')
        ):
            self.root: Path | None = path.parent
            self.rdf = path.name
        elif path.is_dir():
            self.root = path
            self.rdf = next(n for n in RDF_NAMES if (path / n).is_file())
        else:
            self.root = None
            try:
                self.zip = zipfile.ZipFile(path)
            except (zipfile.BadZipFile, OSError) as err:
                raise CheckpointError(
                    f'is not a readable zip archive ({err}); copy or download '
                    'the package again',
                    path,
                ) from err
            names = set(self.zip.namelist())
            self.rdf = next(n for n in RDF_NAMES if n in names)

    def close(self) -> None:
        if self.zip is not None:
            self.zip.close()

    def member(self, name: str, what: str) -> str:
        """``name`` as a safe path inside the package (posix form)."""
        text = str(name).strip()
        if '://' in text:
            raise CheckpointError(
                f'names its {what} by the URL {text}, not a file inside the '
                'package; napari-vmunet never downloads: download the file, '
                'put it into the package folder and name it there',
                self.path,
            )
        norm = posixpath.normpath(text.replace('\\', '/'))
        if norm.startswith(('/', '../')) or norm == '..' or ':' in norm:
            raise CheckpointError(
                f'names its {what} {text!r}, a path outside the package; a '
                'package may only refer to its own files',
                self.path,
            )
        return norm

    def exists(self, name: str) -> bool:
        if self.zip is not None:
            return name in self.zip.namelist()
        return (self.root / name).is_file()

    def size(self, name: str) -> int:
        if self.zip is not None:
            return self.zip.getinfo(name).file_size
        return (self.root / name).stat().st_size

    def read(self, name: str, limit: int | None = None) -> bytes:
        size = self.size(name)
        if limit is not None and size > limit:
            raise CheckpointError(
                f'has a {name} of {format_bytes(size)}; a model description is '
                f'a few kB, so this is not one',
                self.path,
            )
        if self.zip is not None:
            info = self.zip.getinfo(name)
            if info.file_size > 100 * max(info.compress_size, 1) + 2**20:
                raise CheckpointError(
                    f'has a member {name} that claims {format_bytes(size)} from '
                    f'{format_bytes(info.compress_size)} compressed, far more than '
                    'any real file compresses; the archive is damaged or built '
                    'to exhaust memory, so it was not unpacked',
                    self.path,
                )
            try:
                check_fits_in_memory(size, f'unpacking {name}')
            except MemoryError as err:
                raise CheckpointError(str(err), self.path) from None
            return self.zip.read(name)
        return (self.root / name).read_bytes()

    def local_file(self, name: str, tmp: Path) -> Path:
        """A path to read ``name`` from: the file itself in a folder, a copy
        under ``tmp`` for a zip."""
        if self.zip is None:
            return self.root / name
        dest = tmp / posixpath.basename(name)
        dest.write_bytes(self.read(name))
        return dest


def load_package(path: str | os.PathLike):
    """The :class:`~napari_vmunet.checkpoint.Checkpoint` in a bioimage.io
    package (zip, folder, or its ``bioimageio.yaml``), on the CPU.

    Refused with :class:`CheckpointError`: descriptions that are not a model
    or not spec 0.5, packages without ``pytorch_state_dict`` weights, an
    architecture that is not a VM-UNet, a missing weights file, weights
    whose sha256 differs from the description's, weights that are not a
    VM-UNet, and keyword arguments or metadata that disagree with the
    weights (e.g. an edited ``num_classes``).
    """
    path = Path(path).expanduser()
    pkg = _Package(path)
    try:
        rdf = _read_rdf(pkg)
        weights = _state_dict_entry(pkg, rdf)
        arch = _architecture(pkg, weights)
        kwargs = _kwargs(pkg, arch)
        source = pkg.member(weights.get('source', ''), 'weights file')
        if not source or source == '.' or not pkg.exists(source):
            raise CheckpointError(
                f'names the weights file {source or "(none)"} in {pkg.rdf}, but '
                'the package has no such file; the package is incomplete: '
                'export or download it again',
                path,
            )
        sd = _weights(pkg, source, weights.get('sha256'))
    finally:
        pkg.close()
    return _checkpoint(path, pkg.rdf, rdf, arch, kwargs, sd, source)


def _read_rdf(pkg: _Package) -> dict:
    import yaml

    raw = pkg.read(pkg.rdf, MAX_RDF_BYTES)
    try:
        rdf = yaml.safe_load(raw.decode('utf-8'))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        problem = ' '.join(str(err).split())[:200]
        raise CheckpointError(
            f'has a {pkg.rdf} that is not valid YAML ({problem}); the package '
            'is damaged: export or download it again',
            pkg.path,
        ) from err
    if not isinstance(rdf, Mapping):
        raise CheckpointError(
            f'has a {pkg.rdf} that is not a bioimage.io description (no '
            'mapping of fields)',
            pkg.path,
        )
    kind = rdf.get('type')
    if kind != 'model':
        raise CheckpointError(
            f'is a bioimage.io {kind or "untyped"} description, not a model; '
            'pick a model package',
            pkg.path,
        )
    version = str(rdf.get('format_version', ''))
    if not version.startswith('0.5.'):
        raise CheckpointError(
            f'is a bioimage.io model of spec {version or "(unknown)"}; '
            'napari-vmunet reads spec 0.5 packages: convert it with '
            "bioimageio.spec's update_format (`bioimageio update-format`)",
            pkg.path,
        )
    return dict(rdf)


def _state_dict_entry(pkg: _Package, rdf: Mapping) -> dict:
    weights = rdf.get('weights')
    if not isinstance(weights, Mapping) or not weights:
        raise CheckpointError(f'has no weights in its {pkg.rdf}', pkg.path)
    entry = weights.get('pytorch_state_dict')
    if not isinstance(entry, Mapping):
        formats = ', '.join(map(str, weights))
        raise CheckpointError(
            f'has weights only as {formats}; napari-vmunet loads VM-UNet '
            'weights in the pytorch_state_dict format',
            pkg.path,
        )
    return dict(entry)


def _architecture(pkg: _Package, weights: Mapping) -> dict:
    arch = weights.get('architecture')
    if not isinstance(arch, Mapping):
        raise CheckpointError(
            f'describes no architecture for its pytorch_state_dict weights '
            f'in {pkg.rdf}',
            pkg.path,
        )
    arch = dict(arch)
    callable_ = str(arch.get('callable', ''))
    where = arch.get('import_from') or arch.get('source') or '?'
    ours = str(arch.get('import_from', '')).split('.')[0] == 'napari_vmunet'
    if (ours and callable_ not in _OUR_CALLABLES) or (
        not ours and callable_ != 'VMUNet'
    ):
        raise CheckpointError(
            f'describes the architecture {callable_ or "(none)"} from {where}, '
            'not a VM-UNet; napari-vmunet runs only VM-UNet weights (it builds '
            'its own network and never runs code from a package): use '
            'bioimageio.core or the tool the package was made for',
            pkg.path,
        )
    arch['ours'] = ours
    return arch


def _kwargs(pkg: _Package, arch: Mapping) -> dict:
    kwargs = arch.get('kwargs') or {}
    if not isinstance(kwargs, Mapping):
        raise CheckpointError(
            f'has architecture kwargs in {pkg.rdf} that are not a mapping',
            pkg.path,
        )
    unknown = [k for k in kwargs if k not in (*ARCH_KEYS, *_EXTRA_KWARGS)]
    if unknown:
        raise CheckpointError(
            f'gives VM-UNet the keyword argument(s) {", ".join(map(str, unknown))}'
            f' in {pkg.rdf}, which it does not take; the description was '
            'edited or is for another network',
            pkg.path,
        )
    if kwargs.get('load_ckpt_path') is not None:
        raise CheckpointError(
            f'asks VM-UNet to load another file (load_ckpt_path='
            f'{kwargs["load_ckpt_path"]!r}) in {pkg.rdf}; napari-vmunet only '
            'loads the weights inside the package',
            pkg.path,
        )
    missing = [k for k in ARCH_KEYS if k not in kwargs]
    if arch.get('ours') and missing:
        raise CheckpointError(
            f'lacks the architecture kwargs {", ".join(missing)} in {pkg.rdf}, '
            'which napari-vmunet always writes; the description was edited',
            pkg.path,
        )
    return {k: kwargs[k] for k in ARCH_KEYS if k in kwargs}


def _weights(pkg: _Package, source: str, expected: Any) -> dict:
    """The state dict in ``source``, after checking its sha256."""
    from ..checkpoint._io import torch_load
    from ..checkpoint._state import clean_state_dict, require_vmunet

    with tempfile.TemporaryDirectory(prefix='napari-vmunet-package-') as tmp:
        local = pkg.local_file(source, Path(tmp))
        actual = sha256_of(local)
        if expected is None:
            warnings.warn(
                f'{pkg.path}: {pkg.rdf} records no sha256 for {source}, so the '
                'weights cannot be checked against the description',
                CheckpointWarning,
                stacklevel=4,
            )
        elif str(expected).strip().lower() != actual:
            raise CheckpointError(
                f'has a weights file {source} whose sha256 ({actual[:16]}…) '
                f'differs from the one {pkg.rdf} records ({str(expected)[:16]}…): '
                'the file was changed after packaging or is damaged; export or '
                'download the package again',
                pkg.path,
            )
        try:
            obj = torch_load(local)
            sd = clean_state_dict(obj)
            require_vmunet(sd)
        except CheckpointError as err:
            raise CheckpointError(
                f'has a weights file {source} that {err.problem}', pkg.path
            ) from err
    return sd


def _checkpoint(
    path: Path,
    rdf_name: str,
    rdf: Mapping,
    arch: Mapping,
    kwargs: Mapping,
    sd: dict,
    source: str,
):
    from ..checkpoint import Checkpoint
    from ..checkpoint._state import infer_config, load_strict

    try:
        config = infer_config(sd)
    except CheckpointError as err:
        raise CheckpointError(
            f'has a weights file {source} that {err.problem}', path
        ) from err
    wrong = [
        f'{k}={kwargs[k]!r} but the weights have {config[k]!r}'
        for k in ARCH_KEYS
        if k in kwargs and _plain(kwargs[k]) != config[k]
    ]
    if wrong:
        raise CheckpointError(
            f'gives the architecture {"; ".join(wrong)} in {rdf_name}: the '
            f'description was edited or belongs to other weights than {source}; '
            'export or download the package again',
            path,
        )
    model = load_strict(config, sd, f'architecture in its {rdf_name}')
    metadata = _metadata(path, rdf_name, rdf, config)
    return Checkpoint(model, config, metadata, path, 'bioimageio', None)


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _metadata(path: Path, rdf_name: str, rdf: Mapping, config: dict) -> dict:
    """Our metadata from the package: the document we stored, or what the
    description says (class names, normalisation)."""
    ours = (
        (rdf.get('config') or {}).get(CONFIG_KEY)
        if isinstance(rdf.get('config'), Mapping)
        else None
    )
    if isinstance(ours, Mapping) and 'metadata' in ours:
        try:
            meta = validate_metadata(ours['metadata'])
        except ValueError as err:
            raise CheckpointError(
                f'has napari-vmunet metadata in {rdf_name} that is invalid: '
                f'{err}; the description was edited: export the package again',
                path,
            ) from None
        if meta['architecture'] != config:
            diff = '; '.join(
                f'{k}: metadata {meta["architecture"][k]}, weights {config[k]}'
                for k in ARCH_KEYS
                if meta['architecture'][k] != config[k]
            )
            raise CheckpointError(
                f'has napari-vmunet metadata in {rdf_name} that disagrees with '
                f'its weights ({diff}); the description was edited: export the '
                'package again',
                path,
            )
        return meta
    return _foreign_metadata(path, rdf, config)


def _foreign_metadata(path: Path, rdf: Mapping, config: dict) -> dict:
    """Defaults for a VM-UNet package written by other software."""
    name = str(rdf.get('name') or path.name)
    notes = [f'Imported from the bioimage.io package "{name}" ({path.name}).']
    inputs = rdf.get('inputs') or [{}]
    outputs = rdf.get('outputs') or [{}]
    first_in = inputs[0] if isinstance(inputs[0], Mapping) else {}
    norm = normalization_from(first_in.get('preprocessing'))
    if norm is None:
        norm = {'mode': 'minmax'}
        notes.append(
            'Its preprocessing is not one napari-vmunet reproduces; the '
            'default (per-image min-max to [0, 255]) is used instead.'
        )
    k = config['num_classes']
    names = None
    first_out = outputs[0] if isinstance(outputs[0], Mapping) else {}
    for axis in first_out.get('axes') or []:
        if isinstance(axis, Mapping) and axis.get('type') == 'channel':
            found = [str(n) for n in axis.get('channel_names') or []]
            if k == 1 and len(found) == 1:
                names = ['background', found[0]]
            elif k > 1 and len(found) == k:
                names = found
    overrides: dict = {'normalization': norm, 'notes': ' '.join(notes)}
    if names and len(set(names)) == len(names):
        overrides['class_names'] = names
    try:
        return default_metadata(config, **overrides)
    except ValueError:
        overrides.pop('class_names', None)
        return default_metadata(config, **overrides)
