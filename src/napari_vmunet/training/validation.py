"""Validation on whole slices, predicted the way inference predicts them.

Each validation slice is mirror-padded to at least one tile, cut into
Gaussian-blended sliding windows of the training tile (MONAI
``sliding_window_inference`` with the predictor's overlap 0.25 and sigma
0.125), and its blended *probabilities* are compared with the labels: the
loss is the training loss of those probabilities and the Dice is MONAI's
``DiceMetric`` on the thresholded / argmax prediction, i.e. on the labels a
user would get from :class:`~napari_vmunet.inference.Predictor`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from monai.inferers import sliding_window_inference
from torch import nn

from ..rules.tiling import BLEND_SIGMA, DEFAULT_OVERLAP, pad_to
from .data import Sample
from .losses import DiceScore, loss_on_probabilities, mean_dice


@dataclass
class Validation:
    loss: float | None
    dice: dict[str, float]  # foreground class name -> Dice (nan: absent)
    mean_dice: float | None
    complete: bool  # False when a stop request cut it short


@torch.no_grad()
def evaluate(
    model: nn.Module,
    samples: Sequence[Sample],
    *,
    loss_fn: nn.Module,
    class_names: Sequence[str],
    num_classes: int,
    tile: int,
    device: torch.device,
    batch_size: int = 4,
    should_stop: Callable[[], bool] | None = None,
) -> Validation:
    """Loss and per-class Dice of ``model`` on whole validation slices."""
    score = DiceScore(class_names, num_classes)
    losses = []
    was_training = model.training
    model.eval()
    try:
        for sample in samples:
            if should_stop is not None and should_stop():
                break
            probs = predict_probabilities(
                model, sample, tile, device, batch_size, num_classes
            )
            target = torch.from_numpy(sample.mask).long()[None].to(device)
            losses.append(float(loss_on_probabilities(loss_fn, probs, target)))
            score.update(probs, target)
    finally:
        model.train(was_training)
    dice = score.result()
    return Validation(
        loss=sum(losses) / len(losses) if losses else None,
        dice=dice,
        mean_dice=mean_dice(dice),
        complete=len(losses) == len(samples),
    )


def predict_probabilities(
    model: nn.Module,
    sample: Sample,
    tile: int,
    device: torch.device,
    batch_size: int,
    num_classes: int,
) -> torch.Tensor:
    """``(1, K, H, W)`` blended probabilities of one slice (``K`` = 1 for a
    one-class model)."""
    h, w = sample.shape
    ph, pw = max(h, tile), max(w, tile)  # as the predictor pads
    x = torch.from_numpy(pad_to(sample.image, ph, pw)).float()[None].to(device)

    def forward(batch: torch.Tensor) -> torch.Tensor:
        out = model(batch).float()
        return out if num_classes == 1 else torch.softmax(out, dim=1)

    probs = sliding_window_inference(
        x,
        roi_size=(tile, tile),
        sw_batch_size=batch_size,
        predictor=forward,
        overlap=DEFAULT_OVERLAP,
        mode='gaussian',
        sigma_scale=BLEND_SIGMA,
    )
    return probs[..., :h, :w]
