"""The metadata a napari-vmunet checkpoint carries, its defaults and its checks.

Schema (``format_version`` 1), stored as one JSON string under the
safetensors metadata key ``"napari_vmunet"``::

    {"format_version": 1,
     "architecture": {num_classes, input_channels, depths, depths_decoder,
                      dims, dims_decoder, d_state},
     "classes": {"names": [...], "colors": ["#rrggbb" | null, ...]},
     "input": {"channels": int,
               "normalization": {"mode": "minmax"}
                              | {"mode": "window", "low": float, "high": float}
                              | {"mode": "percentile", "low": float, "high": float},
               "tile_size": [h, w]},
     "provenance": {"initialized_from", "training_data", "epochs",
                    "best_val_dice", "created", "package_version", "command",
                    "notes"}}

``classes.names`` has ``max(2, num_classes)`` entries: a one-class model
outputs a foreground probability (sigmoid), so its names are
``[background, foreground]``; a multi-class model has one name per output
channel, background first.  Tile sizes are multiples of 32 because VM-UNet
downsamples five times by two.
"""

from __future__ import annotations

import copy
import datetime as _dt
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from .._version import __version__
from ..rules.tiling import DEFAULT_TILE, MAX_TILE, TILE_MULTIPLE, check_tile

FORMAT_VERSION = 1
#: the safetensors metadata key that holds the JSON document
METADATA_KEY = 'napari_vmunet'
#: the VMUNet keyword arguments an architecture records
ARCH_KEYS = (
    'num_classes',
    'input_channels',
    'depths',
    'depths_decoder',
    'dims',
    'dims_decoder',
    'd_state',
)
SECTIONS = ('format_version', 'architecture', 'classes', 'input', 'provenance')
PROVENANCE_KEYS = (
    'initialized_from',
    'training_data',
    'epochs',
    'best_val_dice',
    'created',
    'package_version',
    'command',
    'notes',
)
NORMALIZATION_MODES = ('minmax', 'window', 'percentile', 'none')
_COLOR = re.compile(r'^#[0-9a-fA-F]{6}$')
# keyword shortcuts accepted by default_metadata(), and where they go
_SHORTCUTS = {
    'class_names': ('classes', 'names'),
    'class_colors': ('classes', 'colors'),
    'normalization': ('input', 'normalization'),
    'tile_size': ('input', 'tile_size'),
    **{key: ('provenance', key) for key in PROVENANCE_KEYS},
}


