"""``napari-vmunet convert IN OUT``: original ``.pth`` <-> napari-vmunet
``.safetensors``, the direction decided by OUT's extension."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from . import UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        'convert',
        help='convert between original .pth and napari-vmunet .safetensors',
        description='Convert a checkpoint.  OUT ending in .safetensors writes '
        'the napari-vmunet format (weights + metadata; a latest.pth training '
        'state is kept next to it as OUT-stem.train_state.pt); OUT ending in '
        '.pth/.pt writes the original best.pth layout (weights only), '
        'loadable by JCruan519/VM-UNet.  The metadata options fill in what '
        'original files do not record.',
    )
    parser.add_argument(
        'input',
        metavar='IN',
        help='.pth or .safetensors checkpoint, or a built-in model',
    )
    parser.add_argument('output', metavar='OUT', help='.safetensors or .pth file')
    parser.add_argument(
        '--class-names',
        metavar='A,B,...',
        help='class names, background first; one-class models take two '
        '(e.g. background,lesion)',
    )
    parser.add_argument(
        '--normalization',
        metavar='MODE',
        help='input normalisation: minmax | window:LOW,HIGH (e.g. '
        'window:-125,275) | percentile:LOW,HIGH (e.g. percentile:1,99.8)',
    )
    parser.add_argument(
        '--tile-size',
        metavar='N[,M]',
        help='tile size for inference, multiples of 32 (e.g. 256 or 256,320)',
    )
    parser.add_argument('--notes', help='free text stored in provenance.notes')
    parser.add_argument(
        '--force', action='store_true', help='replace OUT if it already exists'
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..checkpoint import convert
    from ..zoo import resolve_model

    src, dst = resolve_model(args.input), Path(args.output).expanduser()
    if dst.exists() and not args.force:
        raise UserError(f'{dst} already exists; pass --force to replace it')
    if dst.exists() and src.exists() and dst.samefile(src):
        raise UserError(f'{dst} is the input itself; write the conversion elsewhere')
    overrides = _metadata_overrides(args)
    if dst.suffix == '.safetensors':
        overrides.setdefault('provenance', {})['command'] = _command(args)
    out = convert(src, dst, metadata=overrides or None)
    print(f'wrote {out}')
    return 0


def _metadata_overrides(args: argparse.Namespace) -> dict:
    """The metadata sections the options ask for (empty when none given)."""
    meta: dict = {}
    if args.class_names is not None:
        names = [n.strip() for n in args.class_names.split(',')]
        meta['classes'] = {'names': names}
    inp = {}
    if args.normalization is not None:
        from ..checkpoint import parse_normalization

        try:
            inp['normalization'] = parse_normalization(args.normalization)
        except ValueError as err:
            raise UserError(f'--normalization: {err}') from None
    if args.tile_size is not None:
        inp['tile_size'] = _tile_size(args.tile_size)
    if inp:
        meta['input'] = inp
    if args.notes is not None:
        meta['provenance'] = {'notes': args.notes}
    return meta


def _tile_size(text: str) -> list[int]:
    try:
        sizes = [int(t) for t in text.split(',')]
    except ValueError:
        sizes = []
    if len(sizes) == 1:
        sizes *= 2
    if len(sizes) != 2:
        raise UserError(
            f'--tile-size: cannot read {text!r}; give N or N,M, e.g. 256 or 256,320'
        )
    return sizes


def _command(args: argparse.Namespace) -> str:
    """The command line that made the file, for provenance."""
    argv = ['napari-vmunet', 'convert', args.input, args.output]
    for flag, value in (
        ('--class-names', args.class_names),
        ('--normalization', args.normalization),
        ('--tile-size', args.tile_size),
        ('--notes', args.notes),
    ):
        if value is not None:
            argv += [flag, value]
    return shlex.join(argv)
