"""Which samples train and which validate, and whether they can teach at all.

:func:`split_validation` holds out slices for validation -- at least one
whenever there are two (micro-sam's ``min(1, int(0.1 * n))`` gives none
below ten images) -- deterministically for a seed; a single image gives a
strip of itself instead (:func:`hold_out_strip`).  :func:`check_foreground`
refuses training data without an object and notes what it lacks.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .data import Sample


def split_samples(
    samples: Sequence[Sample], fraction: float, seed: int, tile: int
) -> tuple[list[Sample], list[Sample], str | None]:
    """``(train, val, note)``: the held-out split of ``samples``, or for a
    single image a validation strip of it (``note`` says so)."""
    train, val = split_validation(samples, fraction, seed)
    train_samples = [samples[i] for i in train]
    val_samples = [samples[i] for i in val]
    strip = None
    if len(samples) == 1 and fraction > 0:
        strip = hold_out_strip(samples[0], fraction, tile)
    if strip is None:
        return train_samples, val_samples, None
    note = f'one image: validating on a strip of it, {strip[1].source} ({fraction:.0%})'
    return [strip[0]], [strip[1]], note


def check_foreground(
    train: Sequence[Sample],
    annotation: str,
    num_classes: int,
    class_names: Sequence[str],
) -> list[str]:
    """Refuse training samples without an object (``ValueError``); notes
    about what they lack (background strokes, classes)."""
    sparse = annotation == 'sparse'
    notes = []
    if not any(s.mask.any() for s in train):
        raise ValueError(
            'the training slices contain no stroke of an object (sparse '
            'annotation: 2 or higher; 1 is background); paint at least one'
            if sparse
            else 'the training slices contain no labelled object (only '
            'background); draw at least one object'
        )
    if sparse and not any(
        s.background or (s.annotated & (s.mask == 0)).any() for s in train
    ):
        notes.append(
            'sparse annotation without background strokes (value 1): the '
            'model is never shown what is not an object and may take '
            'everything for one; paint some background'
        )
    if num_classes > 1:
        present = set()
        for s in train:
            present.update(np.unique(s.mask).tolist())
        absent = [class_names[k] for k in range(1, num_classes) if k not in present]
        if absent:
            notes.append(
                f'no training slice contains {", ".join(absent)}: the model '
                'cannot learn those classes from this data'
            )
    return notes


def split_validation(
    samples: Sequence[Sample], fraction: float, seed: int
) -> tuple[list[int], list[int]]:
    """Indices ``(train, val)``: a seeded, stratified hold-out.

    Slices with objects and background-only slices are split separately
    (``round(fraction * n)`` each), so neither kind is lost from training.
    Whenever there are two or more slices and ``fraction > 0``, at least one
    is held out, and at least one slice with objects stays in training.
    """
    n = len(samples)
    if n < 2 or fraction <= 0:
        return list(range(n)), []
    rng = np.random.default_rng(seed)
    labelled = [i for i, s in enumerate(samples) if not s.background]
    empty = [i for i, s in enumerate(samples) if s.background]
    take_l = min(max(len(labelled) - 1, 0), round(fraction * len(labelled)))
    take_e = min(len(empty), round(fraction * len(empty)))
    if take_l + take_e == 0:
        if len(labelled) >= 2:
            take_l = 1
        else:  # one slice with objects: it must train, validate on background
            take_e = 1
    val = [
        *rng.permutation(labelled)[:take_l].tolist(),
        *rng.permutation(empty)[:take_e].tolist(),
    ]
    val_set = set(val)
    return [i for i in range(n) if i not in val_set], sorted(val)


def hold_out_strip(
    sample: Sample, fraction: float, tile: int
) -> tuple[Sample, Sample] | None:
    """Split a single annotated image into a training part and a validation
    strip of ``fraction`` of its height (or width, when it is wider), so that
    one image still gets a validation Dice and the best model is chosen on
    pixels it did not train on.

    The strip is taken from the first side (bottom, top, right, left) that
    leaves objects on both sides of the cut; None when the training part
    would be smaller than a tile or no side has objects on both.  Sparse
    scribbles are cut with their mask (objects = foreground strokes).
    """
    h, w = sample.shape
    for axis in (0, 1) if h >= w else (1, 0):
        size = (h, w)[axis]
        n_val = max(16, round(size * fraction))
        if size - n_val < tile:
            continue
        for at_end in (True, False):
            val_part = slice(size - n_val, size) if at_end else slice(0, n_val)
            train_part = slice(0, size - n_val) if at_end else slice(n_val, size)
            key_val = (val_part, slice(None)) if axis == 0 else (slice(None), val_part)
            key_train = (
                (train_part, slice(None)) if axis == 0 else (slice(None), train_part)
            )
            if not (sample.mask[key_val].any() and sample.mask[key_train].any()):
                continue
            what = 'rows' if axis == 0 else 'columns'
            strip = f'{what} {val_part.start}-{val_part.stop - 1}'
            return (
                sample.crop(key_train),
                sample.crop(key_val, f'{sample.source} {strip}'),
            )
    return None
