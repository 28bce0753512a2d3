"""Bounding boxes of label values, without holding the GIL for long.

``scipy.ndimage.find_objects`` is one C call that keeps Python's GIL for
its whole run: on a 200x512x512 map of 3,700 objects a GUI thread waited
126 ms for it (measured beside it in ``benchmarks/responsiveness.py``'s
probe).  The same boxes found slab by slab along the first axis, a few
million pixels at a time, and merged, are identical, and between two slabs
the GUI thread runs.
"""

from __future__ import annotations

import numpy as np

#: pixels per slab: ~10-30 ms of find_objects each on the machines measured
SLAB_PIXELS = 2_000_000


def find_boxes(
    labels: np.ndarray, max_label: int | None = None, slab_pixels: int = SLAB_PIXELS
) -> list[tuple[slice, ...] | None]:
    """``scipy.ndimage.find_objects(labels)``, computed in slabs: entry
    ``i`` is the box of value ``i + 1``, or ``None`` where it is absent."""
    from scipy import ndimage as ndi

    labels = np.asarray(labels)
    if max_label is None:
        max_label = int(labels.max(initial=0))
    if max_label <= 0:
        return []
    per_plane = max(1, int(np.prod(labels.shape[1:], dtype=np.int64)))
    planes = max(1, slab_pixels // per_plane)
    if labels.shape[0] <= planes:
        return ndi.find_objects(labels, max_label=max_label)
    ndim = labels.ndim
    low = np.full((max_label, ndim), np.iinfo(np.int64).max, dtype=np.int64)
    high = np.full((max_label, ndim), -1, dtype=np.int64)
    for z0 in range(0, labels.shape[0], planes):
        boxes = ndi.find_objects(labels[z0 : z0 + planes], max_label=max_label)
        found = [i for i, box in enumerate(boxes) if box is not None]
        if not found:
            continue
        starts = np.array([[s.start for s in boxes[i]] for i in found])
        stops = np.array([[s.stop for s in boxes[i]] for i in found])
        starts[:, 0] += z0
        stops[:, 0] += z0
        low[found] = np.minimum(low[found], starts)
        high[found] = np.maximum(high[found], stops)
    return [
        None if high[i, 0] < 0 else tuple(map(slice, low[i].tolist(), high[i].tolist()))
        for i in range(max_label)
    ]
