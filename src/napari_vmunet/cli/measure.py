"""``napari-vmunet measure``: a table of objects or classes from any label map on disk.

The label map may be a prediction, one corrected by hand, or another
tool's.  Sizes are physical, from the file's geometry (NIfTI affine, OME or
ImageJ calibration), and every column names its unit (``volume_mL``,
``area_um2``).  Without ``--objects`` there is one row per label value
(per class of a semantic map, per object of an instance map); with it each
class is first split into objects.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import UserError
from ._objects import add_object_options, check_object_options, check_output_file


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        'measure',
        help='measure objects or classes of a label map into a CSV table',
        description=__doc__.splitlines()[0].split(': ', 1)[1],
    )
    p.add_argument('labels', metavar='LABELS', help='label map (NIfTI, TIFF, PNG)')
    p.add_argument(
        '--image',
        metavar='IMAGE',
        help='the image the labels belong to: adds mean/min/max intensity',
    )
    p.add_argument(
        '--output', '-o', required=True, metavar='TABLE.csv', help='the CSV to write'
    )
    add_object_options(p, predict=False)
    p.add_argument(
        '--instances',
        action='store_true',
        help='LABELS holds one id per object (all of class 1): each connected '
        'region of one id becomes one object, as after a correction by hand',
    )
    p.add_argument(
        '--class-names',
        metavar='NAMES',
        help='names of the label values 0, 1, 2, ... separated by commas, '
        'e.g. "background,grey matter,white matter"',
    )
    p.add_argument(
        '--objects-output',
        metavar='FILE',
        help='with --objects: also write the object label map, whose ids the '
        "table's label column refers to",
    )
    p.add_argument(
        '--overwrite', action='store_true', help='replace output files that exist'
    )
    p.add_argument('--quiet', '-q', action='store_true', help='no progress bar')
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..io import read_image, write_labels
    from ..measure import Geometry
    from ._objects import objects_and_table, objects_wanted, print_notes, summary
    from ._text import printable

    labels_path = Path(args.labels)
    image_path = Path(args.image) if args.image else None
    for path in (labels_path, image_path):
        if path is not None and not path.is_file():
            raise UserError(f'no such file: {path}')
    inputs = [p for p in (labels_path, image_path) if p is not None]
    min_size = check_object_options(args)
    objects = objects_wanted(args) or args.instances
    if args.objects_output and not objects:
        raise UserError('--objects-output needs --objects (or --instances)')
    output = check_output_file(args.output, inputs, args.overwrite)
    if args.objects_output:
        from ..io import WRITE_LABELS_EXTENSIONS

        check_output_file(
            args.objects_output,
            [*inputs, output],
            args.overwrite,
            what='object labels',
            extensions=tuple(WRITE_LABELS_EXTENSIONS),
        )
    names = _class_names(args.class_names)

    labels = read_image(labels_path)
    if labels.channel_axis is not None or labels.rgb:
        raise UserError(
            f'{labels_path.name} has channels ({labels.axes}); a label map has one '
            'value per pixel'
        )
    geometry = Geometry.from_image(labels)
    intensity, channel_axis = None, None
    if image_path is not None:
        image = read_image(image_path, allow_channels=True)
        if image.spatial_shape != labels.spatial_shape:
            raise UserError(
                f'the image {image_path.name} ({image.spatial_axes} '
                f'{image.spatial_shape}) and the labels {labels_path.name} '
                f'({labels.spatial_axes} {labels.spatial_shape}) differ in shape'
            )
        if labels.units is None and image.units is not None:
            geometry = Geometry.from_image(image)  # e.g. labels saved as PNG
        intensity, channel_axis = image.data, image.channel_axis

    bar = _progress_bar(args.quiet, labels_path.name)
    try:
        result, table = objects_and_table(
            args,
            _label_array(labels),
            geometry,
            intensity,
            names,
            channel_axis=channel_axis,
            min_size=min_size,
            instances=args.instances,
            show=bar,
        )
    finally:
        bar.close()
    table.to_csv(output)
    written = [output]
    if args.objects_output:
        written.append(write_labels(args.objects_output, result, like=labels))
    print(
        f'{labels_path} -> {", ".join(map(str, written))} ({summary(table, objects)})'
    )
    notes = list(table.notes)
    if objects and not args.objects_output:
        notes.append(
            'the label column numbers the objects found now; pass '
            '--objects-output to save them'
        )
    print_notes([printable(n) for n in notes])
    return 0


def _class_names(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [n.strip() for n in text.split(',')]
    if len(names) < 2 or not all(names):
        raise UserError(
            '--class-names lists the names of the label values 0, 1, ... '
            f'separated by commas, e.g. "background,tumour"; got {text!r}'
        )
    return names


def _label_array(labels):
    import numpy as np

    data = np.asarray(labels.data)
    if not np.issubdtype(data.dtype, np.integer) and data.dtype != bool:
        if not np.array_equal(data, np.round(data)):
            raise UserError(
                f'{labels.source.name if labels.source else "the labels"} holds '
                f'fractional values ({data.dtype}): it is an image, not a label '
                'map'
            )
        data = data.astype(np.int64)
    return data


class _progress_bar:  # noqa: N801 - used like tqdm
    """A tqdm bar for the stages (objects, measurements), or nothing."""

    def __init__(self, quiet: bool, name: str):
        from tqdm.auto import tqdm

        self._bar = tqdm(
            total=1, desc=name, disable=quiet, leave=False, file=sys.stderr
        )
        self._stage = None

    def __call__(self, step) -> None:
        if step.stage != self._stage:
            self._stage = step.stage
            self._bar.set_description_str(f'{step.stage}')
            self._bar.reset(total=max(step.total, 1))
        if step.total:
            self._bar.total = step.total
            self._bar.update(step.done - self._bar.n)

    def close(self) -> None:
        self._bar.close()
