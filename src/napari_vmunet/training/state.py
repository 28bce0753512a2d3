"""A run's resume state: what ``last`` keeps so a run continues where it stopped.

The state travels in the checkpoint's ``.train_state.pt`` sidecar as a plain
dict (``checkpoint`` stores it without knowing its keys).  This module is
the one place that knows those keys: :class:`TrainingState` reads a dict
written by any version so far (keys added later are optional and default
as they always did) and writes exactly the keys it always wrote, so files
are unchanged in both directions.

:class:`BestModel` is the running record of the best epoch (score, epoch,
Dice); :meth:`BestModel.consider` is the one rule for "is this epoch the
best so far".
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from .validation import Validation

#: keys without which a state cannot resume a run
REQUIRED = ('optimizer', 'epoch')


@dataclass
class BestModel:
    """The best epoch so far, and its validation scores."""

    score: float | None = None
    epoch: int | None = None
    mean_dice: float | None = None
    val_dice: dict[str, float] = field(default_factory=dict)

    def consider(
        self, epoch: int, train_loss: float, val: Validation | None, may_improve: bool
    ) -> bool:
        """Take ``epoch`` as the best if it scores higher; returns whether it did.

        Score = mean validation Dice; without a Dice (no validation slice
        contains an object) minus the validation loss; without validation,
        minus the training loss.
        """
        if val is not None and val.mean_dice is not None:
            score = val.mean_dice
        elif val is not None and val.loss is not None:
            score = -val.loss
        else:
            score = -train_loss
        improved = may_improve and (self.score is None or score > self.score)
        if improved:
            self.score, self.epoch = score, epoch
            self.val_dice = dict(val.dice) if val else {}
            self.mean_dice = val.mean_dice if val else None
        return improved

    def to_dict(self) -> dict[str, Any]:
        return {
            'score': self.score,
            'epoch': self.epoch,
            'mean_dice': self.mean_dice,
            'val_dice': dict(self.val_dice),
        }

    @classmethod
    def from_dict(cls, raw: dict | None) -> BestModel:
        raw = raw or {}
        return cls(
            score=raw.get('score'),
            epoch=raw.get('epoch'),
            mean_dice=raw.get('mean_dice'),
            val_dice=dict(raw.get('val_dice') or {}),
        )


def history_entry(
    epoch: int, train_loss: float, val: Validation | None, lr: float
) -> dict[str, Any]:
    """One epoch of :attr:`TrainingState.history` (``seconds`` is set once
    the epoch's time is known)."""
    return {
        'epoch': epoch,
        'train_loss': train_loss,
        'val_loss': val.loss if val else None,
        'val_dice': dict(val.dice) if val else {},
        'mean_dice': val.mean_dice if val else None,
        'lr': lr,
        'seconds': 0.0,
    }


@dataclass
class TrainingState:
    """Everything a resume needs besides the weights.

    ``epoch``: epochs fully done; ``step``: steps done in the next one, with
    the running ``loss_sum`` / ``loss_n`` of that partial epoch.
    ``total_epochs`` and ``seed`` are None only in states of versions that
    did not record them (a resume then uses the config's).
    """

    epoch: int
    optimizer: dict
    scheduler: dict
    step: int = 0
    loss_sum: float = 0.0
    loss_n: int = 0
    total_epochs: int | None = None
    seed: int | None = None
    torch_rng: torch.Tensor | None = None
    history: list[dict] = field(default_factory=list)
    best: BestModel = field(default_factory=BestModel)
    val_samples: list[str] = field(default_factory=list)
    steps_per_epoch: int | None = None
    batch_size: int | None = None
    tile_size: int | None = None
    freeze_encoder: bool = False
    recipe: dict | None = None

    def to_dict(self) -> dict[str, Any]:
        """The sidecar's dict (the keys and order every version wrote)."""
        return {
            'epoch': self.epoch,
            'step': self.step,
            'loss_sum': self.loss_sum,
            'loss_n': self.loss_n,
            'total_epochs': self.total_epochs,
            'seed': self.seed,
            'optimizer': self.optimizer,
            'scheduler': self.scheduler,
            'torch_rng': self.torch_rng,
            'history': copy.deepcopy(self.history),
            'best': self.best.to_dict(),
            'val_samples': list(self.val_samples),
            'steps_per_epoch': self.steps_per_epoch,
            'batch_size': self.batch_size,
            'tile_size': self.tile_size,
            'freeze_encoder': self.freeze_encoder,
            'recipe': self.recipe,
        }

    @classmethod
    def from_dict(cls, raw: dict) -> TrainingState:
        """Read a saved state; the caller checked :data:`REQUIRED`."""
        total = raw.get('total_epochs')
        seed = raw.get('seed')
        return cls(
            epoch=int(raw['epoch']),
            optimizer=raw['optimizer'],
            scheduler=raw['scheduler'],
            step=int(raw.get('step', 0)),
            loss_sum=float(raw.get('loss_sum', 0.0)),
            loss_n=int(raw.get('loss_n', 0)),
            total_epochs=None if total is None else int(total),
            seed=None if seed is None else int(seed),
            torch_rng=raw.get('torch_rng'),
            history=list(raw.get('history', [])),
            best=BestModel.from_dict(raw.get('best')),
            val_samples=list(raw.get('val_samples', [])),
            steps_per_epoch=raw.get('steps_per_epoch'),
            batch_size=raw.get('batch_size'),
            tile_size=raw.get('tile_size'),
            freeze_encoder=bool(raw.get('freeze_encoder', False)),
            recipe=raw.get('recipe'),
        )
