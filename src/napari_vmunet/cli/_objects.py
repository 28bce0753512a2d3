"""Objects and measurements on the command line, shared by ``predict
--objects`` and ``measure``: the options, their checks (made before any
computation) and the per-image step.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from . import UserError


def add_object_options(p: argparse.ArgumentParser, *, predict: bool) -> None:
    """``--objects``, ``--split-touching``, ``--min-size``, ``--fill-holes``
    (and ``--measure`` for predict)."""
    p.add_argument(
        '--objects',
        action='store_true',
        help='one id per object: each class is split into its connected '
        'components (in 3D for volumes)'
        + ('; the labels file then holds object ids' if predict else ''),
    )
    p.add_argument(
        '--split-touching',
        action='store_true',
        help='separate touching objects by a watershed (implies --objects)',
    )
    p.add_argument(
        '--split-on',
        choices=('distance', 'probability'),
        default='distance',
        help='what the split follows: the distance to the background '
        '(default) or the valleys of the predicted probability'
        if predict
        else argparse.SUPPRESS,
    )
    p.add_argument(
        '--min-size',
        default=None,
        metavar='SIZE',
        help='drop objects smaller than SIZE: pixels (30) or a physical size '
        '(30um2, 5mm3, 0.1mL); implies --objects',
    )
    p.add_argument(
        '--fill-holes',
        action='store_true',
        help='fill holes inside objects (implies --objects)',
    )
    if predict:
        p.add_argument(
            '--measure',
            default=None,
            metavar='TABLE.csv',
            help='also write one row per object (per class without --objects) '
            'of every input to this CSV: class, area/volume with its unit, '
            'centroid, bounding box, intensities',
        )


def objects_wanted(args: argparse.Namespace) -> bool:
    return bool(args.objects or args.split_touching or args.fill_holes or args.min_size)


def check_object_options(args: argparse.Namespace) -> tuple[float, str] | None:
    """The parsed ``--min-size`` (value, unit); raises :class:`UserError`."""
    from ..measure import parse_size

    if args.min_size is None:
        return None
    try:
        return parse_size(args.min_size)
    except ValueError as err:
        raise UserError(f'--min-size: {err}') from None


def check_output_file(
    path: str | Path,
    inputs: list[Path],
    overwrite: bool,
    *,
    what: str = 'table',
    extensions: tuple[str, ...] = ('.csv',),
) -> Path:
    """An output file, refused when it is an input, has the wrong
    extension or (without ``overwrite``) exists; its folder must be
    writable.  Checked before any computation."""
    from .._files import check_writable_folder
    from ._outputs import _key

    path = Path(path).expanduser()
    if not path.name.lower().endswith(extensions):
        raise UserError(
            f'the {what} is written as {" or ".join(extensions)}: got {path.name}'
        )
    if _key(path) in {_key(p) for p in inputs}:
        raise UserError(f'refusing to write the {what} over the input {path}')
    if path.is_dir():
        raise UserError(f'cannot write the {what} {path}: a folder has that name')
    if path.exists() and not overwrite:
        raise UserError(
            f'{path} exists already; pass --overwrite to replace it, or choose '
            'another file name'
        )
    check_writable_folder(path.parent, what)
    return path


def objects_and_table(
    args: argparse.Namespace,
    labels: np.ndarray,
    geometry: Any,
    intensity: Any,
    class_names: list[str] | None,
    *,
    channel_axis: int | None = None,
    probabilities: np.ndarray | None = None,
    min_size: tuple[float, str] | None = None,
    measure_it: bool = True,
    instances: bool = False,
    show=None,
):
    """``(labels, table)`` for one image: objects when asked (else the
    labels unchanged) and, with ``measure_it``, their measurements."""
    from ..measure import drive, iter_measure, iter_objects, size_in_pixels

    source = labels
    if objects_wanted(args) or instances:
        pixels = 0.0
        if min_size is not None:
            try:
                pixels = size_in_pixels(*min_size, geometry)
            except ValueError as err:
                raise UserError(f'--min-size: {err}') from None
        source = drive(
            iter_objects(
                labels,
                instances=instances,
                class_names=class_names,
                geometry=geometry,
                split_touching=args.split_touching,
                split_on=getattr(args, 'split_on', 'distance'),
                probabilities=probabilities,
                min_size=pixels,
                fill_holes=args.fill_holes,
            ),
            show,
        )
        labels = source.labels
    table = None
    if measure_it:
        table = drive(
            iter_measure(
                source,
                intensity,
                geometry=geometry,
                class_names=class_names,
                channel_axis=channel_axis,
            ),
            show,
        )
    return labels, table


def print_notes(notes: list[str], prefix: str = '') -> None:
    from ._text import printable

    for note in dict.fromkeys(notes):
        print(f'{prefix}  note: {printable(note)}', file=sys.stderr)


def summary(table, objects: bool) -> str:
    """``'12 objects: 10 nuclei, 2 debris'`` or per-class sizes."""
    from ._text import printable

    if table is None:
        return ''
    size = 'volume_mL' if 'volume_mL' in table else None
    size = size or next((c for c in table if c.startswith(('area_', 'volume_'))), None)
    if objects:
        names, counts = np.unique(table['class'].astype(str), return_counts=True)
        parts = ', '.join(
            f'{c} {printable(n)}' for n, c in zip(names, counts, strict=True)
        )
        return f'{table.n_rows} objects' + (f': {parts}' if parts else '')
    unit = size.split('_', 1)[1] if size else ''
    return ', '.join(
        f'{printable(n)} {v:.4g} {unit}'
        for n, v in zip(table['class'], table[size], strict=True)
    )


def combine(tables: list[tuple[str, Any]]):
    """One table for several images, with an ``image`` column first."""
    from ..measure import Table

    present = [(name, t) for name, t in tables if t is not None]
    if not present:
        return Table()
    columns = list(present[0][1])
    for _, t in present[1:]:
        if list(t) != columns:
            raise UserError(
                'the images have different geometries (units or dimensions), so '
                'their measurements do not fit in one table: measure them '
                'separately with `napari-vmunet measure`'
            )
    merged = Table(
        {'image': np.concatenate([[n] * t.n_rows for n, t in present]).astype(object)}
    )
    for c in columns:
        merged[c] = np.concatenate([t[c] for _, t in present])
    merged.notes = [n for _, t in present for n in t.notes]
    return merged
