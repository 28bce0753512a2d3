"""npe2 sample data: real images with reference labels, shipped in the package.

*File > Open Sample > VM-UNet* adds the image and its labels, so a new user
can try segmentation, corrections and fine-tuning offline within seconds.
Both layers carry the image geometry in ``metadata['napari_vmunet']``, so
saving the labels as NIfTI reuses the template's header.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from ._reader import image_layer_data
from .io import load_sample

LayerData = tuple[Any, dict, str]

#: tissue classes of the brain sample, Okabe-Ito colours (colour-blind safe)
TISSUES: dict[int, tuple[str, str]] = {
    1: ('grey matter', '#E69F00'),
    2: ('white matter', '#56B4E9'),
}


def make_nuclei() -> list[LayerData]:
    """DSB2018 nuclei image + the 125 human-drawn nuclei as a Labels layer."""
    image, labels = load_sample('nuclei')
    layers = image_layer_data(image, name='nuclei (DSB2018)')
    kwargs = _labels_kwargs(layers[0][1])
    kwargs['name'] = 'nuclei ground truth (human annotation)'
    return [*layers, (labels, kwargs, 'labels')]


def make_brain() -> list[LayerData]:
    """MNI152 T1 at 1 mm + grey/white matter labels named via ``features``
    (napari shows ``tissue: grey matter`` in the status bar on hover)."""
    image, labels = load_sample('brain')
    layers = image_layer_data(image, name='MNI152 T1 (2009a template)')
    kwargs = _labels_kwargs(layers[0][1])
    kwargs['name'] = 'MNI152 tissue (GM/WM p>0.5, reference)'
    kwargs['features'] = {
        'index': np.array([0, *TISSUES]),
        'tissue': np.array(['background', *(name for name, _ in TISSUES.values())]),
    }
    kwargs['colormap'] = {None: 'transparent', 0: 'transparent'} | {
        value: colour for value, (_, colour) in TISSUES.items()
    }
    kwargs['opacity'] = 0.5
    return [*layers, (labels, kwargs, 'labels')]


def _labels_kwargs(image_kwargs: dict) -> dict:
    """Labels on the image's grid: same geometry and metadata, no rgb."""
    keep = ('scale', 'translate', 'affine', 'units', 'metadata')
    return {k: copy.deepcopy(v) for k, v in image_kwargs.items() if k in keep}
