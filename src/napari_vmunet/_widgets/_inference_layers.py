"""The inference dock's result, written into napari layers.

A run's labels become an editable Labels layer ``<image> [<model>]`` in the
image's physical space (scale, translate, affine and units without the
channel axis), with class names and colours; a run of one plane merges into
the earlier labels.  Probabilities become one hidden image layer per class.
Each layer is one callable, so that the dock can add them one per
event-loop turn (adding a layer costs napari 0.1-0.4 s).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import napari


@dataclass
class DockRun:
    """One run of the dock: the core request, and the GUI context it needs."""

    layer: Any  # the napari Image layer read
    data: Any  # its array (the full resolution of a multiscale layer)
    request: Any  # inference.request.PredictionRequest
    objects: dict | None = None  # the object options (ObjectsPanel)
    measured: Any = None  # (objects, table), filled in the worker

    @property
    def model_name(self) -> str:
        return Path(self.request.checkpoint).name.split('.')[0]

    @property
    def labels_name(self) -> str:
        return f'{self.layer.name} [{self.model_name}]'


def geometry(run: DockRun) -> dict:
    """The image layer's placement (and units), without the channel axis."""
    layer = run.layer
    keep = run.request.output_axes(layer.ndim)
    affine = layer.affine.affine_matrix
    if len(keep) < layer.ndim:
        idx = [*keep, layer.ndim]
        affine = affine[np.ix_(idx, idx)]
    placed = dict(
        scale=[layer.scale[i] for i in keep],
        translate=[layer.translate[i] for i in keep],
        affine=affine,
    )
    units = getattr(layer, 'units', None)
    if units is not None:
        placed['units'] = [units[i] for i in keep]
    return placed


def write_labels(
    viewer: napari.Viewer, run: DockRun, answer, *, colors, objects
) -> Any:
    """Add (or update) the labels layer of ``answer`` and return it; with
    measured objects, ``objects`` (the ObjectsPanel) adds them instead."""
    import napari.layers

    from ._labels import class_colormap, class_features

    result = answer.prediction
    image = run.layer
    name = run.labels_name
    placed = geometry(run)
    full_shape = run.request.output_shape(image.data.shape)
    existing = next((ly for ly in viewer.layers if ly.name == name), None)
    if not (
        isinstance(existing, napari.layers.Labels) and existing.data.shape == full_shape
    ):
        existing = None
    full = None
    if answer.region:  # a part: into the earlier labels, or empty ones
        full = (
            np.array(existing.data)
            if existing is not None
            else np.zeros(full_shape, dtype=result.labels.dtype)
        )
    data = answer.merge_into(full)
    meta = {
        'napari_vmunet': {
            'source': image.name,
            'checkpoint': run.request.checkpoint,
            'class_names': result.class_names,
        }
    }
    if run.measured is not None:
        return objects.add_result(
            f'{name} objects', run.measured, placed, meta['napari_vmunet']
        )
    if existing is not None:
        existing.data = data
        existing.metadata.update(meta)
        return existing
    return viewer.add_labels(
        data,
        name=name,
        colormap=class_colormap(result.class_names, colors),
        features=class_features(result.class_names),
        metadata=meta,
        opacity=0.6,
        **placed,
    )


def probability_writers(
    viewer: napari.Viewer, run: DockRun, answer
) -> list[Callable[[], None]]:
    """One hidden image layer per class, ``<labels name> p(<class>)``:
    separate layers keep the viewer's dimensions those of the image.
    Returns one callable per layer (each adds or updates it)."""
    if answer.region:
        return []  # a single plane of probabilities would mislead
    result = answer.prediction
    probs = result.probabilities
    if probs.ndim == result.labels.ndim:  # one class: foreground only
        planes = {result.class_names[-1]: probs}
    else:
        planes = dict(zip(result.class_names, probs, strict=True))
    placed = geometry(run)

    def writer(cls: str, data: np.ndarray):
        def write() -> None:
            name = f'{run.labels_name} p({cls})'
            existing = next((ly for ly in viewer.layers if ly.name == name), None)
            if existing is not None and existing.data.shape == data.shape:
                existing.data = data
                return
            viewer.add_image(
                data,
                name=name,
                colormap='magma',
                contrast_limits=(0, 1),
                blending='additive',
                visible=False,
                **placed,
            )

        return write

    return [writer(cls, data) for cls, data in planes.items()]
