"""Where ``predict`` writes, decided and checked before any computation.

The rules (also in docs/cli.md):

* an input is never written over, not even with ``--overwrite``;
* files that look like this command's own outputs (``*_labels.*``,
  ``*_probabilities.*``, ``*_uncertainty.*``), hidden files and the temporary files of
  interrupted writes are never picked up from a folder or a pattern (name
  such a file explicitly to predict it anyway);
* an existing output is only replaced with ``--overwrite``;
* two inputs that would write the same output (``s1/scan.png`` and
  ``s2/scan.png``, or ``x.png`` and ``x.jpg``) get names that tell them
  apart (``s1_scan_labels.png``, ``x_png_labels.png``).

Everything is checked before the model is even loaded, so a mistake costs
nothing and loses nothing.
"""

from __future__ import annotations

import glob
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from .._files import is_temporary, split_name
from . import UserError

#: what ``predict`` appends to an input's name
LABELS_TAG = '_labels'
PROBABILITIES_TAG = '_probabilities'
UNCERTAINTY_TAG = '_uncertainty'
_WRITABLE = ('.nii.gz', '.nii', '.tif', '.tiff', '.png')
_LIST = 10  # how many clashes a message lists


@dataclass(frozen=True)
class Planned:
    """One input and the files its prediction goes to."""

    source: Path
    labels: Path
    probabilities: Path | None
    #: ``--uncertainty-map``: the per-pixel uncertainty, beside the labels
    uncertainty: Path | None = None

    @property
    def outputs(self) -> list[Path]:
        files = (self.labels, self.probabilities, self.uncertainty)
        return [p for p in files if p is not None]


def looks_like_output(path: Path) -> bool:
    """A name this command writes (``scan_labels.png``)."""
    stem, _ = split_name(path.name)
    return stem.endswith((LABELS_TAG, PROBABILITIES_TAG, UNCERTAINTY_TAG))


def expand_inputs(items: list[str]) -> tuple[list[Path], list[Path]]:
    """``(inputs, skipped)``: files, folders (their readable files) and
    globs in a stable order; ``skipped`` are files a folder or pattern held
    that are outputs of an earlier run, hidden or temporary."""
    from ..io import READ_EXTENSIONS

    def readable(path: Path) -> bool:
        return path.name.lower().endswith(READ_EXTENSIONS)

    found: list[Path] = []
    skipped: list[Path] = []

    def take_from_listing(paths) -> None:
        for p in paths:
            if not p.is_file() or not readable(p):
                continue
            hidden = p.name.startswith('.') or is_temporary(p)
            (skipped if hidden or looks_like_output(p) else found).append(p)

    for item in items:
        path = Path(item)
        if path.is_dir():
            take_from_listing(sorted(path.iterdir()))
        elif path.exists():
            found.append(path)  # named explicitly: the user means it
        else:
            matches = sorted(Path(p) for p in glob.glob(item, recursive=True))
            if not matches:
                raise UserError(f'no such file, folder or pattern: {item}')
            take_from_listing(matches)
    unique = list(dict.fromkeys(found))
    if not unique:
        hint = (
            f' ({len(skipped)} file(s) skipped as earlier outputs, hidden or '
            'temporary: name one explicitly to predict it)'
            if skipped
            else ''
        )
        raise UserError(f'no readable images among the inputs{hint}')
    return unique, skipped


def _output_ext(source: Path) -> str:
    ext = split_name(source.name)[1].lower()
    if ext in ('.jpg', '.jpeg'):
        return '.png'
    if ext.startswith('.ome'):
        return '.tif'
    return ext


def _paths(stem: str, ext: str, folder: Path, probabilities: bool, uncertainty: bool):
    # PNG holds no floats: probabilities and uncertainty go to TIFF then
    float_ext = '.tif' if ext == '.png' else ext
    labels = folder / f'{stem}{LABELS_TAG}{ext}'
    probs = folder / f'{stem}{PROBABILITIES_TAG}{float_ext}' if probabilities else None
    unc = folder / f'{stem}{UNCERTAINTY_TAG}{float_ext}' if uncertainty else None
    return labels, probs, unc


