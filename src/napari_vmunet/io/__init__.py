"""Reading and writing images and label maps, shared by the CLI, the predictor
and the napari docks, one module per format.  No napari or Qt imports: this
package runs headless.

Axis conventions
----------------
Every :class:`ImageData` lists its axes in ``axes`` using the letters
``Z``, ``Y``, ``X`` (spatial) and ``C`` (channels):

* 2D: ``'YX'``; with channels the channel axis is last, ``'YXC'`` (RGB(A)
  images have ``rgb=True``; napari and scikit-image use that order too).
* 3D: ``'ZYX'``; with channels the channel axis is first, ``'CZYX'`` (the
  order of MONAI/PyTorch and of napari's ``channel_axis=0``).

``scale`` and ``translate`` always have one entry per *spatial* axis, in
``axes`` order without ``C``.

NIfTI
-----
nibabel returns voxel arrays indexed ``(i, j, k)`` with a 4x4 ``affine``
mapping ``(i, j, k, 1)`` to RAS+ world millimetres ``(x, y, z, 1)``.  napari
puts the *first* axis on the slider, and the slices of a scan are along
``k``, so volumes are presented **with the voxel axes reversed**:
``data[z, y, x] == nifti[x, y, z]`` i.e. ``axes='ZYX'`` with ``Z=k, Y=j,
X=i``.  The world axes are reversed the same way, so ``ImageData.affine`` is
``P @ A @ P`` (``P`` swaps axes 0 and 2) and maps ``(z, y, x, 1)`` to world
``(S, A, R, 1)`` millimetres.  ``scale`` holds the voxel sizes (column norms
of that affine) and ``translate`` the world position of voxel ``(0, 0, 0)``.
For axis-aligned, unflipped images ``affine == diag(scale) + translate``;
oblique or flipped images need the full ``affine`` (see
:func:`napari_vmunet._layer_data.layer_kwargs`).  A volume stored as ``(X, Y, 1)`` is
presented as a 2D ``'YX'`` image.  4D files (``X, Y, Z, T/C``) are refused
unless ``read_image(..., allow_channels=True)``, which gives ``'CZYX'``.

:func:`write_labels` and :func:`write_image` undo the reversal and reuse the
source header and affine (kept in ``ImageData.meta``), so results overlay the
scan in ITK-SNAP, 3D Slicer or FSLeyes.

In napari's 2D view rows grow downwards, so an axial RAS slice shows anterior
at the bottom; set ``viewer.camera.orientation2d = ('up', 'right')`` for the
usual upright view.  The data and world coordinates are unaffected.

TIFF
----
Pixel sizes and axes come from OME-XML or ImageJ metadata and are converted
to micrometres.  Plain TIFF resolution tags (DPI) are ignored: they are
usually set by screen software, not by the microscope.  TIFFs are written in
ImageJ format (Fiji reads the calibration natively) when the dtype allows
(uint8, uint16, float32), otherwise, or for ``*.ome.tif``, as OME-TIFF.

All writes are atomic: the file is written next to the target under a hidden
temporary name, flushed to disk and moved over it with :func:`os.replace`
(:mod:`napari_vmunet._files`), so a crash never leaves a half-written file
and never destroys an older result.
"""

from __future__ import annotations

from ._formats import READ_EXTENSIONS, WRITE_IMAGE_EXTENSIONS, WRITE_LABELS_EXTENSIONS
from ._image import ImageData, ImageIOError
from ._readwrite import label_dtype, read_image, write_image, write_labels
from .samples import SAMPLES, load_sample

__all__ = [
    'READ_EXTENSIONS',
    'SAMPLES',
    'WRITE_IMAGE_EXTENSIONS',
    'WRITE_LABELS_EXTENSIONS',
    'ImageData',
    'ImageIOError',
    'label_dtype',
    'load_sample',
    'read_image',
    'write_image',
    'write_labels',
]
