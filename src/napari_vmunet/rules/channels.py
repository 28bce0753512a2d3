"""Which axis of an image holds its channels, when nobody said.

napari shows a 2-channel image that was opened without a channel axis as a
stack of two planes, and predicting it so gives a "2-slice volume": two
grey predictions instead of one from both channels.  A short first or last
axis next to two image-sized ones is almost always channels; the model's
channel count settles it when it matches.  The guess is only ever a default
that the caller states (the dock says so in its status line).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

#: Up to this many planes, a short end axis is taken as channels rather
#: than as slices (a volume of 2-4 slices is rarely what anyone predicts).
MAX_GUESSED_CHANNELS = 4
#: ... and only when both other axes are this many times longer.
MIN_ASPECT = 8


@dataclass(frozen=True)
class ChannelGuess:
    axis: int
    size: int
    reason: str


def guess_channel_axis(
    shape: Sequence[int], model_channels: int | None = None, *, rgb: bool = False
) -> ChannelGuess | None:
    """The channel axis of a 3-D array that is more likely a multichannel
    image than a volume, or None.

    Candidates are the first and the last axis when they hold at most
    ``max(4, model_channels)`` planes and both other axes are at least 8
    times (and 16 pixels) longer.  One whose size equals the model's
    channel count wins; otherwise the first axis (napari's and ImageJ's
    channel-first order) before the last.  RGB images and arrays of other
    dimensions get no guess.
    """
    shape = tuple(int(s) for s in shape)
    if rgb or len(shape) != 3:
        return None
    limit = max(MAX_GUESSED_CHANNELS, model_channels or 0)
    candidates = []
    for axis in (0, 2):
        size = shape[axis]
        others = [s for i, s in enumerate(shape) if i != axis]
        if 2 <= size <= limit and all(s >= max(16, MIN_ASPECT * size) for s in others):
            candidates.append(axis)
    if not candidates:
        return None
    matching = [a for a in candidates if shape[a] == model_channels]
    axis = (matching or candidates)[0]
    size = shape[axis]
    why = (
        f'the model takes {size} channels'
        if size == model_channels
        else f'{size} planes are too few to be a volume'
    )
    return ChannelGuess(
        axis,
        size,
        f'Axis {axis} (size {size}) is taken as the channel axis: {why}. '
        f'Choose channel axis "none" to predict it as {size} slices instead.',
    )
