"""``napari-vmunet info CKPT``: what a checkpoint is, in words or as JSON."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from ._text import printable

if TYPE_CHECKING:
    from ..checkpoint import Architecture, Classes, Normalization


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        'info',
        help='describe a checkpoint (format, architecture, classes, ...)',
        description='Describe a VM-UNet checkpoint: format, architecture, '
        'parameter count, classes, input normalisation, tile size, provenance '
        'and training state.  Reads original best.pth/latest.pth files and '
        'napari-vmunet .safetensors files; never runs code from the file.',
    )
    parser.add_argument(
        'checkpoint',
        metavar='CKPT',
        nargs='?',
        help='.pth or .safetensors file, or the name of a built-in model',
    )
    parser.add_argument(
        '--json', action='store_true', help='print machine-readable JSON instead'
    )
    parser.add_argument(
        '--system',
        action='store_true',
        help='describe this machine instead: torch, devices, free memory, scan '
        'backend, built-in models',
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..checkpoint import load_checkpoint, summary
    from ..zoo import resolve_model

    if args.system:
        return _system(args.json)
    if not args.checkpoint:
        from . import UserError

        raise UserError('give a checkpoint file (or --system)')
    info = summary(load_checkpoint(resolve_model(args.checkpoint)))
    if args.json:
        json.dump(info, sys.stdout, indent=2)
        sys.stdout.write('\n')
    else:
        sys.stdout.write(format_info(info))
    return 0


_FORMATS = {
    'napari-vmunet': 'napari-vmunet safetensors (with metadata)',
    'original-best': 'original VM-UNet best.pth layout (weights only)',
    'original-latest': 'original VM-UNet latest.pth layout (weights + training state)',
    'bioimageio': 'bioimage.io model package (pytorch_state_dict weights)',
}


def format_info(info: dict) -> str:
    """The ``summary()`` dict as aligned, readable lines."""
    from ..checkpoint import Metadata

    meta = Metadata.from_dict(info['metadata'])
    arch, inp, prov = meta.architecture, meta.input, meta.provenance
    rows = [
        ('File', info['path']),
        ('Format', _FORMATS.get(info['source_format'], info['source_format'])),
        ('Architecture', _architecture(arch)),
        ('Parameters', f'{info["parameters"]:,}'),
        ('Output', _output(arch.num_classes)),
        ('Classes', _classes(meta.classes)),
        ('Input', f'{inp.channels} channel(s)'),
        ('Normalisation', _normalization(inp.normalization)),
        ('Tile size', '{} x {}'.format(*inp.tile_size)),
        ('Epochs', str(prov.epochs)),
        ('Best val Dice', _maybe(prov.best_val_dice)),
        ('Initialised from', _maybe(prov.initialized_from)),
        ('Training data', _maybe(prov.training_data)),
        ('Created', f'{prov.created} (napari-vmunet {prov.package_version})'),
        ('Command', _maybe(prov.command)),
        ('Notes', _maybe(prov.notes)),
        ('Training state', _training_state(info['training_state'])),
    ]
    width = max(len(name) for name, _ in rows) + 2
    # everything shown comes from a file: escape what a terminal would obey
    return ''.join(f'{name + ":":<{width}}{printable(value)}\n' for name, value in rows)


def _architecture(arch: Architecture) -> str:
    return (
        f'VM-UNet, encoder dims {"/".join(map(str, arch.dims))} '
        f'depths {"-".join(map(str, arch.depths))}; decoder dims '
        f'{"/".join(map(str, arch.dims_decoder))} '
        f'depths {"-".join(map(str, arch.depths_decoder))}; '
        f'd_state {arch.d_state}'
    )


def _output(num_classes: int) -> str:
    if num_classes == 1:
        return '1 channel, foreground probability (sigmoid)'
    return f'{num_classes} channels, class logits (argmax)'


def _classes(classes: Classes) -> str:
    return ', '.join(
        f'{i} {name}' + (f' ({color})' if color else '')
        for i, (name, color) in enumerate(
            zip(classes.names, classes.colors, strict=True)
        )
    )


def _normalization(norm: Normalization) -> str:
    if norm.mode == 'minmax':
        return 'minmax (each image scaled to [0, 255] by its min and max)'
    if norm.mode == 'none':
        return 'none (the values as they are)'
    if norm.mode == 'window':
        return f'window [{norm.low:g}, {norm.high:g}]'
    return f'percentile {norm.low:g}-{norm.high:g}'


def _maybe(value: object) -> str:
    return '-' if value is None else str(value)


def _training_state(state: dict | None) -> str:
    if state is None:
        return 'none (cannot resume training from this file)'
    shown = ', '.join(f'{k}={v}' for k, v in state.items())
    return f'present, resumable ({shown})'


def _system(as_json: bool) -> int:
    """``info --system``: what torch sees here (the dock shows the same)."""
    from .._version import __version__
    from ..inference import available_devices, diagnostics, format_diagnostics
    from ..zoo import builtin_checkpoints

    info = {
        'napari_vmunet': __version__,
        **diagnostics('auto'),
        'devices': available_devices(),
        'builtin_models': {k: str(v) for k, v in builtin_checkpoints().items()},
    }
    if as_json:
        json.dump(info, sys.stdout, indent=2)
        sys.stdout.write('\n')
        return 0
    sys.stdout.write(
        f'napari-vmunet {__version__}\n{format_diagnostics(info)}\n'
        f'devices: {", ".join(info["devices"])}\n'
        f'built-in models: {", ".join(info["builtin_models"]) or "none"}\n'
    )
    return 0
