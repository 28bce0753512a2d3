"""The results table: a plain dict of equal-length numpy columns.

pandas is not a dependency of napari-vmunet, so the API returns this
``dict`` subclass, which pandas, napari's layer ``features`` and the csv
module all take as it is; :meth:`Table.to_pandas` converts when pandas is
installed.  The CSV is written atomically (:mod:`napari_vmunet._files`):
an interrupted write never leaves half a table over an earlier one.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

#: what a spreadsheet would run as a formula at the start of a text cell
#: (class names come from checkpoints anyone can write)
_FORMULA_START = ('=', '+', '-', '@', '\t', '\r')


class Table(dict):
    """Columns name -> 1-D array, all of one length; ``notes`` say what a
    reader should know (e.g. why the table is empty)."""

    def __init__(
        self,
        columns: Mapping[str, Any] | None = None,
        notes: Iterable[str] = (),
    ):
        super().__init__()
        for name, values in (columns or {}).items():
            self[name] = values
        self.notes: list[str] = list(notes)

    def __setitem__(self, name: str, values: Any) -> None:
        array = np.asarray(values)
        if array.ndim != 1:
            raise ValueError(f'column {name!r} must be 1-D, got shape {array.shape}')
        if len(self) and len(array) != self.n_rows:
            raise ValueError(
                f'column {name!r} has {len(array)} rows, the table {self.n_rows}'
            )
        super().__setitem__(name, array)

    @property
    def columns(self) -> list[str]:
        return list(self)

    @property
    def n_rows(self) -> int:
        return len(next(iter(self.values()))) if self else 0

    def row(self, index: int) -> dict[str, Any]:
        """One row as ``{column: value}`` (Python scalars)."""
        return {name: values[index].item() for name, values in self.items()}

    def take(self, rows: Any) -> Table:
        """The rows at ``rows`` (indices or a boolean mask), same notes."""
        return Table({k: v[rows] for k, v in self.items()}, self.notes)

    def to_pandas(self):
        """A ``pandas.DataFrame`` (needs pandas)."""
        try:
            import pandas as pd
        except ImportError as err:  # pragma: no cover - pandas is in the test env
            raise ImportError(
                'Table.to_pandas needs pandas (pip install pandas); the table '
                'itself is a dict of numpy arrays and works without it'
            ) from err
        frame = pd.DataFrame(dict(self.items()))
        frame.attrs['notes'] = list(self.notes)
        return frame

    def to_csv_text(self) -> str:
        """The table as CSV text: a header row naming each column (with its
        unit), then one row per object; no index column."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator='\n')
        writer.writerow(self.columns)
        cells = [_format_column(v) for v in self.values()]
        writer.writerows(zip(*cells, strict=True))
        return buffer.getvalue()

    def to_csv(self, path: str | os.PathLike) -> Path:
        """Write the table as a UTF-8 CSV file, atomically; returns the path."""
        from .._files import write_atomically_one

        text = self.to_csv_text()

        def write(tmp: Path) -> None:
            tmp.write_text(text, encoding='utf-8', newline='')

        return write_atomically_one(Path(path).expanduser(), write)


def _format_column(values: np.ndarray) -> list[str]:
    if values.dtype.kind == 'f':
        return [_float(v) for v in values.tolist()]
    if values.dtype.kind in 'iub':
        return [str(int(v)) for v in values.tolist()]
    return [_text(str(v)) for v in values.tolist()]


def _float(value: float) -> str:
    if value != value:  # NaN: an empty cell, as spreadsheets expect
        return ''
    return f'{value:.10g}'


def _text(value: str) -> str:
    return "'" + value if value.startswith(_FORMULA_START) else value


def read_csv(path: str | os.PathLike) -> Table:
    """A table written by :meth:`Table.to_csv` (numbers parsed back)."""
    with open(path, newline='', encoding='utf-8') as f:
        rows = list(csv.reader(f))
    if not rows:
        raise ValueError(f'{path} is empty, not a table')
    header, body = rows[0], rows[1:]
    table = Table()
    for i, name in enumerate(header):
        cells = [r[i] for r in body]
        table[name] = _parse(cells)
    return table


def _parse(cells: list[str]) -> np.ndarray:
    for kind in (int, float):
        try:
            return np.array(
                [kind(c) if c != '' else np.nan for c in cells],
                dtype=np.int64 if kind is int else float,
            )
        except (ValueError, TypeError):
            continue
    return np.array(cells, dtype=object)
