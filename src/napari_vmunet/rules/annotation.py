"""What painted label values mean: dense annotation or sparse scribbles.

``dense`` (the default): a slice with any label is annotated *completely*;
its unpainted pixels are background.  ``sparse`` follows napari-convpaint
and ilastik: ``0`` = not annotated, ``1`` = background, ``k + 1`` = class
``k`` (for a one-class model ``2`` = foreground).  Only painted pixels teach
the model; the unpainted rest of a slice is neither background nor object.

This module is the one home of the sparse convention (training data, the
losses and the fine-tune dock's legend and scribble layer all use it):

* :func:`sparse_targets` turns painted values into class targets and the
  mask of annotated pixels, refusing values the model has no class for;
* :data:`IGNORE` marks unannotated pixels in a training target
  (:func:`with_ignore`), so the mask travels with the target through crops,
  flips and rotations -- resampled nearest-neighbour like the target itself
  -- and cannot fall out of step with it;
* :func:`paint_values` names what each value paints.

numpy only: the napari dock imports it without torch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: annotation modes (``TrainConfig.annotation``, ``--annotation``)
ANNOTATIONS = ('dense', 'sparse')
#: a training target's value at pixels nobody annotated (sparse mode)
IGNORE = -1


def check_annotation(value: str) -> str:
    """``value`` if it is an annotation mode, else a ``ValueError``."""
    if value not in ANNOTATIONS:
        raise ValueError(
            f'annotation must be one of {", ".join(ANNOTATIONS)}, got {value!r}'
        )
    return value


def paint_values(
    num_classes: int, class_names: Sequence[str] | None = None
) -> list[tuple[int, str]]:
    """``(paint value, class name)`` for every class, background first.

    A one-class model has two: 1 = background, 2 = foreground.  Missing
    names are background / foreground / ``class k``."""
    k = max(int(num_classes), 2)
    if num_classes == 1:
        default = ['background', 'foreground']
    else:
        default = ['background', *(f'class {i}' for i in range(1, k))]
    names = list(class_names or [])
    names = names + default[len(names) :]
    return [(i + 1, str(names[i])) for i in range(k)]


def top_value(num_classes: int) -> int:
    """The highest paint value a ``num_classes`` model has a class for."""
    return paint_values(num_classes)[-1][0]


def sparse_targets(
    labels: np.ndarray,
    num_classes: int,
    *,
    class_names: Sequence[str] | None = None,
    source: str = 'the labels',
) -> tuple[np.ndarray, np.ndarray]:
    """Painted values -> ``(target, annotated)``.

    ``target``: class indices (0 where nothing is painted, so that it is a
    valid index everywhere); ``annotated``: bool, True where painted.
    Raises ``ValueError`` naming the values above :func:`top_value` and
    what to do about them.
    """
    labels = np.asarray(labels)
    top = top_value(num_classes)
    high = np.unique(labels[labels > top]) if labels.size else labels[:0]
    if high.size:
        shown = ', '.join(map(str, high[:8].tolist()))
        more = f' and {high.size - 8} more' if high.size > 8 else ''
        legend = ', '.join(
            f'{v} = {n}' for v, n in paint_values(num_classes, class_names)
        )
        what = 'one class' if num_classes == 1 else f'{num_classes} classes'
        raise ValueError(
            f'{source}: the scribbles contain the value(s) {shown}{more}, but in '
            f'sparse mode a model with {what} is painted with 0 = not '
            f'annotated, {legend}. Repaint those strokes with one of these '
            f'values, or train with num_classes={int(high.max()) - 1} (value '
            'k + 1 paints class k). Fully painted labels (e.g. one id per '
            'object) train in dense mode.'
        )
    annotated = labels > 0
    target = np.where(annotated, labels.astype(np.int64) - 1, 0)
    return target.astype(np.uint8 if top <= 256 else np.int16), annotated


def with_ignore(target: np.ndarray, annotated: np.ndarray | None) -> np.ndarray:
    """The target with :data:`IGNORE` where nothing is annotated (int16);
    the target itself when ``annotated`` is None (dense: everything is)."""
    if annotated is None:
        return target
    return np.where(annotated, target.astype(np.int16), np.int16(IGNORE))
