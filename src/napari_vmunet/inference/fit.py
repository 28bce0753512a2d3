"""Does a model suit an image?  Used to preselect a model and to warn.

A preselection must never be a wrong guess (issue #16: the dock chose the
brain model for the nuclei sample, and returned grey/white-matter labels
without a word).  A model suits an image when

* its input channels can take the image's (grey goes into an RGB model, as
  in training; 2 channels do not go into 3),
* it was trained on the same kind of data: 2-D images or slices of volumes,
* and the image's intensities, normalised as the model normalises them, lie
  near those it was trained on (``rules.input_stats``).

Checkpoints written before the training inputs were recorded (and the
original's) have no summary: they are never preselected and never warned
about, since nothing is known.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..rules.input_stats import InputStats, histogram, histogram_distance
from ..rules.layout import image_layout
from ..rules.normalization import ChannelMismatchError, map_channels, normalize

#: earth mover's distance (share of the input range) beyond which an image
#: counts as far from the training data (the bundled samples against their
#: own models: 0.007 and 0.058; against each other's: 0.15 and 0.19; one
#: pixel at 10x the maximum: 0.10; docs/inference.md)
FAR_FROM_TRAINING = 0.1
#: planes of a volume whose intensities are compared
_PLANES = 8


@dataclass(frozen=True)
class Fit:
    """How well one checkpoint suits one image."""

    #: False: the model cannot take the image at all (channels)
    usable: bool
    #: intensity distance to the training inputs; None: not recorded
    distance: float | None
    #: why the model may not suit the image (empty when it does)
    reasons: tuple[str, ...] = ()

    @property
    def known(self) -> bool:
        """Whether the checkpoint records what it was trained on."""
        return self.distance is not None

    @property
    def suits(self) -> bool:
        """Known to suit: usable, recorded, and nothing against it."""
        return self.usable and self.known and not self.reasons

    def warning(self, model_name: str) -> str | None:
        """One sentence for the user, or None when there is nothing to say."""
        if not self.reasons:
            return None
        return (
            f'{model_name} may not suit this image: {"; ".join(self.reasons)}. '
            'Check the result, choose another model, or fine-tune one on a few '
            'annotated slices of this kind of image.'
        )


def assess_fit(
    checkpoint: Any,
    image: Any,
    *,
    channel_axis: int | None = None,
    slice_axis: int | None = None,
    rgb: bool | None = None,
    channel_map: Sequence[int] | None = None,
    normalization: dict | None = None,
    channels: int | None = None,
) -> Fit:
    """How well ``checkpoint`` (a :class:`~napari_vmunet.checkpoint.Checkpoint`)
    suits ``image`` (any array the Predictor takes, with the same axis
    arguments).  ``normalization`` and ``channels``: those the prediction
    will use (default: the checkpoint's).  Reads at most a few planes of the
    image."""
    layout = image_layout(np.shape(image), channel_axis, slice_axis, rgb)
    if channels is None:
        channels = checkpoint.config['input_channels']
    if normalization is None:
        normalization = checkpoint.meta.input.normalization.to_dict()
    planes = sample_planes(layout.n_slices)
    try:
        inputs = [
            map_channels(
                normalize(layout.plane(image, z), normalization),
                channels,
                channel_map,
                rgb=layout.rgb,
            )
            for z in planes
        ]
    except ChannelMismatchError as err:
        return Fit(False, None, (str(err),))
    kind = 'volume' if layout.n_slices > 1 else '2d'
    return judge_fit(getattr(checkpoint, 'training_stats', None), inputs, kind)


def judge_fit(
    stats: InputStats | Mapping | None, inputs: Sequence[np.ndarray], kind: str
) -> Fit:
    """The fit of normalised network inputs (``(C, H, W)`` planes of an
    image of ``kind`` ``'2d'`` or ``'volume'``) to a model's training
    summary ``stats`` (None: not recorded; a dict: the stored form)."""
    if stats is not None and not isinstance(stats, InputStats):
        stats = InputStats.from_dict(stats)
    if stats is None:
        return Fit(True, None)
    reasons = []
    if stats.kind != 'mixed' and stats.kind != kind:
        trained = 'slices of volumes' if stats.kind == 'volume' else '2-D images'
        given = 'a volume' if kind == 'volume' else 'a 2-D image'
        reasons.append(f'it was trained on {trained}, this is {given}')
    distance = histogram_distance(histogram(inputs, stats.range), stats.histogram)
    if distance > FAR_FROM_TRAINING:
        reasons.append(
            f"the intensities are far from its training data's (distance "
            f'{distance:.2f}, over {FAR_FROM_TRAINING:g} counts as far)'
        )
    return Fit(True, distance, tuple(reasons))


def best_fit(fits: Sequence[Fit]) -> int | None:
    """The index of the suiting model nearest to the image, or None when no
    model is known to suit it (then the user must choose)."""
    suiting = [(f.distance, i) for i, f in enumerate(fits) if f.suits]
    return min(suiting)[1] if suiting else None


def sample_planes(n: int) -> list[int]:
    """The planes of an ``n``-slice image whose intensities are compared."""
    if n <= _PLANES:
        return list(range(n))
    return sorted({int(round(v)) for v in np.linspace(0, n - 1, _PLANES)})