def now_iso() -> str:
    """The current UTC time, ISO 8601 to the second (provenance.created)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec='seconds')


def architecture_of(config: Mapping[str, Any]) -> dict:
    """The recorded subset of a VMUNet config, as plain ints and lists.

    ``drop_path_rate`` (in ``VMUNet.config``) only matters while training and
    cannot be read back from tensors, so it is not part of the architecture.
    """
    missing = [k for k in ARCH_KEYS if k not in config]
    if missing:
        raise ValueError(f'the model config lacks {", ".join(missing)}')
    arch = {}
    for key in ARCH_KEYS:
        value = config[key]
        arch[key] = (
            [int(v) for v in value]
            if isinstance(value, Sequence) and not isinstance(value, str)
            else value
        )
    return arch


def default_class_names(num_classes: int) -> list[str]:
    """``[background, foreground]`` for one class, else background + class i."""
    if num_classes == 1:
        return ['background', 'foreground']
    return ['background'] + [f'class {i}' for i in range(1, num_classes)]


def parse_normalization(value: str | Mapping) -> dict:
    """``'minmax'``, ``'none'``, ``'window:-125,275'``,
    ``'percentile:1,99.8'`` (or a dict) -> the normalisation dict of the
    schema (not yet validated).  A further ``:A,B`` sets the output range,
    e.g. ``'window:-125,275:0,1'`` for the original Synapse models, which
    were trained on CT windowed to [-125, 275] HU and scaled to [0, 1]."""
    if isinstance(value, Mapping):
        return dict(value)
    if not isinstance(value, str):
        raise ValueError(f'normalization must be a string or a dict, got {value!r}')
    mode, _, rest = value.strip().partition(':')
    mode = mode.strip().lower()
    bounds_text, _, range_text = rest.partition(':')
    out: dict | None = None
    if mode in ('minmax', 'none') and not bounds_text:
        out = {'mode': mode}
    elif mode == 'percentile' and not bounds_text:
        out = {'mode': 'percentile', 'low': 1.0, 'high': 99.8}
    elif mode in ('window', 'percentile'):
        bounds = _two_floats(bounds_text)
        if bounds:
            out = {'mode': mode, 'low': bounds[0], 'high': bounds[1]}
    if out is not None and range_text:
        out_range = _two_floats(range_text)
        out = {**out, 'range': list(out_range)} if out_range else None
    if out is None:
        raise ValueError(
            f'cannot read normalization {value!r}; use minmax, none, '
            'window:LOW,HIGH (e.g. window:-125,275) or percentile:LOW,HIGH '
            '(e.g. percentile:1,99.8), optionally followed by :A,B for the '
            "output range (default: the model's own, 0,255 for a new one)"
        )
    return out


def _two_floats(text: str) -> tuple[float, float] | None:
    """``'-125,275'`` -> ``(-125.0, 275.0)``; None if it is not two numbers."""
    parts = text.split(',')
    try:
        return (float(parts[0]), float(parts[1])) if len(parts) == 2 else None
    except ValueError:
        return None


def _tile(value: Any) -> Any:
    """An int tile size means a square tile."""
    if isinstance(value, int) and not isinstance(value, bool):
        return [value, value]
    return list(value) if isinstance(value, (list, tuple)) else value


def default_metadata(config: Mapping[str, Any], **overrides: Any) -> dict:
    """Complete, valid metadata for a model with ``config``.

    Defaults follow the original VM-UNet: per-image min-max normalisation
    (the original maps every image to [0, 255]), 256x256 tiles (ISIC), class
    names ``background``/``foreground`` or ``class i``, no colours.

    ``overrides`` are either whole sections merged into the defaults
    (``classes={...}``, ``input={...}``, ``provenance={...}``) or shortcuts:
    ``class_names``, ``class_colors``, ``normalization`` (dict or
    ``'window:-125,275'``-style string), ``tile_size`` (int or ``[h, w]``)
    and any provenance field (``epochs=12``, ``notes='...'``).  The result
    is validated (``ValueError`` names the bad field).
    """
    arch = architecture_of(config)
    n_names = max(2, arch['num_classes'])
    meta = {
        'format_version': FORMAT_VERSION,
        'architecture': arch,
        'classes': {
            'names': default_class_names(arch['num_classes']),
            'colors': [None] * n_names,
        },
        'input': {
            'channels': arch['input_channels'],
            'normalization': {'mode': 'minmax'},
            'tile_size': [DEFAULT_TILE, DEFAULT_TILE],
        },
        'provenance': {
            'initialized_from': None,
            'training_data': None,
            'epochs': 0,
            'best_val_dice': None,
            'created': now_iso(),
            'package_version': __version__,
            'command': None,
            'notes': None,
        },
    }
    sections, shortcuts = {}, {}
    for key, value in overrides.items():
        if key in SECTIONS:
            sections[key] = value
        elif key in _SHORTCUTS:
            shortcuts[key] = value
        else:
            allowed = ', '.join([*SECTIONS[1:], *_SHORTCUTS])
            raise TypeError(f'unknown metadata field {key!r}; use one of {allowed}')
    for key, value in shortcuts.items():
        section, field = _SHORTCUTS[key]
        sections.setdefault(section, {})
        if not isinstance(sections[section], Mapping):
            raise ValueError(f'metadata section {section!r} must be a dict')
        sections[section] = {**sections[section], field: value}
    return merge_metadata(meta, sections)


def merge_metadata(base: Mapping, overrides: Mapping | None) -> dict:
    """``base`` with each section of ``overrides`` merged in one level deep,
    then validated.

    ``architecture`` and ``input.channels`` describe the model and may only
    be repeated, not changed.  New class names without colours get no
    colours; a normalisation string is parsed.
    """
    meta = copy.deepcopy(dict(base))
    for section, value in (overrides or {}).items():
        if section not in SECTIONS:
            raise ValueError(
                f'unknown metadata section {section!r}; '
                f'the sections are {", ".join(SECTIONS)}'
            )
        if section == 'format_version':
            meta['format_version'] = value
            continue
        if not isinstance(value, Mapping):
            raise ValueError(f'metadata section {section!r} must be a dict')
        value = dict(value)
        if section == 'architecture':
            given = architecture_of({**meta['architecture'], **value})
            if given != meta['architecture']:
                raise ValueError(
                    f'metadata architecture {given} disagrees with the model '
                    f'{meta["architecture"]}; the architecture is taken from '
                    'the model and cannot be overridden'
                )
            continue
        if section == 'classes' and 'names' in value and 'colors' not in value:
            names = value['names']
            value['colors'] = [None] * (len(names) if isinstance(names, list) else 0)
        if section == 'input':
            if 'normalization' in value:
                value['normalization'] = parse_normalization(value['normalization'])
            if 'tile_size' in value:
                value['tile_size'] = _tile(value['tile_size'])
        meta.setdefault(section, {})
        meta[section] = {**meta[section], **value}
    return validate_metadata(meta)


# --------------------------------------------------------------------------
# validation: every check names the field in dotted form


def validate_metadata(meta: Any) -> dict:
    """Check ``meta`` against the schema; return a normalised deep copy.

    Raises ``ValueError`` whose message names the offending field
    (``classes.names``, ``input.tile_size`` ...) and what it should be.
    """
    if not isinstance(meta, Mapping):
        raise ValueError(f'metadata must be a JSON object, got {type(meta).__name__}')
    _check_keys(meta, SECTIONS, 'metadata')
    version = meta['format_version']
    if not _is_int(version) or version < 1:
        raise ValueError(f'format_version must be a positive integer, got {version!r}')
    if version > FORMAT_VERSION:
        raise ValueError(
            f'format_version {version} is newer than this napari-vmunet '
            f'({__version__}) understands ({FORMAT_VERSION}); upgrade napari-vmunet'
        )
    arch = _validate_architecture(meta['architecture'])
    return {
        'format_version': FORMAT_VERSION,
        'architecture': arch,
        'classes': _validate_classes(meta['classes'], arch['num_classes']),
        'input': _validate_input(meta['input'], arch['input_channels']),
        'provenance': _validate_provenance(meta['provenance']),
    }


def _check_keys(obj: Any, expected: Sequence[str], where: str) -> None:
    if not isinstance(obj, Mapping):
        raise ValueError(f'{where} must be a JSON object, got {obj!r}')
    missing = [k for k in expected if k not in obj]
    unknown = [k for k in obj if k not in expected]
    if missing:
        raise ValueError(f'{where} lacks {", ".join(map(repr, missing))}')
    if unknown:
        raise ValueError(
            f'{where} has unknown field(s) {", ".join(map(repr, unknown))}; '
            f'expected {", ".join(expected)}'
        )


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _int_list(value: Any, where: str) -> list[int]:
    if (
        not isinstance(value, (list, tuple))
        or not value
        or not all(_is_int(v) and v >= 0 for v in value)
    ):
        raise ValueError(
            f'{where} must be a non-empty list of non-negative integers, got {value!r}'
        )
    return list(value)


def _validate_architecture(arch: Any) -> dict:
    _check_keys(arch, ARCH_KEYS, 'architecture')
    out = {}
    for key in ('num_classes', 'input_channels', 'd_state'):
        if not _is_int(arch[key]) or arch[key] < 1:
            raise ValueError(
                f'architecture.{key} must be a positive integer, got {arch[key]!r}'
            )
        out[key] = arch[key]
    for key in ('depths', 'depths_decoder', 'dims', 'dims_decoder'):
        out[key] = _int_list(arch[key], f'architecture.{key}')
    for dims, depths in (('dims', 'depths'), ('dims_decoder', 'depths_decoder')):
        if len(out[dims]) != len(out[depths]):
            raise ValueError(
                f'architecture.{dims} has {len(out[dims])} stages but '
                f'architecture.{depths} has {len(out[depths])}'
            )
        if not all(out[dims]):
            raise ValueError(f'architecture.{dims} must be positive, got {out[dims]}')
    return {k: out[k] for k in ARCH_KEYS}


def _validate_classes(classes: Any, num_classes: int) -> dict:
    _check_keys(classes, ('names', 'colors'), 'classes')
    names, colors = classes['names'], classes['colors']
    need = max(2, num_classes)
    if not isinstance(names, list) or not all(
        isinstance(n, str) and n.strip() for n in names
    ):
        raise ValueError(
            f'classes.names must be a list of non-empty strings: {names!r}'
        )
    if len(names) != need:
        if num_classes == 1:
            why = (
                'a one-class model needs 2: background and foreground (it '
                'predicts a foreground probability)'
            )
        else:
            why = (
                f'a model with {num_classes} output classes needs {need}, one '
                'per class, background first'
            )
        raise ValueError(f'classes.names has {len(names)} name(s) but {why}')
    if len(set(names)) != len(names):
        raise ValueError(f'classes.names must be unique, got {names}')
    if not isinstance(colors, list) or len(colors) != len(names):
        raise ValueError(
            f'classes.colors must be a list with one entry per name ({len(names)}), '
            f'got {colors!r}'
        )
    for i, c in enumerate(colors):
        if c is not None and not (isinstance(c, str) and _COLOR.match(c)):
            raise ValueError(
                f'classes.colors[{i}] must be "#rrggbb" or null, got {c!r}'
            )
    return {
        'names': [n.strip() for n in names],
        'colors': [c.lower() if c else None for c in colors],
    }


def _validate_normalization(norm: Any) -> dict:
    """Check with the schema's single definition (``rules.normalization``)
    and store the minimal form: ``range`` only when it is not [0, 255]."""
    from ..rules.normalization import DEFAULT_RANGE, check_normalization

    if not isinstance(norm, Mapping):
        raise ValueError(
            f'input.normalization must be {{"mode": one of '
            f'{", ".join(NORMALIZATION_MODES)}}}, got {norm!r}'
        )
    try:
        checked = check_normalization(norm)
    except ValueError as err:
        raise ValueError(f'input.{err}') from None
    out = {'mode': checked['mode']}
    if checked['mode'] in ('window', 'percentile'):
        out['low'], out['high'] = checked['low'], checked['high']
    if tuple(checked['range']) != DEFAULT_RANGE:
        out['range'] = checked['range']
    return out


def _validate_input(inp: Any, channels: int) -> dict:
    _check_keys(inp, ('channels', 'normalization', 'tile_size'), 'input')
    if inp['channels'] != channels:
        raise ValueError(
            f'input.channels is {inp["channels"]!r} but the architecture takes '
            f'{channels} input channel(s)'
        )
    tile = inp['tile_size']
    try:
        if not isinstance(tile, (list, tuple)) or len(tile) != 2:
            raise ValueError
        for t in tile:
            check_tile(t)
    except ValueError:
        raise ValueError(
            f'input.tile_size must be [height, width], positive multiples of '
            f'{TILE_MULTIPLE} up to {MAX_TILE} (VM-UNet halves the size five '
            f'times), got {tile!r}'
        ) from None
    return {
        'channels': channels,
        'normalization': _validate_normalization(inp['normalization']),
        'tile_size': list(tile),
    }


def _validate_provenance(prov: Any) -> dict:
    _check_keys(prov, PROVENANCE_KEYS, 'provenance')
    for key in ('initialized_from', 'training_data', 'command', 'notes'):
        if prov[key] is not None and not isinstance(prov[key], str):
            raise ValueError(f'provenance.{key} must be a string or null')
    if not _is_int(prov['epochs']) or prov['epochs'] < 0:
        raise ValueError(
            f'provenance.epochs must be a non-negative integer, got {prov["epochs"]!r}'
        )
    dice = prov['best_val_dice']
    if dice is not None and not (_is_number(dice) and 0 <= dice <= 1):
        raise ValueError(
            f'provenance.best_val_dice must be a number in [0, 1] or null, got {dice!r}'
        )
    if not isinstance(prov['package_version'], str) or not prov['package_version']:
        raise ValueError('provenance.package_version must be a non-empty string')
    created = prov['created']
    try:
        _dt.datetime.fromisoformat(created)
    except (TypeError, ValueError):
        raise ValueError(
            f'provenance.created must be an ISO 8601 date, got {created!r}'
        ) from None
    out = dict(prov)
    out['best_val_dice'] = None if dice is None else float(dice)
    return {k: out[k] for k in PROVENANCE_KEYS}
