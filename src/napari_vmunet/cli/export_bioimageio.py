"""``napari-vmunet export-bioimageio MODEL --output model.zip``: a checkpoint
as a bioimage.io model package (spec 0.5), for bioimageio.core, ilastik,
deepImageJ, QuPath and the bioimage.io zoo."""

from __future__ import annotations

import argparse
from pathlib import Path

from . import UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        'export-bioimageio',
        help='write a checkpoint as a bioimage.io model package (.zip)',
        description='Write MODEL as a bioimage.io model package (spec 0.5): '
        'pytorch_state_dict weights, the architecture imported from '
        "napari-vmunet, preprocessing from the checkpoint's normalisation, "
        'test tensors computed on a real image, a README from the '
        "checkpoint's metadata and a cover from the test prediction.  Needs "
        "pip install 'napari-vmunet[bioimageio]'.  Works offline.",
    )
    parser.add_argument(
        'model',
        metavar='MODEL',
        help='checkpoint (.safetensors, original .pth, a bioimage.io package) '
        'or the name of a built-in model',
    )
    parser.add_argument(
        '--output', '-o', required=True, help='the package to write (.zip)'
    )
    parser.add_argument(
        '--authors',
        action='append',
        required=True,
        metavar='NAMES',
        help='who trained the model; several names separated by ";" '
        '(or the option repeated)',
    )
    parser.add_argument(
        '--name',
        help='model name (5-128 letters, digits, spaces, _+-()); '
        'default: "VM-UNet" + the file name',
    )
    parser.add_argument(
        '--description',
        help='one paragraph (at most 1024 characters); default: from the '
        "class names and the checkpoint's notes",
    )
    parser.add_argument(
        '--license',
        default='CC-BY-4.0',
        help='SPDX license identifier (default: CC-BY-4.0)',
    )
    parser.add_argument(
        '--cite',
        action='append',
        default=[],
        metavar='TEXT|DOI',
        help='a further citation, "TEXT|DOI" or "TEXT|URL" (repeatable); the '
        'VM-UNet paper is always cited',
    )
    parser.add_argument(
        '--cover', help='cover image (PNG/JPEG); default: made from the test prediction'
    )
    parser.add_argument(
        '--test-image',
        help='image for the test tensors (centre crop of at most 256x256; the '
        'middle slice of a volume), or a bundled sample: nuclei (default) or '
        'brain',
    )
    parser.add_argument(
        '--force', action='store_true', help='replace OUTPUT if it exists'
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..bioimageio import BioimageioMissingError, export_bioimageio
    from ..zoo import resolve_model

    src = resolve_model(args.model)
    out = Path(args.output).expanduser()
    if out.exists() and not args.force:
        raise UserError(f'{out} already exists; pass --force to replace it')
    if out.exists() and src.exists() and out.samefile(src):
        raise UserError(f'{out} is the model itself; write the package elsewhere')
    try:
        path = export_bioimageio(
            src,
            out,
            authors=args.authors,
            name=args.name,
            description=args.description,
            license_id=args.license,
            cite=args.cite,
            cover=args.cover,
            test_image=args.test_image,
            progress=lambda msg: print(f'.. {msg}', flush=True),
        )
    except BioimageioMissingError as err:
        raise UserError(str(err)) from None
    print(f'wrote {path}')
    return 0
