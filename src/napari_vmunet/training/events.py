"""What a training run reports, as small picklable dataclasses.

The trainer is a generator of these events, so the CLI (a tqdm bar), a
notebook (a callback) and the napari dock (events sent from a child process
over a pipe) all follow one run the same way.  Every event holds only
numbers, strings, tuples and dicts: it pickles across processes and prints
readably.  The last event of every run is a :class:`Finished`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .._text import format_duration

#: why a run ended
REASONS = ('completed', 'stopped', 'error')


@dataclass(frozen=True)
class Started:
    """The run is set up and the first step is about to start."""

    total_epochs: int
    start_epoch: int  # epochs already done (0, or where a resumed run was)
    n_train: int  # annotated 2-D slices/images used for training
    n_val: int  # ... held out for validation (0: none)
    steps_per_epoch: int
    batch_size: int
    tile_size: int
    device: str
    model: str  # one-line architecture description
    parameters: int
    class_names: tuple[str, ...]
    initialized_from: str
    train_samples: tuple[str, ...] = ()
    val_samples: tuple[str, ...] = ()
    resumed: bool = False
    output: str | None = None
    notes: tuple[str, ...] = ()  # things the user should know (e.g. re-init)

    def describe(self) -> str:
        """One line for a status bar or a log (the notes come separately)."""
        what = 'Resumed' if self.resumed else 'Training'
        return (
            f'{what} on {self.n_train} slice(s), validating on {self.n_val}; '
            f'{self.steps_per_epoch} steps of {self.batch_size} x '
            f'{self.tile_size}² tiles per epoch on {self.device} '
            f'({self.parameters / 1e6:.1f} M parameters, from '
            f'{self.initialized_from})'
        )


@dataclass(frozen=True)
class Step:
    """One optimisation step finished (epochs and steps count from 1)."""

    epoch: int
    step: int
    steps_per_epoch: int
    loss: float
    lr: float

    def describe(self) -> str:
        return (
            f'Epoch {self.epoch}: step {self.step}/{self.steps_per_epoch}, '
            f'loss {self.loss:.4f}'
        )


@dataclass(frozen=True)
class EpochEnd:
    """An epoch (training + validation) finished.

    ``val_dice`` maps each foreground class name to its Dice on the
    validation split (``nan`` when no validation slice contains that class;
    background is never counted).  ``mean_dice`` is the mean over the
    classes that have a value, or ``None``.
    """

    epoch: int
    total_epochs: int
    train_loss: float
    val_loss: float | None
    val_dice: dict[str, float]
    mean_dice: float | None
    lr: float  # the learning rate used during this epoch
    seconds: float
    eta_seconds: float
    improved: bool  # the best model so far (it was saved if there is an output)

    def describe(self) -> str:
        dice = ', '.join(
            f'{name} {value:.3f}'
            for name, value in self.val_dice.items()
            if isinstance(value, float) and math.isfinite(value)
        )
        return (
            f'Epoch {self.epoch}/{self.total_epochs}: loss {self.train_loss:.4f}'
            + (f', validation Dice {dice}' if dice else '')
            + (' (best so far)' if self.improved else '')
            + f'; about {format_duration(self.eta_seconds)} left'
        )


@dataclass(frozen=True)
class Saved:
    """A checkpoint was written: ``kind`` is ``'best'`` or ``'last'``."""

    path: str
    kind: str
    epoch: int


@dataclass(frozen=True)
class Finished:
    """The run ended; always the last event.

    ``reason`` is ``'completed'`` (all epochs, or the time limit), ``'stopped'``
    (a stop request; the ``last`` checkpoint resumes it) or ``'error'``
    (``message`` says what happened, ``traceback`` has the details).
    """

    reason: str
    best_path: str | None = None
    message: str = ''
    last_path: str | None = None
    epochs_done: int = 0
    best_epoch: int | None = None
    best_val_dice: dict[str, float] = field(default_factory=dict)
    best_mean_dice: float | None = None
    traceback: str = ''

    def describe(self) -> str:
        if self.reason == 'error':
            return f'Training failed: {self.message}'
        best = ''
        if self.best_mean_dice is not None:
            best = (
                f' Best validation Dice {self.best_mean_dice:.3f} '
                f'(epoch {self.best_epoch}).'
            )
        if self.reason == 'stopped':
            return (
                f'Stopped after {self.epochs_done} epoch(s).{best} '
                'Resume continues from there.'
            )
        saved = f' Saved {self.best_path}.' if self.best_path else ''
        return f'Finished {self.epochs_done} epoch(s).{best}{saved}'


Event = Started | Step | EpochEnd | Saved | Finished


def describe_error(err: BaseException) -> str:
    """One line for a user: the message alone for input errors
    (``ValueError``, ``OSError``), with the exception type otherwise."""
    text = ' '.join(str(err).split()) or type(err).__name__
    if not isinstance(err, (ValueError, OSError)):
        text = f'{type(err).__name__}: {text}'
    return text