def names_a_file(output: Path) -> bool:
    """``-o result.tif`` names the file for a single input (not a folder)."""
    return output.name.lower().endswith(_WRITABLE) and not output.is_dir()


def plan_outputs(
    files: list[Path], output: Path, probabilities: bool, uncertainty: bool = False
) -> tuple[list[Planned], list[str]]:
    """The outputs of every input, and notes on names that were changed."""
    extra = (probabilities, uncertainty)
    if len(files) == 1 and names_a_file(output):
        stem = split_name(output.name)[0]
        _, *floats = _paths(stem, _output_ext(files[0]), output.parent, *extra)
        return [Planned(files[0], output, *floats)], []
    planned = {
        f: _paths(split_name(f.name)[0], _output_ext(f), output, *extra) for f in files
    }
    notes: list[str] = []
    for group in _clashes(planned):
        for source, stem in zip(group, _distinct_stems(group), strict=True):
            planned[source] = _paths(stem, _output_ext(source), output, *extra)
        notes.append(
            'inputs with the same name get distinct outputs: '
            + ', '.join(f'{s} -> {planned[s][0].name}' for s in group)
        )
    remaining = _clashes(planned)
    if remaining:
        lines = '; '.join(' and '.join(map(str, group)) for group in remaining[:_LIST])
        raise UserError(
            f'these inputs would write the same output file: {lines}; rename '
            'one of each or predict them into different folders'
        )
    return [Planned(f, *planned[f]) for f in files], notes


def _key(path: Path) -> str:
    """Case-insensitive, as on macOS and Windows file systems."""
    return os.path.normcase(str(path.absolute())).lower()


def _clashes(planned: dict[Path, tuple]) -> list[list[Path]]:
    owners: dict[str, list[Path]] = defaultdict(list)
    for source, outputs in planned.items():
        for out in outputs:
            if out is not None:
                owners[_key(out)].append(source)
    groups = [list(dict.fromkeys(g)) for g in owners.values() if len(set(g)) > 1]
    return list({tuple(g): g for g in groups}.values())


def _distinct_stems(group: list[Path]) -> list[str]:
    """Names that tell same-named inputs apart: their folders below the
    common one, and their extension when that differs."""
    parents = [p.absolute().parent for p in group]
    common = Path(os.path.commonpath(parents))
    exts = {split_name(p.name)[1].lower() for p in group}
    stems = []
    for source, parent in zip(group, parents, strict=True):
        parts = list(parent.relative_to(common).parts)
        stem, ext = split_name(source.name)
        parts.append(stem)
        if len(exts) > 1:
            parts.append(ext.lstrip('.').replace('.', '_'))
        stems.append('_'.join(parts))
    return stems


def check_plan(plan: list[Planned], overwrite: bool) -> None:
    """Refuse to write over an input, always, and over an existing output
    without ``overwrite``; nothing has been computed yet."""
    inputs = {_key(p.source): p.source for p in plan}
    over_inputs = [
        (p.source, out) for p in plan for out in p.outputs if _key(out) in inputs
    ]
    if over_inputs:
        listed = '; '.join(f'{out} (from {src})' for src, out in over_inputs[:_LIST])
        raise UserError(
            f'refusing to write over input files: {listed}. Choose an output '
            'folder (or file name) that is not one of the inputs.'
        )
    existing = [out for p in plan for out in p.outputs if out.exists()]
    if existing and not overwrite:
        listed = ', '.join(map(str, existing[:_LIST]))
        more = f' and {len(existing) - _LIST} more' if len(existing) > _LIST else ''
        raise UserError(
            f'{len(existing)} output file(s) exist already: {listed}{more}. '
            'Pass --overwrite to replace them, or choose another output folder.'
        )
    for out in (o for p in plan for o in p.outputs):
        if out.is_dir():
            raise UserError(f'cannot write {out}: a folder has that name')
