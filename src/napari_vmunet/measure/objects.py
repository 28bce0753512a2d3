"""From a class mask to objects: one id per object, each with its class.

Each foreground class of a semantic label map is split into its connected
components (in 3D for volumes: an object continues across slices), with
optional hole filling, an optional split of touching objects by a seeded
watershed, and a minimum size.  An instance map (one id per object, e.g. a
labels layer corrected by hand) is relabelled the same way: every
connected region of one value becomes one object, so an object the user
cut in two becomes two.

All scikit-image/SciPy work after the first labelling runs on the bounding
box of one component at a time.  That keeps memory at a few crops, makes
the work proportional to the foreground instead of the volume (a distance
transform of a whole 200x512x512 volume takes half a minute; of its
objects' boxes, a few seconds), and lets the generator yield between
components so a GUI can show progress and cancel.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._boxes import find_boxes
from ._geometry import Geometry
from ._progress import Progress, _Reporter, drive

#: How touching objects are separated (see :func:`iter_objects`).
SPLIT_ON = ('distance', 'probability')
#: Defaults of the split, in pixels of the finest axis: the distance
#: transform is smoothed by a Gaussian of this sigma (outline noise would
#: seed spurious objects), and a maximum must rise this much above the
#: saddle to its neighbour to seed its own object.  Chosen on the training
#: rows of the nuclei sample, not on its held-out rows (docs/measure.md).
DEFAULT_SPLIT_SMOOTHING = 1.0
DEFAULT_SPLIT_DEPTH = 0.5


@dataclass
class Objects:
    """An instance label map and the class of every object.

    ``labels[...] == i`` is object ``i`` (1..n, 0 background); its class is
    ``classes[i]`` (``classes[0] == 0``), named ``class_names[classes[i]]``.
    """

    labels: np.ndarray
    classes: np.ndarray
    class_names: list[str]
    notes: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.classes) - 1

    def counts(self) -> dict[str, int]:
        """Objects per class name (classes without objects omitted)."""
        values, counts = np.unique(self.classes[1:], return_counts=True)
        return {
            class_name(self.class_names, int(v)): int(c)
            for v, c in zip(values, counts, strict=True)
        }


def class_name(names: Sequence[str] | None, index: int) -> str:
    """``names[index]``, or ``'class <index>'`` where there is no name."""
    if names and 0 <= index < len(names) and names[index]:
        return str(names[index])
    return f'class {index}'


def default_class_names(n_classes: int) -> list[str]:
    return ['background'] + [f'class {i}' for i in range(1, n_classes)]


def find_objects(labels: np.ndarray, **kwargs: Any) -> Objects:
    """:func:`iter_objects` driven with ``progress`` / ``should_cancel``
    callbacks (see :func:`napari_vmunet.measure.drive`)."""
    progress = kwargs.pop('progress', None)
    should_cancel = kwargs.pop('should_cancel', None)
    return drive(iter_objects(labels, **kwargs), progress, should_cancel)


def iter_objects(
    labels: np.ndarray,
    *,
    instances: bool = False,
    classes: Sequence[int] | np.ndarray | None = None,
    class_names: Sequence[str] | None = None,
    geometry: Geometry | None = None,
    split_touching: bool = False,
    split_on: str = 'distance',
    probabilities: np.ndarray | None = None,
    split_depth: float = DEFAULT_SPLIT_DEPTH,
    split_smoothing: float = DEFAULT_SPLIT_SMOOTHING,
    min_size: float = 0,
    fill_holes: bool = False,
    connectivity: int = 1,
) -> Generator[Progress, None, Objects]:
    """Split a label map into objects; yields :class:`Progress`, returns
    :class:`Objects`.

    Parameters
    ----------
    labels:
        2D or 3D integer array.  Semantic (default): each value is a class.
        With ``instances=True`` each value is an object whose class is
        ``classes[value]`` (default: class 1 for every object).
    geometry:
        The pixel size, for distances in the split (anisotropic volumes)
        and for the notes; default unit pixels.
    split_touching:
        Separate touching objects by a seeded watershed: seeds are the
        maxima of the distance transform (smoothed by a Gaussian of sigma
        ``split_smoothing``) deeper than ``split_depth`` (h-maxima; both in
        pixels of the finest axis, physical on anisotropic volumes); the
        flooding follows the distance transform (``split_on='distance'``)
        or the valleys of the class probability (``'probability'``, needs
        ``probabilities``: ``(K, *shape)`` per class, or ``shape`` for a
        one-class model).
    min_size:
        Objects with fewer pixels are dropped (see
        :func:`napari_vmunet.measure.size_in_pixels` for physical units).
    fill_holes:
        Background enclosed by an object becomes part of it (pixels of
        another class stay what they are).
    connectivity:
        1: pixels touching by a face are connected; ``labels.ndim``: also
        by an edge or corner.
    """
    labels = _check_labels(labels)
    steps = _checked_steps(
        labels,
        geometry,
        connectivity,
        split_touching,
        split_on,
        probabilities,
        (split_depth, split_smoothing),
        min_size,
        fill_holes,
    )
    lookup, passes, names = _passes(labels, instances, classes, class_names)
    objects = _ObjectMap(labels, lookup, steps)
    yield Progress('objects', 0, 0, 'connected components')
    for pass_no, cls in enumerate(passes):
        what = 'objects' if cls is None else class_name(names, cls)
        task = f'{what} ({pass_no + 1}/{len(passes)})'
        yield from _add_pass(objects, cls, connectivity, task)
    return objects.result(names)


@dataclass(frozen=True)
class _Steps:
    """What :func:`iter_objects` does to every connected component, checked
    once, so that the per-component work takes one argument, not six."""

    #: pixel spacing relative to the finest axis: the distance transform is
    #: isotropic in space, and the split depth is counted in the finest pixels
    spacing: np.ndarray
    fill_holes: bool
    split: bool
    depth_sigma: tuple[float, float]
    probabilities: np.ndarray | None
    min_size: float


def _checked_steps(
    labels: np.ndarray,
    geometry: Geometry | None,
    connectivity: int,
    split_touching: bool,
    split_on: str,
    probabilities: Any,
    depth_sigma: tuple[float, float],
    min_size: float,
    fill_holes: bool,
) -> _Steps:
    """The options of :func:`iter_objects` checked before any work (a wrong
    one fails at once, not after the labelling) and gathered as steps."""
    ndim = labels.ndim
    geometry = geometry or Geometry.pixels(ndim)
    if geometry.ndim != ndim:
        raise ValueError(
            f'the geometry is {geometry.ndim}D but the label map is {ndim}D'
        )
    if not 1 <= int(connectivity) <= ndim:
        raise ValueError(f'connectivity must be 1..{ndim}, got {connectivity}')
    if split_on not in SPLIT_ON:
        raise ValueError(f'split_on must be one of {SPLIT_ON}, got {split_on!r}')
    if not np.isfinite(min_size) or min_size < 0:
        raise ValueError(f'the minimum object size must be >= 0, got {min_size}')
    split_depth, split_smoothing = depth_sigma
    if split_depth <= 0 or not np.isfinite(split_depth):
        raise ValueError(f'split_depth must be > 0 pixels, got {split_depth}')
    if split_smoothing < 0 or not np.isfinite(split_smoothing):
        raise ValueError(f'split_smoothing must be >= 0 pixels, got {split_smoothing}')
    if split_touching and split_on == 'probability':
        probabilities = _check_probabilities(probabilities, labels.shape)
    else:
        probabilities = None
    spacing = np.asarray(geometry.spacing)
    return _Steps(
        spacing=spacing / spacing.min(),
        fill_holes=fill_holes,
        split=split_touching,
        depth_sigma=depth_sigma,
        probabilities=probabilities,
        min_size=min_size,
    )


def _passes(
    labels: np.ndarray,
    instances: bool,
    classes: Any,
    class_names: Sequence[str] | None,
) -> tuple[np.ndarray | None, list[int | None], list[str]]:
    """The labelling passes (each foreground class of a semantic map on its
    own; an instance map in one pass, ``None``), the class of every
    instance id (``None`` for a semantic map) and the class names."""
    lookup = None
    if instances:
        lookup = _instance_classes(labels, classes)
        passes: list[int | None] = [None]
        n_classes = int(lookup.max(initial=0)) + 1
    else:
        present = _present_classes(labels)
        passes = list(present)
        n_classes = max(present, default=0) + 1
    names = list(class_names) if class_names else default_class_names(n_classes)
    return lookup, passes, names


class _ObjectMap:
    """The instance map being built: the parts of each component take the
    next free ids, their classes are recorded, and the objects dropped for
    their size are counted for the notes."""

    def __init__(
        self, labels: np.ndarray, lookup: np.ndarray | None, steps: _Steps
    ) -> None:
        self.labels = labels
        self.lookup = lookup
        self.steps = steps
        self.out = np.zeros(labels.shape, dtype=np.int32)
        self.classes: list[int] = [0]
        self.dropped = 0

    def add(
        self, components: np.ndarray, index: int, box: tuple[slice, ...], cls
    ) -> None:
        """Component ``index`` of ``components`` (bounding box ``box``), of
        class ``cls`` (``None``: the class of its instance id)."""
        box = _pad(box, self.labels.shape)
        mask = components[box] == index
        if cls is None:
            value = self.labels[box][mask].flat[0]
            this_class = int(self.lookup[value])
        else:
            this_class = cls
        parts, dropped = _parts(mask, self.labels[box], box, this_class, self.steps)
        self.dropped += dropped
        target = self.out[box]
        for part in range(1, int(parts.max()) + 1):
            where = parts == part
            if where.any():
                # filled holes and watershed regions never leave the
                # component's own pixels or the background
                target[where & (target == 0)] = len(self.classes)
                self.classes.append(this_class)

    def result(self, names: list[str]) -> Objects:
        """The objects found, with a note when there are none or some were
        dropped."""
        notes: list[str] = []
        if len(self.classes) == 1:
            notes.append(
                'no objects: every object was smaller than the minimum size'
                if self.dropped
                else 'no objects: the label map has no foreground (every pixel is 0)'
            )
        elif self.dropped:
            notes.append(
                f'{self.dropped} object(s) smaller than the minimum size were dropped'
            )
        classes = np.asarray(self.classes, dtype=np.int32)
        return Objects(self.out, classes, names, notes)


def _add_pass(
    objects: _ObjectMap, cls: int | None, connectivity: int, task: str
) -> Generator[Progress, None, None]:
    """One labelling pass: the connected components of class ``cls`` (or
    of every instance id), added to ``objects`` one at a time, with
    progress between them so that a GUI can show it and cancel."""
    from skimage.measure import label as sk_label

    labels = objects.labels
    source = labels if cls is None else labels == cls
    components = sk_label(source, background=0, connectivity=connectivity)
    del source
    boxes = find_boxes(components)
    reporter = _Reporter('objects', len(boxes), task)
    yield reporter.step(0)
    for index, box in enumerate(boxes, start=1):
        if box is None:
            continue
        objects.add(components, index, box, cls)
        if reporter.due():
            yield reporter.step(index)
    yield reporter.step(len(boxes))


def _parts(
    mask: np.ndarray,
    crop: np.ndarray,
    box: tuple[slice, ...],
    cls: int,
    steps: _Steps,
) -> tuple[np.ndarray, int]:
    """The objects of one component (``mask`` on its box; ``crop``: the
    label map there) after the steps asked for: holes filled, touching
    objects split, small ones dropped.  Returns them as ids 1..n on the
    box, and how many were dropped for their size."""
    from scipy import ndimage as ndi

    if steps.fill_holes:
        mask = ndi.binary_fill_holes(mask) & ((crop == 0) | mask)
    parts = mask.astype(np.int32)
    if steps.split:
        parts = _split(
            mask, steps.spacing, steps.depth_sigma, steps.probabilities, cls, box
        )
    dropped = 0
    if steps.min_size > 0:
        kept = _remove_small(parts, steps.min_size)
        dropped = int(parts.max()) - len(np.unique(kept[kept > 0]))
        parts = kept
    return parts, dropped


def _present_classes(labels: np.ndarray) -> list[int]:
    """The foreground values of a semantic map.  A few comparisons (which
    release the GIL) instead of ``np.unique``, which sorts the whole volume:
    3 s for 200x512x512."""
    top = int(labels.max(initial=0))
    if top > 64:
        return [int(v) for v in np.unique(labels) if v != 0]
    return [v for v in range(1, top + 1) if (labels == v).any()]


def _check_labels(labels: Any) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim not in (2, 3):
        raise ValueError(f'objects need a 2D or 3D label map, got shape {labels.shape}')
    if labels.dtype == bool:
        return labels.astype(np.uint8)
    if not np.issubdtype(labels.dtype, np.integer):
        if np.issubdtype(labels.dtype, np.floating) and np.all(np.mod(labels, 1) == 0):
            return labels.astype(np.int64)
        raise ValueError(
            f'a label map holds whole numbers (classes or object ids), got '
            f'{labels.dtype} values; threshold a probability map first'
        )
    if labels.size and labels.min() < 0:
        raise ValueError('a label map cannot hold negative values')
    return labels


def _instance_classes(labels: np.ndarray, classes: Any) -> np.ndarray:
    """Class per object id (class 1 for ids that ``classes`` does not list)."""
    top = int(labels.max(initial=0))
    lookup = np.ones(top + 1, dtype=np.int32)
    lookup[0] = 0
    if classes is not None:
        given = np.asarray(classes, dtype=np.int64)[: top + 1]
        lookup[1 : len(given)] = given[1:]
        lookup[lookup < 0] = 0
    return lookup


def _check_probabilities(probabilities: Any, shape: tuple) -> np.ndarray:
    if probabilities is None:
        raise ValueError(
            "split_on='probability' needs the class probabilities (predict "
            "with probabilities), or use split_on='distance'"
        )
    probabilities = np.asarray(probabilities)
    if probabilities.shape != shape and probabilities.shape[1:] != shape:
        raise ValueError(
            f'probabilities of shape {probabilities.shape} do not match the '
            f'label map {shape}'
        )
    return probabilities


def _pad(box: tuple[slice, ...], shape: tuple[int, ...]) -> tuple[slice, ...]:
    """One pixel of margin, so holes and the distance transform see the
    background around the object."""
    return tuple(
        slice(max(s.start - 1, 0), min(s.stop + 1, n))
        for s, n in zip(box, shape, strict=True)
    )


def _split(
    mask: np.ndarray,
    spacing: np.ndarray,
    depth_sigma: tuple[float, float],
    probabilities: np.ndarray | None,
    cls: int,
    box: tuple[slice, ...],
) -> np.ndarray:
    """Watershed of one component from the h-maxima of its smoothed
    distance transform."""
    from scipy import ndimage as ndi
    from skimage.measure import label as sk_label
    from skimage.morphology import h_maxima
    from skimage.segmentation import watershed

    depth, sigma = depth_sigma
    distance = ndi.distance_transform_edt(mask, sampling=spacing)
    if sigma > 0:
        distance = ndi.gaussian_filter(distance, sigma / spacing) * mask
    if distance.max() <= depth:
        return mask.astype(np.int32)  # too thin to hold two deep maxima
    seeds = sk_label(h_maxima(distance, depth).astype(bool) & mask)
    if seeds.max() < 2:
        return mask.astype(np.int32)
    if probabilities is None:
        elevation = -distance
    else:
        plane = probabilities if probabilities.ndim == mask.ndim else probabilities[cls]
        elevation = -np.asarray(plane[box], dtype=np.float32)
    return watershed(elevation, seeds, mask=mask).astype(np.int32)


def _remove_small(parts: np.ndarray, min_size: float) -> np.ndarray:
    """``remove_small_objects`` keeping objects of at least ``min_size``
    pixels, whichever scikit-image: 0.26 renamed its size argument (and
    made it inclusive)."""
    from skimage.morphology import remove_small_objects

    need = int(np.ceil(min_size))
    with warnings.catch_warnings():
        # a crop often holds one object: scikit-image then asks whether a
        # boolean was meant (it was not: a label keeps its connectivity)
        warnings.filterwarnings('ignore', 'Only one label', UserWarning)
        if 'max_size' in inspect.signature(remove_small_objects).parameters:
            return remove_small_objects(parts, max_size=need - 1)
        return remove_small_objects(parts, min_size=need)  # pragma: no cover
