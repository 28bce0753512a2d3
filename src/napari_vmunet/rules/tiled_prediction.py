"""One tiled prediction of a slice, shared by inference and validation.

The :class:`~napari_vmunet.inference.Predictor` and the training's
validation must turn a model into the same probabilities, or the validation
Dice drifts away from what users get.  Both therefore use these pieces:
the window for the image and device (:func:`~.tiling.auto_tile`), the
mirror padding, MONAI's windows and Gaussian weights (:mod:`.tiling`), and
the accumulation in :class:`BlendedSlice`.  The Predictor batches windows
across slices and reports progress between batches; validation predicts
one slice at a time through :func:`predict_slice`.  Both go through a
:class:`ConstantWindows` cache, so blank windows cost one forward per run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .tiling import (
    DEFAULT_OVERLAP,
    Tile,
    auto_tile,
    blend_weights,
    pad_to,
    padded_shape,
    tile_shape,
    tile_slices,
)


@dataclass
class SliceWindows:
    """The windows of one ``height x width`` slice."""

    height: int
    width: int
    tile: Tile
    padded: tuple[int, int]
    windows: list[tuple[slice, slice]]

    @classmethod
    def of(
        cls,
        height: int,
        width: int,
        edge: int | None,
        device_type: str = 'cpu',
        overlap: float = DEFAULT_OVERLAP,
    ) -> SliceWindows:
        """Windows of edge ``edge`` (0: the whole slice; ``None``: chosen for
        the slice and the device by :func:`~.tiling.auto_tile`)."""
        if edge is None:
            edge = auto_tile(height, width, device_type)
        tile = tile_shape(height, width, edge)
        ph, pw = padded_shape(height, width, tile)
        return cls(height, width, tile, (ph, pw), tile_slices(ph, pw, tile, overlap))

    def weights(self, device: torch.device | str = 'cpu') -> torch.Tensor:
        """The blend weights of a window: Gaussian, or ones when one window
        covers the slice (nothing to blend, so the output passes through
        unchanged and MONAI's window helpers are not imported)."""
        if len(self.windows) == 1:
            return torch.ones(self.tile, dtype=torch.float32, device=device)
        return blend_weights(self.tile, device)


@dataclass
class BlendedSlice:
    """The Gaussian-weighted sum of a padded slice's window outputs."""

    input: torch.Tensor  # (C, Hp, Wp) normalised, padded, on the CPU
    acc: torch.Tensor  # (K, Hp, Wp) weighted sum of window outputs
    weight: torch.Tensor  # (Hp, Wp) sum of window weights
    remaining: int  # windows not yet added

    @classmethod
    def start(
        cls,
        image: np.ndarray,
        geometry: SliceWindows,
        channels_out: int,
        device: torch.device,
    ) -> BlendedSlice:
        """An empty sum for the normalised ``(C, H, W)`` ``image``."""
        x = pad_to(image, *geometry.padded)
        ph, pw = geometry.padded
        return cls(
            input=torch.from_numpy(np.ascontiguousarray(x)),
            acc=torch.zeros((channels_out, ph, pw), dtype=torch.float32, device=device),
            weight=torch.zeros((ph, pw), dtype=torch.float32, device=device),
            remaining=len(geometry.windows),
        )

    def window_input(self, window: tuple[slice, slice]) -> torch.Tensor:
        return self.input[(slice(None), *window)]

    def add(
        self, window: tuple[slice, slice], output: torch.Tensor, weights: torch.Tensor
    ) -> None:
        self.acc[(slice(None), *window)] += output * weights
        self.weight[window] += weights
        self.remaining -= 1

    def to(self, device: torch.device) -> None:
        self.acc = self.acc.to(device)
        self.weight = self.weight.to(device)

    def probabilities(self, height: int, width: int) -> torch.Tensor:
        """``(K, height, width)``: the blend, cropped to the slice."""
        return (self.acc / self.weight)[:, :height, :width]


class ConstantWindows:
    """Runs a model on batches of windows, once per distinct constant window.

    A window whose every channel holds a single value (the air around a
    skull-stripped brain, the padding of a CT scan, an empty slice of a
    stack: 34 of the brain sample's 189 slices) always gives the same
    output, so it is computed the first time and reused after: exact, and
    it skips the model for most of the background of such volumes.  The
    key is the window's shape and its values, so two blanks of different
    intensity are two entries.  Non-finite windows never count as constant
    (NaN differs from itself).
    """

    def __init__(
        self,
        forward: Callable[[torch.Tensor], torch.Tensor],
        device: torch.device,
        max_entries: int = 8,
    ) -> None:
        self.forward = forward
        self.device = device
        self.max_entries = max_entries
        self._outputs: dict[tuple, torch.Tensor] = {}
        self.reused = 0  # windows answered from the cache

    @staticmethod
    def key(window: torch.Tensor) -> tuple | None:
        """``(shape, values)`` of a constant ``(C, h, w)`` window, else None."""
        flat = window.reshape(window.shape[0], -1)
        low, high = flat.aminmax(dim=1)
        if not bool((low == high).all()):
            return None
        return (tuple(window.shape), tuple(low.tolist()))

    def clear(self) -> None:
        """Forget the outputs (after a change of device or model)."""
        self._outputs.clear()

    def __call__(self, windows: list[torch.Tensor]) -> list[torch.Tensor]:
        """The model's output for each ``(C, h, w)`` window, in order."""
        keys = [self.key(w) for w in windows]
        known = dict(self._outputs)  # this batch's answers join the cache's
        todo = []
        for i, k in enumerate(keys):
            if k is None or k not in known:
                todo.append(i)
                if k is not None:
                    known[k] = None  # one forward per new constant window
        outputs: list[torch.Tensor | None] = [None] * len(windows)
        if todo:
            x = torch.stack([windows[i] for i in todo]).to(self.device)
            for i, out in zip(todo, self.forward(x), strict=True):
                outputs[i] = out
                if keys[i] is not None:
                    known[keys[i]] = out
                    if len(self._outputs) < self.max_entries:
                        self._outputs[keys[i]] = out.clone()
        for i, k in enumerate(keys):
            if outputs[i] is None:
                outputs[i] = known[k]
                self.reused += 1
        return outputs


@torch.no_grad()
def predict_slice(
    forward: Callable[[torch.Tensor], torch.Tensor],
    image: np.ndarray,
    *,
    channels_out: int,
    device: torch.device,
    edge: int | None = None,
    overlap: float = DEFAULT_OVERLAP,
    batch_size: int = 4,
) -> torch.Tensor:
    """``(K, H, W)`` blended probabilities of one normalised ``(C, H, W)``
    slice; ``forward`` maps a ``(B, C, h, w)`` batch on ``device`` to
    probabilities ``(B, K, h, w)``."""
    geometry = SliceWindows.of(*image.shape[-2:], edge, device.type, overlap)
    state = BlendedSlice.start(image, geometry, channels_out, device)
    weights = geometry.weights(device)
    windows = geometry.windows
    model = ConstantWindows(forward, device)
    for i in range(0, len(windows), batch_size):
        batch = windows[i : i + batch_size]
        outputs = model([state.window_input(w) for w in batch])
        for window, out in zip(batch, outputs, strict=True):
            state.add(window, out.float(), weights)
    return state.probabilities(geometry.height, geometry.width)
