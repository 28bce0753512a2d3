"""The sample data shipped inside the package (no download)."""

from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path

import numpy as np

from ._image import ImageData
from ._readwrite import read_image

#: sample name -> one-line description (files live in ``napari_vmunet/data``)
SAMPLES: dict[str, str] = {
    'nuclei': 'DSB2018 fluorescence nuclei, 512x512 uint16, with 125 '
    'human-drawn instance labels (BBBC038, CC0; via stardist)',
    'brain': 'MNI ICBM152 2009a T1 template, 1 mm, 189x233x197 (ZYX), with '
    'tissue labels 0 background, 1 grey matter, 2 white matter',
}

_SAMPLE_FILES: dict[str, tuple[str, str]] = {
    'nuclei': ('nuclei_image.tif', 'nuclei_labels.tif'),
    'brain': ('brain_t1.nii.gz', 'brain_tissue_labels.nii.gz'),
}


def load_sample(name: str) -> tuple[ImageData, np.ndarray]:
    """A real image and its reference labels, shipped with the package.

    ``'nuclei'``: 2D uint16 fluorescence image + uint16 instance labels drawn
    by people (125 nuclei, ids not contiguous).  ``'brain'``: the MNI152
    2009a T1 as ``'ZYX'`` at 1 mm + uint8 tissue labels (0 background,
    1 grey matter, 2 white matter).  A population-average template, not a
    patient: never quote accuracy on it as a clinical result.
    """
    if name not in _SAMPLE_FILES:
        raise ValueError(
            f'unknown sample {name!r}; choose one of: {", ".join(SAMPLES)}'
        )
    image_file, labels_file = _SAMPLE_FILES[name]
    folder = resources.files('napari_vmunet') / 'data'
    with (
        resources.as_file(folder / image_file) as image_path,
        resources.as_file(folder / labels_file) as labels_path,
    ):
        if not Path(image_path).exists() or not Path(labels_path).exists():
            raise FileNotFoundError(
                f'sample data for {name!r} is missing from {folder}; in a source '
                'checkout run `python scripts/make_sample_data.py`'
            )
        image = read_image(image_path)
        labels = read_image(labels_path).data
    image.meta = copy.copy(image.meta)
    image.meta['sample'] = name
    return image, labels
