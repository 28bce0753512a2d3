"""``napari-vmunet predict``: segment files, folders and globs headlessly.

Outputs keep the input's format and geometry (a NIfTI result carries the
scan's affine and header).  A file that fails is reported and skipped, the
others are still processed, and the exit code is non-zero at the end.
Under ``torchrun`` the inputs are split across the ranks (each rank uses
its own GPU when there are GPUs).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from . import UserError
from . import _predict_outputs as _outputs
from ._objects import add_object_options


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        'predict',
        help='segment images/volumes with a checkpoint',
        description=__doc__.splitlines()[0].split(': ', 1)[1],
    )
    _add_model_options(p)
    _add_extra_outputs(p)
    _add_image_options(p)
    _add_run_options(p)
    add_object_options(p, predict=True)
    p.set_defaults(func=run)


def _add_model_options(p: argparse.ArgumentParser) -> None:
    """What to segment, with which model, into where, on which device."""
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
        help='output folder (or a file name for a single input); existing '
        'files are kept unless --overwrite',
    )
    p.add_argument('--device', default='auto', help='auto, cpu, cuda[:N] or mps')
    p.add_argument(
        '--threshold',
        type=float,
        default=0.5,
        help='probability threshold for one-class models',
    )


def _add_extra_outputs(p: argparse.ArgumentParser) -> None:
    """What is written besides the labels: probabilities, the uncertainty
    ranking (and the annotations it leaves out) and the uncertainty map."""
    p.add_argument(
        '--probabilities',
        action='store_true',
        help='also write the per-class probabilities',
    )
    p.add_argument(
        '--uncertainty',
        default=None,
        metavar='TABLE.csv',
        help="also write the slices of every input ranked by the model's "
        'uncertainty (where to annotate next) to this CSV: file, rank, slice, '
        'uncertainty (0 certain .. 1 a coin toss)',
    )
    p.add_argument(
        '--annotations',
        default=None,
        metavar='LABELS',
        help='with --uncertainty: the slices already annotated (any label in '
        'a slice) are left out of the ranking; a label file for one input, or '
        'a folder of label files named like the inputs',
    )
    p.add_argument(
        '--uncertainty-map',
        action='store_true',
        help='also write the per-pixel uncertainty of each input beside its '
        'labels (<name>_uncertainty, TIFF for PNG inputs)',
    )


def _add_image_options(p: argparse.ArgumentParser) -> None:
    """How an image is read into the model: slice axis, channels,
    normalisation and missing data."""
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
    p.add_argument(
        '--normalization',
        metavar='MODE',
        help="override the checkpoint's input normalisation: minmax, "
        'percentile[:LOW,HIGH] (robust to outliers) or window:LOW,HIGH',
    )
    p.add_argument(
        '--nonfinite-background',
        action='store_true',
        help='label NaN / infinite pixels (missing data) background; without '
        'it they count as the darkest or brightest finite value, with a warning',
    )


def _add_run_options(p: argparse.ArgumentParser) -> None:
    """How the run goes: tiling and batches, overwriting, the progress bar."""
    p.add_argument(
        '--tile-size',
        type=int,
        default=None,
        help='sliding-window edge, a multiple of 32, or 0 for one window per '
        'slice (default: the whole slice when it fits the device, else tiles '
        'sized for it; never the training tile)',
    )
    p.add_argument('--overlap', type=float, default=0.25)
    p.add_argument('--batch-size', type=int, default=None)
    p.add_argument(
        '--overwrite',
        action='store_true',
        help='replace output files that exist already (inputs are never overwritten)',
    )
    p.add_argument('--quiet', '-q', action='store_true', help='no progress bar')


def parse_slice_axis(spec: str | None) -> str | int | None:
    """``--slice-axis``: ``Z``, ``Y``, ``X`` or a spatial index 0-2."""
    if spec is None:
        return None
    if spec.strip().upper() in ('Z', 'Y', 'X'):
        return spec.strip().upper()
    try:
        index = int(spec)
    except ValueError:
        index = -1
    if not 0 <= index <= 2:
        raise UserError(
            f'--slice-axis must be Z, Y, X or a spatial axis index 0, 1 or 2; '
            f'got {spec!r}'
        )
    return index


def _slice_axis(spec: str | int | None, axes: str, name: str) -> int | None:
    """The array axis of ``spec`` in an image with ``axes`` (None for 2D)."""
    spatial = axes.replace('C', '')
    if len(spatial) < 3:
        return None
    spec = 'Z' if spec is None else spec
    letter = spec if isinstance(spec, str) else spatial[spec]
    if letter not in spatial:  # pragma: no cover - parse_slice_axis checked it
        raise UserError(f'{name} has no {letter} axis (its axes are {axes})')
    return axes.index(letter)


def parse_channel_map(text: str | None) -> list[int] | None:
    """``--channel-map 0,1,1`` -> ``[0, 1, 1]``."""
    if text is None:
        return None
    try:
        values = [int(v) for v in text.split(',')]
    except ValueError:
        values = []
    if not values or any(v < 0 for v in values):
        raise UserError(
            f'--channel-map must list image channel numbers (0, 1, ...) '
            f'separated by commas, one per model input, e.g. 0,1,1; got {text!r}'
        )
    return values


def _rank() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment."""
    return (
        int(os.environ.get('RANK', 0)),
        int(os.environ.get('WORLD_SIZE', 1)),
        int(os.environ.get('LOCAL_RANK', 0)),
    )


