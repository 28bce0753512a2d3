"""The original VM-UNet losses, built from MONAI, and the validation Dice.

* One class -- ``BceDiceLoss``: the model already applies a sigmoid, so the
  loss takes probabilities: ``BCE(p, t) + Dice(p, t)`` with
  ``nn.BCELoss`` (mean over all pixels) and MONAI's ``DiceLoss`` with
  smooth 1 and per-image sums (``batch=False``), which is exactly the
  original's ``1 - mean_b (2 sum(p t) + 1) / (sum p + sum t + 1)``.
* K classes -- ``CeDiceLoss``: MONAI ``DiceCELoss`` on logits with softmax
  and one-hot targets: cross-entropy + Dice over all K classes (background
  included) with squared denominators summed over the whole batch and
  smooth 1e-5, as the original's ``nDiceLoss``.

The validation Dice (:class:`DiceScore`) uses MONAI's ``DiceMetric`` on
binarised predictions (threshold 0.5, or argmax), per validation image,
for the **foreground classes only** (background is not counted).  A class
contributes only on images whose reference contains it (MONAI's
``ignore_empty``); a class present in no validation image has no value.

Sparse annotation (:mod:`napari_vmunet.rules.annotation`): targets carry
``IGNORE`` at unannotated pixels and only annotated pixels count.
``MaskedBceDiceLoss`` / ``MaskedCeDiceLoss`` are the same two losses
restricted to them: the Dice part is MONAI's ``MaskedDiceLoss`` (prediction
and one-hot target multiplied by the mask, so an unannotated pixel adds
nothing to any sum and gets no gradient); the CE/BCE part is a mean over
annotated pixels, written here because MONAI's ``DiceCELoss`` takes class
weights, not a pixel mask.  With every pixel annotated they equal the dense
losses.  :class:`DiceScore` counts annotated pixels only as well.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss, DiceLoss, MaskedDiceLoss
from monai.metrics import DiceMetric
from torch import nn

from ..rules.annotation import IGNORE


class BceDiceLoss(nn.Module):
    """BCE + Dice on sigmoid probabilities ``(B, 1, H, W)`` vs 0/1 targets."""

    def __init__(self, w_bce: float = 1.0, w_dice: float = 1.0):
        super().__init__()
        self.w_bce, self.w_dice = w_bce, w_dice
        self.bce = nn.BCELoss()
        self.dice = DiceLoss(sigmoid=False, smooth_nr=1.0, smooth_dr=1.0, batch=False)

    def forward(self, probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = target.to(probs.dtype)
        if target.ndim == probs.ndim - 1:
            target = target.unsqueeze(1)
        # BCELoss refuses autocast-lowered inputs; it is cheap in float32
        probs32, target32 = probs.float(), target.float()
        return self.w_bce * self.bce(probs32, target32) + self.w_dice * self.dice(
            probs32, target32
        )


class CeDiceLoss(nn.Module):
    """CE + Dice on logits ``(B, K, H, W)`` vs class indices ``(B, H, W)``."""

    def __init__(self, w_ce: float = 1.0, w_dice: float = 1.0):
        super().__init__()
        self.loss = DiceCELoss(
            include_background=True,
            to_onehot_y=True,
            softmax=True,
            squared_pred=True,
            batch=True,
            smooth_nr=1e-5,
            smooth_dr=1e-5,
            lambda_ce=w_ce,
            lambda_dice=w_dice,
        )

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.ndim == logits.ndim - 1:
            target = target.unsqueeze(1)
        return self.loss(logits.float(), target.long())


def split_ignore(target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A target that may hold ``IGNORE`` -> ``(classes, annotated)``, both
    ``(B, 1, H, W)``: class indices (0 where unannotated) and a 0/1 float
    mask."""
    if target.ndim == 3:
        target = target.unsqueeze(1)
    annotated = target != IGNORE
    return target.clamp_min(0).long(), annotated.float()


