"""``napari-vmunet predict``: segment files, folders and globs headlessly.

Outputs keep the input's format and geometry (a NIfTI result carries the
scan's affine and header).  A file that fails is reported and skipped, the
others are still processed, and the exit code is non-zero at the end.
Under ``torchrun`` the inputs are split across the ranks (each rank uses
its own GPU when there are GPUs).
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
from pathlib import Path

from . import UserError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        'predict',
        help='segment images/volumes with a checkpoint',
        description=__doc__.splitlines()[0].split(': ', 1)[1],
    )
    p.add_argument(
        'inputs',
        nargs='+',
        metavar='INPUT',
        help='image files, folders or glob patterns (NIfTI, TIFF, PNG/JPEG)',
    )
    p.add_argument(
        '--model',
        '-m',
        required=True,
        help='checkpoint (.safetensors, original best.pth/latest.pth) '
        'or the name of a built-in model',
    )
    p.add_argument(
        '--output',
        '-o',
        required=True,
        help='output folder (or a file name for a single input)',
    )
    p.add_argument('--device', default='auto', help='auto, cpu, cuda[:N] or mps')
    p.add_argument(
        '--threshold',
        type=float,
        default=0.5,
        help='probability threshold for one-class models',
    )
    p.add_argument(
        '--probabilities',
        action='store_true',
        help='also write the per-class probabilities',
    )
    p.add_argument(
        '--slice-axis',
        default=None,
        help='axis to predict a volume along: Z, Y, X or an index (default Z)',
    )
    p.add_argument(
        '--channel-map',
        default=None,
        help='image channel feeding each model channel, e.g. 0,1,1',
    )
    p.add_argument('--tile-size', type=int, default=None)
    p.add_argument('--overlap', type=float, default=0.25)
    p.add_argument('--batch-size', type=int, default=None)
    p.add_argument('--quiet', '-q', action='store_true', help='no progress bar')
    p.set_defaults(func=run)


def expand_inputs(items: list[str]) -> list[Path]:
    """Files, folders (their readable files) and globs, in a stable order."""
    from ..io import READ_EXTENSIONS

    def readable(path: Path) -> bool:
        name = path.name.lower()
        return any(name.endswith(ext) for ext in READ_EXTENSIONS)

    found: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if p.is_file() and readable(p))
        elif path.exists():
            found.append(path)
        else:
            matches = sorted(Path(p) for p in glob.glob(item, recursive=True))
            if not matches:
                raise UserError(f'no such file, folder or pattern: {item}')
            found += [p for p in matches if p.is_file()]
    unique = list(dict.fromkeys(found))
    if not unique:
        raise UserError('no readable images among the inputs')
    return unique


def _stem(path: Path) -> str:
    name = path.name
    for ext in ('.nii.gz', '.ome.tiff', '.ome.tif'):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return path.stem


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for ext in ('.nii.gz', '.ome.tiff', '.ome.tif'):
        if name.endswith(ext):
            return ext
    return path.suffix.lower()


def output_paths(source: Path, output: Path, single: bool) -> tuple[Path, Path]:
    """Where the labels and probabilities of ``source`` go."""
    ext = _suffix(source)
    if ext in ('.jpg', '.jpeg'):
        ext = '.png'
    if ext.startswith('.ome'):
        ext = '.tif'
    prob_ext = '.tif' if ext == '.png' else ext
    if single and _suffix(output) in ('.nii.gz', '.nii', '.tif', '.tiff', '.png'):
        labels = output
        probs = output.with_name(f'{_stem(output)}_probabilities{prob_ext}')
    else:
        labels = output / f'{_stem(source)}_labels{ext}'
        probs = output / f'{_stem(source)}_probabilities{prob_ext}'
    return labels, probs


def _slice_axis(spec: str | None, axes: str) -> int | None:
    spatial = axes.replace('C', '')
    if len(spatial) < 3:
        return None
    if spec is None:
        spec = 'Z'
    if spec.upper() in spatial:
        return axes.index(spec.upper())
    try:
        index = int(spec)
    except ValueError:
        raise UserError(
            f'--slice-axis must be Z, Y, X or an index, got {spec!r}'
        ) from None
    return axes.index(spatial[index])


def _rank() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment."""
    return (
        int(os.environ.get('RANK', 0)),
        int(os.environ.get('WORLD_SIZE', 1)),
        int(os.environ.get('LOCAL_RANK', 0)),
    )


def run(args: argparse.Namespace) -> int:
    import torch
    from tqdm.auto import tqdm

    from ..checkpoint import load_checkpoint
    from ..inference import Predictor
    from ..io import read_image, write_image, write_labels
    from ..zoo import builtin_checkpoints

    files = expand_inputs(args.inputs)
    rank, world, local_rank = _rank()
    mine = files[rank::world]
    output = Path(args.output)
    single = len(files) == 1
    if not (single and output.suffix):
        output.mkdir(parents=True, exist_ok=True)
    device = args.device
    if world > 1 and device == 'auto' and torch.cuda.is_available():
        device = f'cuda:{local_rank % torch.cuda.device_count()}'
    model_path = builtin_checkpoints().get(args.model, Path(args.model))
    checkpoint = load_checkpoint(model_path)
    channel_map = (
        [int(c) for c in args.channel_map.split(',')] if args.channel_map else None
    )
    predictor = Predictor(
        checkpoint,
        device=device,
        tile_size=args.tile_size,
        overlap=args.overlap,
        batch_size=args.batch_size,
        threshold=args.threshold,
    )
    prefix = f'[rank {rank}/{world}] ' if world > 1 else ''
    failures = []
    for path in mine:
        try:
            image = read_image(path)
            bar = tqdm(
                total=1,
                desc=f'{prefix}{path.name}',
                unit='tile',
                disable=args.quiet,
                leave=False,
            )

            def show(step, bar=bar):
                bar.total = step.total
                bar.update(step.done - bar.n)

            result = predictor.predict(
                image.data,
                channel_axis=image.channel_axis,
                slice_axis=_slice_axis(args.slice_axis, image.axes),
                rgb=image.rgb,
                channel_map=channel_map,
                return_probabilities=args.probabilities,
                progress=show,
            )
            bar.close()
            labels_path, probs_path = output_paths(path, output, single)
            write_labels(labels_path, result.labels, like=image)
            written = [labels_path]
            if result.probabilities is not None:
                probs = result.probabilities
                axes = image.axes.replace('C', '')
                if probs.ndim > result.labels.ndim:
                    axes = 'C' + axes
                write_image(probs_path, probs, like=image, axes=axes)
                written.append(probs_path)
            counts = ', '.join(
                f'{name}: {int((result.labels == i).sum())} px'
                for i, name in enumerate(result.class_names)
                if i
            )
            print(
                f'{prefix}{path} -> {", ".join(map(str, written))} '
                f'({result.seconds:.1f} s on {result.device}; {counts})'
            )
            for note in result.warnings:
                print(f'{prefix}  warning: {note}', file=sys.stderr)
        except Exception as err:  # noqa: BLE001 - report, skip, go on
            if args.debug:
                raise
            failures.append(path)
            print(
                f'{prefix}FAILED {path}: {" ".join(str(err).split())}', file=sys.stderr
            )
    if failures:
        print(f'{prefix}{len(failures)} of {len(mine)} file(s) failed', file=sys.stderr)
        return 1
    return 0
