"""What a training run reports, as small picklable dataclasses.

The trainer is a generator of these events, so the CLI (a tqdm bar), a
notebook (a callback) and the napari dock (events sent from a child process
over a pipe) all follow one run the same way.  Every event holds only
numbers, strings, tuples and dicts: it pickles across processes and prints
readably.  The last event of every run is a :class:`Finished`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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


@dataclass(frozen=True)
class Step:
    """One optimisation step finished (epochs and steps count from 1)."""

    epoch: int
    step: int
    steps_per_epoch: int
    loss: float
    lr: float


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


Event = Started | Step | EpochEnd | Saved | Finished
