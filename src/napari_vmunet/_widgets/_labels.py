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

    mapping: dict = {None: label_colormap().map(np.array([7]))[0], 0: np.zeros(4)}
    for i in range(1, len(names)):
        mapping[i] = class_color(i, colors)
    return DirectLabelColormap(color_dict=mapping)


def class_color(index: int, colors: Sequence[str | None] | None = None) -> str:
    """The colour of foreground class ``index`` (>= 1): the model's, else
    the palette's."""
    colors = list(colors or [])
    if index < len(colors) and colors[index]:
        return colors[index]
    return PALETTE[(index - 1) % len(PALETTE)]


#: the colour of background strokes in a scribble layer (value 1)
BACKGROUND_STROKE = '#ffffff'


def scribble_colors(
    values: Sequence[tuple[int, str]], colors: Sequence[str | None] | None = None
) -> dict[int, str]:
    """Paint value -> colour for a sparse scribble layer: background strokes
    white, class k in its class colour (as the prediction shows it)."""
    return {
        v: BACKGROUND_STROKE if v == 1 else class_color(v - 1, colors)
        for v, _ in values
    }


def scribble_colormap(
    values: Sequence[tuple[int, str]], colors: Sequence[str | None] | None = None
):
    """A ``DirectLabelColormap`` for a scribble layer: 0 (not annotated)
    transparent, then :func:`scribble_colors`."""
    from napari.utils.colormaps import DirectLabelColormap, label_colormap

    mapping: dict = {None: label_colormap().map(np.array([7]))[0], 0: np.zeros(4)}
    mapping.update(scribble_colors(values, colors))
    return DirectLabelColormap(color_dict=mapping)


def class_features(names: Sequence[str]) -> dict:
    """A features table so hovering a label shows its class name."""
    return {'index': np.arange(len(names)), 'class': list(names)}
