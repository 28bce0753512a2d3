"""Validation on whole slices, predicted the way inference predicts them.

Each validation slice goes through the Predictor's own tiled prediction
(:mod:`napari_vmunet.rules.tiled_prediction`: the window chosen for the
slice and the device, never the training tile; mirror padding; Gaussian
blending), and its blended *probabilities* are compared with the labels:
the loss is the training loss of those probabilities and the Dice is
MONAI's ``DiceMetric`` on the thresholded / argmax prediction, i.e. on the
labels a user gets from :class:`~napari_vmunet.inference.Predictor`.  With
sparse scribbles both count the painted pixels only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..rules.tiled_prediction import predict_slice
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
                model, sample, device, batch_size, num_classes
            )
            # sparse: IGNORE where unannotated (the loss and Dice skip them)
            target = torch.from_numpy(sample.target()).long()[None].to(device)
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
    device: torch.device,
    batch_size: int,
    num_classes: int,
) -> torch.Tensor:
    """``(1, K, H, W)`` blended probabilities of one slice (``K`` = 1 for a
    one-class model), through the Predictor's tiled prediction."""

    def forward(batch: torch.Tensor) -> torch.Tensor:
        out = model(batch).float()
        return out if num_classes == 1 else torch.softmax(out, dim=1)

    image = sample.image.astype(np.float32, copy=False)
    return predict_slice(
        forward, image, channels_out=num_classes, device=device, batch_size=batch_size
    )[None]