def run(args: argparse.Namespace) -> int:
    from .._files import check_writable_folder
    from ._outputs import check_plan, expand_inputs, names_a_file, plan_outputs

    # everything that can be wrong is found before the model is loaded
    files, skipped = expand_inputs(args.inputs)
    output = Path(args.output)
    plan, renamed = plan_outputs(
        files, output, args.probabilities, args.uncertainty_map
    )
    check_plan(plan, args.overwrite)
    slice_spec = parse_slice_axis(args.slice_axis)
    channel_map = parse_channel_map(args.channel_map)
    if args.normalization is not None:
        from ..checkpoint import parse_normalization
        from ..inference import check_normalization

        try:
            spec = parse_normalization(args.normalization)
            check_normalization(spec)  # now, before any compute
            # the Predictor keeps the model's output range unless one is given
            args.normalization = spec
        except ValueError as err:
            raise UserError(f'--normalization: {err}') from None
    folder = output.parent if len(files) == 1 and names_a_file(output) else output
    check_writable_folder(folder, 'predictions')
    _check_objects(args, plan)
    _check_uncertainty(args, plan)
    for note in _notes(skipped, renamed):
        print(f'note: {note}', file=sys.stderr)
    return _predict_all(args, plan, slice_spec, channel_map)


def _check_objects(args: argparse.Namespace, plan) -> None:
    """``--objects`` / ``--measure``: options and the table's file checked
    with the rest, before the model is loaded."""
    from ._objects import check_object_options, check_output_file

    args.min_size_parsed = check_object_options(args)
    if args.measure is None:
        return
    if _rank()[1] > 1:
        raise UserError(
            '--measure writes one table, which ranks of torchrun cannot share: '
            'predict without torchrun, or run `napari-vmunet measure` on the '
            'outputs'
        )
    outputs = [o for p in plan for o in p.outputs]
    sources = [p.source for p in plan]
    args.measure = check_output_file(args.measure, sources + outputs, args.overwrite)


def _check_uncertainty(args: argparse.Namespace, plan) -> None:
    """``--uncertainty``: the table's file checked like ``--measure``'s,
    and not the same file as the objects table."""
    from ._objects import check_output_file

    if args.uncertainty is None:
        if args.annotations is not None:
            raise UserError(
                '--annotations says which slices to leave out of the ranking '
                'of --uncertainty: add --uncertainty TABLE.csv'
            )
        return
    if args.annotations is not None:
        where = Path(args.annotations)
        if not where.exists():
            raise UserError(f'--annotations: no such file or folder: {where}')
        if where.is_file() and len(plan) > 1:
            raise UserError(
                f'--annotations names one file but there are {len(plan)} inputs: '
                'give a folder with a label file per input, named like the input'
            )
    if _rank()[1] > 1:
        raise UserError(
            '--uncertainty writes one table, which ranks of torchrun cannot '
            'share: predict without torchrun'
        )
    taken = [p.source for p in plan] + [o for p in plan for o in p.outputs]
    if args.measure is not None:
        taken.append(args.measure)
    args.uncertainty = check_output_file(
        args.uncertainty, taken, args.overwrite, what='uncertainty table'
    )


