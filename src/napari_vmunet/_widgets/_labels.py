"""Class names and colours for Labels layers (shared by the docks)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# distinct, colour-blind friendly (Okabe-Ito), background transparent
PALETTE = [
    '#e69f00',
    '#56b4e9',
    '#009e73',
    '#f0e442',
    '#0072b2',
    '#d55e00',
    '#cc79a7',
    '#999999',
]


def class_colormap(names: Sequence[str], colors: Sequence[str | None] | None = None):
    """A napari ``DirectLabelColormap``: class ``i`` gets ``colors[i]`` (or
    the palette), background is transparent, other values use napari's
    default so hand-painted extra labels stay visible."""
    from napari.utils.colormaps import DirectLabelColormap, label_colormap

    colors = list(colors or [])
    mapping: dict = {None: label_colormap().map(np.array([7]))[0], 0: np.zeros(4)}
    for i in range(1, len(names)):
        color = (
            colors[i]
            if i < len(colors) and colors[i]
            else PALETTE[(i - 1) % len(PALETTE)]
        )
        mapping[i] = color
    return DirectLabelColormap(color_dict=mapping)


def class_features(names: Sequence[str]) -> dict:
    """A features table so hovering a label shows its class name."""
    return {'index': np.arange(len(names)), 'class': list(names)}
