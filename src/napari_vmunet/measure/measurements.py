"""One row of measurements per label value: per object for an instance map,
per class for a semantic one.

The numbers are scikit-image's ``regionprops`` with the image's pixel
spacing, so areas, volumes and diameters are physical; the table names the
unit in every column that has one.  ``regionprops`` runs on each label
value's own bounding box, found slab by slab (:func:`._boxes.find_boxes`),
instead of once through ``regionprops_table`` on the whole map: the
generator reports progress and can be cancelled between objects (thousands
of objects in a volume take seconds), and no single call keeps the GIL long
enough to stall a GUI thread (the whole-map ``find_objects`` inside
``regionprops`` did, for over 100 ms).
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import Any

import numpy as np

from ._boxes import find_boxes
from ._geometry import AXES, Geometry
from ._progress import Progress, _Reporter, drive
from .objects import Objects, class_name
from .table import Table

#: regions read between two progress checks
_CHUNK = 64


def measure(labels: Any, image: Any = None, **kwargs: Any) -> Table:
    """:func:`iter_measure` driven with ``progress`` / ``should_cancel``
    callbacks; returns the :class:`Table`."""
    progress = kwargs.pop('progress', None)
    should_cancel = kwargs.pop('should_cancel', None)
    return drive(iter_measure(labels, image, **kwargs), progress, should_cancel)


def iter_measure(
    labels: np.ndarray | Objects,
    image: np.ndarray | None = None,
    *,
    geometry: Geometry | None = None,
    classes: Sequence[int] | np.ndarray | None = None,
    class_names: Sequence[str] | None = None,
    channel_axis: int | None = None,
) -> Generator[Progress, None, Table]:
    """Measure every label value of ``labels``; yields :class:`Progress`,
    returns a :class:`Table` with one row per value present.

    Parameters
    ----------
    labels:
        :class:`Objects` (their classes and names are used), or a 2D/3D
        integer label map: an instance map with ``classes`` (class per id),
        else a semantic map whose values are the classes.
    image:
        The original intensities, same spatial shape (channels at
        ``channel_axis`` give one intensity column per channel).  Without
        it the intensity columns are left out.
    geometry:
        Where the pixels are and how big (default: pixels).

    Columns: ``label``, ``class_index``, ``class``, ``pixels`` (``voxels``),
    the area or volume (``area_um2``, ``volume_mm3``, ``volume_mL``, or
    ``area_px`` without a unit), ``equivalent_diameter_<unit>``,
    ``centroid_<axis>_<unit>`` in world coordinates, ``bbox_min_<axis>_px``
    / ``bbox_max_<axis>_px`` (data indices, max exclusive), and
    ``intensity_mean`` / ``intensity_min`` / ``intensity_max`` (``_c<i>`` per
    channel).
    """
    labels, classes, class_names, notes = _label_map(labels, classes, class_names)
    geometry = geometry or Geometry.pixels(labels.ndim)
    if geometry.ndim != labels.ndim:
        raise ValueError(
            f'the geometry is {geometry.ndim}D but the label map is {labels.ndim}D'
        )
    intensity = _intensity(image, channel_axis, labels.shape)
    lookup = None if classes is None else np.asarray(classes, dtype=np.int64)
    columns = yield from _measure_regions(labels, intensity, geometry)
    table = _table(columns, lookup, class_names)
    table.notes = notes + _notes(labels, geometry, len(columns['label']), notes)
    return table


def _label_map(
    labels: np.ndarray | Objects,
    classes: Any,
    class_names: Sequence[str] | None,
) -> tuple[np.ndarray, Any, Sequence[str] | None, list[str]]:
    """The label map as a checked integer array, with the classes, class
    names and notes of :class:`Objects` when it is one (class names given
    explicitly win), so that the rest reads one kind of input."""
    if isinstance(labels, Objects):
        classes = labels.classes
        class_names = class_names or labels.class_names
        notes = list(labels.notes)
        labels = labels.labels
    else:
        notes = []
    labels = np.asarray(labels)
    if labels.ndim not in AXES:
        raise ValueError(f'measurements need a 2D or 3D label map, got {labels.shape}')
    if labels.dtype == bool:
        labels = labels.astype(np.uint8)
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f'a label map holds whole numbers, got {labels.dtype}')
    return labels, classes, class_names, notes


def _measure_regions(
    labels: np.ndarray, intensity: Any, geometry: Geometry
) -> Generator[Progress, None, dict]:
    """The measured columns, one row per label value present: regionprops
    on each value's own bounding box, :data:`_CHUNK` regions between two
    progress checks, so that a GUI can show progress and cancel."""
    from skimage.measure import regionprops

    yield Progress('measure', 0, 0, 'finding the objects')
    found = [(i + 1, box) for i, box in enumerate(find_boxes(labels)) if box]
    columns = _empty_columns(geometry, intensity, len(found))
    reporter = _Reporter('measure', len(found), 'measuring')
    yield reporter.step(0)
    for start in range(0, len(found), _CHUNK):
        for row, (value, box) in enumerate(found[start : start + _CHUNK], start=start):
            mask = (labels[box] == value).astype(np.uint8)
            crop = None if intensity is None else intensity[box]
            (region,) = regionprops(mask, crop, spacing=geometry.spacing)
            offset = np.array([s.start for s in box])
            _fill_row(columns, row, value, offset, region, geometry, crop is not None)
        if reporter.due():
            yield reporter.step(min(start + _CHUNK, len(found)))
    yield reporter.step(len(found))
    return columns


def _table(
    columns: dict, lookup: np.ndarray | None, class_names: Sequence[str] | None
) -> Table:
    """The table of the measured ``columns``, the class of each label first
    (from ``lookup`` for an instance map; else the label is the class)."""
    ids = columns['label']
    index = ids.copy()
    if lookup is not None:
        inside = ids < len(lookup)
        index[:] = 1  # ids painted after the classes were known: class 1
        index[inside] = lookup[ids[inside]]
    table = Table({'label': ids, 'class_index': index})
    table['class'] = np.array(
        [class_name(class_names, int(i)) for i in index], dtype=object
    )
    for name, values in columns.items():
        if name != 'label':
            table[name] = values
    return table


def _intensity(image: Any, channel_axis: int | None, shape: tuple) -> Any:
    if image is None:
        return None
    image = np.asarray(image)
    if channel_axis is not None:
        image = np.moveaxis(image, channel_axis, -1)
    spatial = image.shape if channel_axis is None else image.shape[:-1]
    if tuple(spatial) != tuple(shape):
        raise ValueError(
            f'the image (spatial shape {tuple(spatial)}) does not match the label '
            f'map {tuple(shape)}: measure intensities on the image the labels '
            'were drawn on'
        )
    if np.iscomplexobj(image):
        raise ValueError('complex images have no intensity to measure')
    return image


def _empty_columns(geometry: Geometry, intensity: Any, n: int) -> dict:
    axes = AXES[geometry.ndim]
    u = geometry.suffix
    columns: dict[str, np.ndarray] = {'label': np.zeros(n, np.int64)}
    columns['pixels' if geometry.ndim == 2 else 'voxels'] = np.zeros(n, np.int64)
    for name in geometry.size_columns():
        columns[name] = np.zeros(n)
    columns[f'equivalent_diameter_{u}'] = np.zeros(n)
    for a in axes:
        columns[f'centroid_{a}_{u}'] = np.zeros(n)
    for a in axes:
        columns[f'bbox_min_{a}_px'] = np.zeros(n, np.int64)
    for a in axes:
        columns[f'bbox_max_{a}_px'] = np.zeros(n, np.int64)
    if intensity is not None:
        channels = intensity.shape[-1] if intensity.ndim > geometry.ndim else 0
        suffixes = [f'_c{c}' for c in range(channels)] or ['']
        for stat in ('mean', 'min', 'max'):
            for s in suffixes:
                columns[f'intensity_{stat}{s}'] = np.zeros(n)
    return columns


def _fill_row(
    columns: dict,
    row: int,
    value: int,
    offset: np.ndarray,
    region,
    geometry: Geometry,
    intensity: bool,
):
    """Row ``row``: label ``value``, measured by ``region`` on the crop of
    its bounding box that starts at the pixel index ``offset``."""
    n = geometry.ndim
    axes = AXES[n]
    u = geometry.suffix
    columns['label'][row] = value
    count = int(round(region.area / geometry.pixel_size))
    columns['pixels' if n == 2 else 'voxels'][row] = count
    for name, factor in geometry.size_columns().items():
        columns[name][row] = region.area * factor
    columns[f'equivalent_diameter_{u}'][row] = region.equivalent_diameter_area
    # with spacing, regionprops gives the centroid scaled per axis; the
    # world position also needs the translation and any rotation
    index = np.asarray(region.centroid) / np.asarray(geometry.spacing) + offset
    world = geometry.to_world(index)[0]
    for a, value in zip(axes, world, strict=True):
        columns[f'centroid_{a}_{u}'][row] = value
    bbox = region.bbox
    for i, a in enumerate(axes):
        columns[f'bbox_min_{a}_px'][row] = bbox[i] + offset[i]
        columns[f'bbox_max_{a}_px'][row] = bbox[i + n] + offset[i]
    if intensity:
        for stat in ('mean', 'min', 'max'):
            values = np.atleast_1d(getattr(region, f'intensity_{stat}'))
            if len(values) == 1 and f'intensity_{stat}' in columns:
                columns[f'intensity_{stat}'][row] = values[0]
            else:
                for c, value in enumerate(values):
                    columns[f'intensity_{stat}_c{c}'][row] = value


def _notes(labels: np.ndarray, geometry: Geometry, n: int, earlier: list) -> list[str]:
    notes = []
    if n == 0 and not any(note.startswith('no objects') for note in earlier):
        notes.append('no objects: the label map has no foreground (every pixel is 0)')
    if geometry.unit is None:
        notes.append('the image has no physical pixel size: sizes are in pixels')
    elif geometry.unit == 'u':
        notes.append(
            'the image has a scale but no unit: sizes are in its scale units (u)'
        )
    return notes
