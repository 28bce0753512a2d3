"""What ``napari-vmunet predict`` writes and prints besides the labels: the
probability and uncertainty maps, object ids and their measurements table,
the ranking of slices to annotate next, and the line per input.

Kept apart from the command's options and its loop over inputs
(``predict.py``), so each module reads as one job.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def write_maps(item, image, result) -> list[Path]:
    """The probabilities and the uncertainty map, where the plan has a file
    for them; returns the files written."""
    from ..io import write_image

    written = []
    if item.probabilities is not None:
        probs = result.probabilities
        axes = image.axes.replace('C', '')
        if probs.ndim > result.labels.ndim:
            axes = 'C' + axes
        write_image(item.probabilities, probs, like=image, axes=axes)
        written.append(item.probabilities)
    if item.uncertainty is not None:
        write_image(item.uncertainty, result.uncertainty, like=image)
        written.append(item.uncertainty)
    return written


def print_result(prefix: str, path: Path, written: list, result) -> None:
    """The line for one input (what was written, how long it took, the
    pixels per class) and the prediction's warnings."""
    from ._text import printable

    counts = ', '.join(
        f'{printable(name)}: {int((result.labels == i).sum())} px'
        for i, name in enumerate(result.class_names)
        if i
    )
    print(
        f'{prefix}{path} -> {", ".join(map(str, written))} '
        f'({result.seconds:.1f} s on {result.device}; {counts})'
    )
    for note in result.warnings:
        print(f'{prefix}  warning: {printable(note)}', file=sys.stderr)


def objects(args: argparse.Namespace, image, result):
    """The labels to write (object ids with ``--objects``) and the table
    of this image (with ``--measure``)."""
    from ..measure import Geometry
    from ._objects import objects_and_table, objects_wanted, print_notes

    if not (objects_wanted(args) or args.measure is not None):
        return result.labels, None
    labels, table = objects_and_table(
        args,
        result.labels,
        Geometry.from_image(image),
        image.data if args.measure is not None else None,
        result.class_names,
        channel_axis=image.channel_axis,
        probabilities=result.probabilities,
        min_size=args.min_size_parsed,
        measure_it=args.measure is not None,
    )
    if table is not None:
        print_notes(table.notes)
    return labels, table


def write_table(path, tables: list) -> None:
    from ._objects import combine

    table = combine(tables)
    table.to_csv(path)
    print(f'table: {path} ({table.n_rows} rows)')


def annotations(where: str | None, source: Path, read_image):
    """The annotations of ``source`` for its ranking: the label file
    ``where``, or ``where/<source's name>`` for a folder (none there: no
    slice is annotated, and a note says so)."""
    if where is None:
        return ()
    where = Path(where)
    if where.is_dir():
        where = where / source.name
        if not where.is_file():
            print(
                f'note: no annotations for {source.name} in {where.parent}',
                file=sys.stderr,
            )
            return ()
    return read_image(where).data


def write_ranking(path, rankings: list) -> None:
    """One row per candidate slice of every input, most uncertain first per
    input; slices already annotated, and blank ones, are left out (and
    counted)."""
    from ..measure import Table

    rows = [
        (name, r)
        for name, ranking in rankings
        for r in ranking.rows()
        if not r['annotated']
    ]
    left_out = sum(len(ranking.excluded) for _, ranking in rankings)
    table = Table(
        {
            'file': np.array([name for name, _ in rows], dtype=object),
            'rank': np.array([r['rank'] for _, r in rows], dtype=np.int64),
            'slice': np.array([r['slice'] for _, r in rows], dtype=np.int64),
            'uncertainty': np.array(
                [r['uncertainty'] for _, r in rows], dtype=np.float64
            ),
        }
    )
    table.to_csv(path)
    note = f', {left_out} annotated slice(s) left out' if left_out else ''
    blank = sum(len(ranking.unscored) for _, ranking in rankings)
    if blank:
        note += f', {blank} blank slice(s) left out'
    print(f'uncertainty: {path} ({table.n_rows} slices ranked{note})')
