"""The optimisation recipe: AdamW with a scaled stem group, cosine annealing.

Both follow the original VM-UNet training (AdamW on all parameters with
weight decay; ``CosineAnnealingLR`` stepped once per epoch).  The schedule
is the cosine's closed form as a ``LambdaLR`` factor (:class:`CosineFactor`),
so that a resumed run with another length can go on from where it is
(:func:`replan_schedule`) instead of climbing back up.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import TrainConfig


def stem_weight(model: nn.Module) -> nn.Parameter | None:
    """The patch embedding's weight of a VM-UNet (None for other nets)."""
    try:
        return model.vmunet.patch_embed.proj.weight
    except AttributeError:
        return None


def make_optimizer(
    config: TrainConfig, model: nn.Module, net: nn.Module
) -> torch.optim.Optimizer:
    """AdamW on all of ``net``'s trainable parameters, weight decay included
    (the original).

    The patch embedding's weight (of the bare ``model``) forms a second
    group whose learning rate is scaled by ``input_scale`` and weight decay
    by its inverse (see :class:`TrainConfig`); with ``input_scale=1`` both
    groups are the same and this is the original optimiser.
    """
    c = config
    stem = stem_weight(model)
    rest = [p for p in net.parameters() if p is not stem and p.requires_grad]
    groups = [{'params': rest}]
    if stem is not None and stem.requires_grad:
        groups.append(
            {
                'params': [stem],
                'lr': c.lr * c.input_scale,
                'weight_decay': c.weight_decay / c.input_scale,
            }
        )
    return torch.optim.AdamW(
        groups, lr=c.lr, betas=c.betas, eps=c.eps, weight_decay=c.weight_decay
    )


def make_scheduler(
    config: TrainConfig, optimizer: torch.optim.Optimizer
) -> torch.optim.lr_scheduler.LambdaLR:
    """Cosine annealing stepped once per epoch (the original):
    ``lr(e) = eta_min + (lr - eta_min) (1 + cos(pi e / T_max)) / 2``.

    Written as a factor on each group's initial rate (``LambdaLR``), so
    the patch-embedding group follows the same curve scaled; the main
    group gets exactly ``CosineAnnealingLR``'s values (its closed form).
    """
    c = config
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, CosineFactor(c.lr, c.eta_min, c.t_max)
    )


class CosineFactor:
    """``CosineAnnealingLR``'s closed form as a ``LambdaLR`` factor (a
    class, not a lambda, so the scheduler's state can be saved).

    After :meth:`replan` (a resumed run with another length) the factor
    decays from its value at ``start`` to ``eta_min`` at the new ``t_max``.
    """

    def __init__(self, lr: float, eta_min: float, t_max: int):
        self.lr, self.eta_min, self.t_max = lr, eta_min, t_max
        self.start, self.start_factor = 0, 1.0

    def __call__(self, epoch: int) -> float:
        floor = self.eta_min / self.lr
        if epoch >= self.t_max and self.start:
            return floor
        span = max(self.t_max - self.start, 1)
        cos = (1 + math.cos(math.pi * (epoch - self.start) / span)) / 2
        return floor + (self.start_factor - floor) * cos

    def replan(self, start: int, t_max: int) -> None:
        """Go on from ``start`` (its current value) to ``eta_min`` at ``t_max``."""
        self.start_factor = self(start)
        self.start, self.t_max = int(start), int(t_max)


def replan_schedule(
    scheduler: torch.optim.lr_scheduler.LambdaLR,
    optimizer: torch.optim.Optimizer,
    *,
    epoch: int,
    planned: int,
    config: TrainConfig,
) -> str | None:
    """A resume with another number of epochs than the ``planned`` ones: the
    learning rate goes on from its current value down to ``eta_min`` at the
    new end.  Returns the note saying so (None when the run is over)."""
    total = config.epochs
    for factor in scheduler.lr_lambdas:
        factor.replan(epoch, total)
    if epoch >= total:
        return None
    lr = optimizer.param_groups[0]['lr']
    return (
        f'epochs changed from {planned} to {total} on resume: the '
        f'learning rate goes on from {lr:.3g} down to '
        f'{config.eta_min:g} over epochs {epoch + 1}-{total}'
    )
