"""Objects and measurements: from a segmentation to numbers with units.

No Qt and no torch here: the CLI, notebooks and the napari dock share it.

* :func:`find_objects` / :func:`iter_objects` split each class of a label
  map into objects (connected components in 2D or 3D, optional watershed
  split of touching objects, minimum size, hole filling), or relabel an
  instance map that was corrected by hand.
* :func:`measure` / :func:`iter_measure` measure every object (or every
  class): size in physical units named in the column (``area_um2``,
  ``volume_mm3``, ``volume_mL``), world centroid, bounding box, intensity
  statistics on the original image, equivalent diameter.
* :class:`Table` is a dict of numpy columns (``.to_pandas()``,
  ``.to_csv()`` written atomically).
* :func:`match_objects` scores objects against reference instances
  (precision, recall, F1 at an IoU threshold), as the benchmark does.

The ``iter_*`` forms are generators yielding :class:`Progress` so a GUI runs
them in a worker thread and can cancel; the plain forms take ``progress``
and ``should_cancel`` callbacks.

Example::

    from napari_vmunet.io import read_image
    from napari_vmunet.measure import Geometry, find_objects, measure

    image = read_image('scan.nii.gz')
    labels = read_image('scan_labels.nii.gz').data
    geometry = Geometry.from_image(image)
    objects = find_objects(labels, geometry=geometry, split_touching=True)
    table = measure(objects, image.data, geometry=geometry)
    table.to_csv('objects.csv')
"""

from __future__ import annotations

from ._geometry import Geometry, normalize_unit, parse_size, size_in_pixels
from ._matching import Matching, match_objects
from ._progress import Cancelled, Progress, drive
from .measurements import iter_measure, measure
from .objects import SPLIT_ON, Objects, find_objects, iter_objects
from .table import Table, read_csv

__all__ = [
    'SPLIT_ON',
    'Cancelled',
    'Geometry',
    'Matching',
    'Objects',
    'Progress',
    'Table',
    'drive',
    'find_objects',
    'iter_measure',
    'iter_objects',
    'match_objects',
    'measure',
    'normalize_unit',
    'parse_size',
    'read_csv',
    'size_in_pixels',
]