class MaskedBceDiceLoss(nn.Module):
    """:class:`BceDiceLoss` over annotated pixels only (targets with
    ``IGNORE``): BCE averaged over them, per-image Dice of them (an image
    without any annotated pixel adds 0)."""

    def __init__(self, w_bce: float = 1.0, w_dice: float = 1.0):
        super().__init__()
        self.w_bce, self.w_dice = w_bce, w_dice
        self.dice = MaskedDiceLoss(smooth_nr=1.0, smooth_dr=1.0, batch=False)

    def forward(self, probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target, mask = split_ignore(target)
        probs32, target32 = probs.float(), target.float()
        bce = F.binary_cross_entropy(probs32, target32, weight=mask, reduction='sum')
        bce = bce / mask.sum().clamp_min(1.0)
        return self.w_bce * bce + self.w_dice * self.dice(probs32, target32, mask)


class MaskedCeDiceLoss(nn.Module):
    """:class:`CeDiceLoss` over annotated pixels only (targets with
    ``IGNORE``): CE averaged over them, Dice (squared, batch-wide) of the
    softmax and the one-hot target where annotated."""

    def __init__(self, w_ce: float = 1.0, w_dice: float = 1.0):
        super().__init__()
        self.w_ce, self.w_dice = w_ce, w_dice
        self.dice = MaskedDiceLoss(
            include_background=True,
            softmax=True,
            squared_pred=True,
            batch=True,
            smooth_nr=1e-5,
            smooth_dr=1e-5,
        )

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target, mask = split_ignore(target)
        logits = logits.float()
        ce = F.cross_entropy(logits, target[:, 0], reduction='none')
        ce = (ce * mask[:, 0]).sum() / mask.sum().clamp_min(1.0)
        # one-hot first, then mask: MONAI's to_onehot_y would make every
        # unannotated pixel background in the target
        onehot = F.one_hot(target[:, 0], logits.shape[1]).permute(0, 3, 1, 2)
        dice = self.dice(logits, onehot.float() * mask, mask)
        return self.w_ce * ce + self.w_dice * dice


def make_loss(
    num_classes: int, annotation: str = 'dense', *, masked: bool = False
) -> nn.Module:
    """The original's loss for ``num_classes`` (1: BceDice, else CeDice);
    its masked form for sparse annotation, or when some targets hold
    ``IGNORE`` anyway (``masked``: pixels of missing data)."""
    if annotation == 'sparse' or masked:
        return MaskedBceDiceLoss() if num_classes == 1 else MaskedCeDiceLoss()
    return BceDiceLoss() if num_classes == 1 else CeDiceLoss()


def loss_on_probabilities(
    loss: nn.Module, probs: torch.Tensor, target: torch.Tensor
) -> torch.Tensor:
    """The training loss of *blended* probabilities (validation).

    Sliding-window inference blends probabilities (as the predictor does);
    for several classes ``log p`` stands in for logits, since
    ``softmax(log p) = p``: CE becomes ``-log p[target]`` and the Dice part
    sees ``p`` itself.
    """
    if isinstance(loss, (CeDiceLoss, MaskedCeDiceLoss)):
        return loss(probs.clamp_min(1e-8).log(), target)
    return loss(probs, target)


class DiceScore:
    """Per-class validation Dice over images, with MONAI's ``DiceMetric``.

    ``update(probs, target)`` takes one image's probabilities
    (``(1, 1, H, W)`` for one class, ``(1, K, H, W)`` otherwise) and its class
    indices ``(1, H, W)``, ``IGNORE`` where not annotated (such pixels
    count neither as predicted nor as true).  ``result()`` returns
    ``{class name: dice}`` for the foreground classes (``nan`` where no
    image contains the class).
    """

    def __init__(self, class_names: Sequence[str], num_classes: int, threshold=0.5):
        self.num_classes = num_classes
        self.threshold = threshold
        self.names = list(class_names)[1:]  # background is not counted
        self.metric = DiceMetric(
            include_background=False,
            reduction='mean_batch',
            get_not_nans=True,
            ignore_empty=True,
        )
        self.images = 0

    def update(self, probs: torch.Tensor, target: torch.Tensor) -> None:
        k = max(2, self.num_classes)
        if self.num_classes == 1:
            pred = (probs[:, 0] >= self.threshold).long()
        else:
            pred = probs.max(1).indices  # argmax, 10x faster on CPUs
        target, mask = split_ignore(target)
        onehot_pred = F.one_hot(pred, k).permute(0, 3, 1, 2) * mask.long()
        onehot_true = F.one_hot(target[:, 0], k).permute(0, 3, 1, 2) * mask.long()
        self.metric(y_pred=onehot_pred, y=onehot_true)
        self.images += 1

    def result(self) -> dict[str, float]:
        if not self.images:
            return {}
        values, counts = self.metric.aggregate()
        pairs = zip(values.tolist(), counts.tolist(), strict=True)
        return {
            name: float(v) if c > 0 else math.nan
            for name, (v, c) in zip(self.names, pairs, strict=True)
        }


def mean_dice(dice: dict[str, float]) -> float | None:
    """Mean over the classes that have a value; ``None`` if none has."""
    values = [v for v in dice.values() if not math.isnan(v)]
    return sum(values) / len(values) if values else None