def _notes(skipped: list[Path], renamed: list[str]) -> list[str]:
    notes = list(renamed)
    if skipped:
        shown = ', '.join(p.name for p in skipped[:5])
        more = f' and {len(skipped) - 5} more' if len(skipped) > 5 else ''
        notes.append(
            f'skipped {len(skipped)} file(s) that are outputs of an earlier run, '
            f'hidden or temporary ({shown}{more}); name a file explicitly to '
            'predict it anyway'
        )
    return notes


def _predict_all(args, plan, slice_spec, channel_map) -> int:
    """Predict this rank's share of the plan: a file that fails is reported
    and skipped, the tables of the others are written at the end, and the
    exit code says whether any failed."""
    from ._text import printable

    rank, world, local_rank = _rank()
    mine = plan[rank::world]
    predictor = _predictor(args, world, local_rank)
    prefix = f'[rank {rank}/{world}] ' if world > 1 else ''
    failures = []
    tables: list = []
    rankings: list = []
    for item in mine:
        path = item.source
        try:
            _predict_one(
                args,
                predictor,
                item,
                (slice_spec, channel_map),
                prefix,
                (tables, rankings),
            )
        except Exception as err:  # noqa: BLE001 - report, skip, go on
            if args.debug:
                raise
            failures.append(path)
            print(
                f'{prefix}FAILED {path}: {printable(" ".join(str(err).split()))}',
                file=sys.stderr,
            )
    if args.measure is not None:
        _outputs.write_table(args.measure, tables)
    if args.uncertainty is not None:
        _outputs.write_ranking(args.uncertainty, rankings)
    if failures:
        print(f'{prefix}{len(failures)} of {len(mine)} file(s) failed', file=sys.stderr)
        return 1
    return 0


def _predictor(args: argparse.Namespace, world: int, local_rank: int):
    """The model, loaded once for all the files, on this rank's own GPU
    under torchrun (when there are GPUs and --device is auto)."""
    import torch

    from ..checkpoint import load_checkpoint
    from ..inference import Predictor
    from ..zoo import resolve_model

    device = args.device
    if world > 1 and device == 'auto' and torch.cuda.is_available():
        device = f'cuda:{local_rank % torch.cuda.device_count()}'
    checkpoint = load_checkpoint(resolve_model(args.model))
    return Predictor(
        checkpoint,
        device=device,
        tile_size=args.tile_size,
        overlap=args.overlap,
        batch_size=args.batch_size,
        threshold=args.threshold,
        normalization=args.normalization,
        nonfinite_background=args.nonfinite_background,
    )


def _predict_one(args, predictor, item, specs, prefix: str, collected) -> None:
    """One input of the plan: predict it, write its outputs, add its objects
    table and its ranking to ``collected`` and say what was written.  An
    error goes up to :func:`_predict_all`, which reports it and goes on."""
    from ..io import read_image, write_labels

    tables, rankings = collected
    path = item.source
    image = read_image(path)
    result = _predict_image(args, predictor, image, path.name, specs, prefix)
    labels, table = _outputs.objects(args, image, result)
    write_labels(item.labels, labels, like=image)
    written = [item.labels]
    if table is not None:
        tables.append((path.name, table))
    written += _outputs.write_maps(item, image, result)
    if args.uncertainty is not None:
        annotated = _outputs.annotations(args.annotations, path, read_image)
        rankings.append((path.name, result.ranking(annotated)))
    _outputs.print_result(prefix, path, written, result)


def _predict_image(args, predictor, image, name: str, specs, prefix: str):
    """The prediction of one image, with a progress bar over its tiles."""
    from tqdm.auto import tqdm

    slice_spec, channel_map = specs
    bar = tqdm(
        total=1,
        desc=f'{prefix}{name}',
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
        slice_axis=_slice_axis(slice_spec, image.axes, name),
        rgb=image.rgb,
        channel_map=channel_map,
        return_probabilities=args.probabilities or _needs_probabilities(args),
        return_uncertainty=args.uncertainty is not None or args.uncertainty_map,
        progress=show,
    )
    bar.close()
    return result


def _needs_probabilities(args: argparse.Namespace) -> bool:
    return args.split_touching and args.split_on == 'probability'
