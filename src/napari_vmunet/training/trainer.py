"""The training loop: one generator of events for the CLI, notebooks and napari.

:class:`Trainer` does all set-up in its constructor (data, model,
optimiser, resume), so bad input fails at once with a ``ValueError`` /
``CheckpointError`` and no method has to be called before another: the run
is decided by :func:`.run_setup.set_up_run` (model, samples, tiles, loss),
the resume state is a :class:`.state.TrainingState`, and what a checkpoint
records about the run comes from :mod:`.provenance`.

:meth:`Trainer.run` is a generator of :mod:`~napari_vmunet.training.events`;
:meth:`Trainer.fit` drives it with a callback.  A stop request
(``threading.Event``, ``multiprocessing.Event`` or any callable) is checked
before every optimisation step and between validation slices, so it takes
effect within one step; a stopped run leaves a ``last`` checkpoint that
resumes at the very step where it stopped, and the ``best`` checkpoint
untouched.

The fixed loop follows MONAI Label's template-method trainer: the parts a
variant may change are small methods -- :meth:`build_model`,
:meth:`wrap_model`, :meth:`make_optimizer`, :meth:`make_scheduler`,
:meth:`epoch_indices`, :meth:`reduce_mean`, :meth:`validate` and
:attr:`is_main_process`.  A DDP trainer (``training/ddp.py``) overrides
those: wrap the model in ``DistributedDataParallel`` in :meth:`wrap_model`
(the only place the model is wrapped; checkpoints and validation use the
bare ``self.model``), give each rank its share of :meth:`epoch_indices`
(tiles are a pure function of ``(seed, epoch, index)``, so ranks need no
shared RNG), all-reduce in :meth:`reduce_mean`, validate on rank 0 and let
only rank 0 write checkpoints.
"""

from __future__ import annotations

import math
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from .._generators import StopRequest, as_stop_callable
from ..checkpoint import architecture_of, describe_architecture, save_checkpoint
from ..model import VMUNet
from .config import TrainConfig, last_path
from .data import Sample
from .events import EpochEnd, Event, Finished, Saved, Started, Step, describe_error
from .initialize import InitialModel, initial_model
from .optim import make_optimizer, make_scheduler, replan_schedule
from .provenance import (
    ModelSetup,
    checkpoint_metadata,
    describe_recipe,
    describe_training_data,
)
from .resume import schedule_follows_epochs
from .run_setup import Data, open_run, prepare, set_up_run
from .state import BestModel, TrainingState, history_entry
from .validation import Validation, evaluate


class Trainer:
    """Train (or fine-tune) a VM-UNet on annotated slices.

    ``data``: :class:`TrainingPair` s (or slices already extracted);
    ``val_data``: optional explicit validation data -- without it
    ``config.val_fraction`` of the annotated slices is held out.
    """

    #: only the main process writes checkpoints (DDP: rank 0)
    is_main_process: bool = True

    def __init__(self, config: TrainConfig, data: Data, val_data: Data | None = None):
        config, resume, notes = open_run(config)
        self.config = config  # before build_model, which reads it
        run = set_up_run(config, resume, data, val_data, self.build_model, notes)
        self.device = run.device
        self.model: nn.Module = run.model
        self.initialized_from = run.initialized_from
        self.notes = run.notes
        self.seed = run.seed
        self.setup: ModelSetup = run.setup
        self.train_samples, self.val_samples = run.train_samples, run.val_samples
        self._image_names = run.image_names
        self.training_stats = run.training_stats
        self.batch_size = config.batch_size
        self.steps_per_epoch = run.steps_per_epoch
        self.dataset = run.dataset
        self.loss_fn = run.loss_fn
        self.model.to(self.device).train()
        self.net = self.wrap_model(self.model)
        self.optimizer = self.make_optimizer(self.net)
        self.scheduler = self.make_scheduler(self.optimizer)
        self.error: BaseException | None = None
        self._dirty = False  # steps taken since the last save
        # progress: epochs fully done, steps done in the next one
        self.epoch = 0
        self.step_in_epoch = 0
        self._loss_sum = 0.0
        self._loss_n = 0
        self.history: list[dict] = []
        self.best = BestModel()
        self.best_state: dict[str, torch.Tensor] | None = None  # output=None
        self._torch_rng: torch.Tensor | None = None
        self._resumed = resume is not None
        if resume is not None:
            resume.check(config)
            self._continue(resume.state)

    # what the model knows of its inputs and outputs (ModelSetup)
    num_classes = property(lambda self: self.setup.num_classes)
    input_channels = property(lambda self: self.setup.input_channels)
    class_names = property(lambda self: self.setup.class_names)
    class_colors = property(lambda self: self.setup.class_colors)
    normalization = property(lambda self: self.setup.normalization)
    tile = property(lambda self: self.setup.tile)
    # the best epoch so far (BestModel)
    best_score = property(lambda self: self.best.score)
    best_epoch = property(lambda self: self.best.epoch)
    best_val_dice = property(lambda self: self.best.val_dice)
    best_mean_dice = property(lambda self: self.best.mean_dice)

    # ------------------------------------------------------------------
    # hooks (override for variants such as DDP)

    def build_model(self, data_channels: int | None) -> InitialModel:
        """The model to train and where it came from.

        Any network with ``num_classes`` and ``input_channels`` attributes
        that maps ``(B, C, H, W)`` to probabilities (one class) or logits
        works in memory; only a :class:`VMUNet` can be saved.  Not called
        on resume: the model is the resumed checkpoint's.
        """
        return initial_model(self.config, data_channels)

    def wrap_model(self, model: nn.Module) -> nn.Module:
        """The module the training step calls (DDP wraps here)."""
        return model

    def make_optimizer(self, net: nn.Module) -> torch.optim.Optimizer:
        """The optimiser (:func:`.optim.make_optimizer`: AdamW, the original)."""
        return make_optimizer(self.config, self.model, net)

    def make_scheduler(self, optimizer: torch.optim.Optimizer):
        """The schedule (:func:`.optim.make_scheduler`: cosine annealing per epoch)."""
        return make_scheduler(self.config, optimizer)

    def epoch_indices(self, epoch: int, start_step: int) -> Sequence[int]:
        """Tile indices this process trains on in ``epoch`` from
        ``start_step`` on (DDP: this rank's share)."""
        return range(
            start_step * self.batch_size, self.steps_per_epoch * self.batch_size
        )

    def reduce_mean(self, value: float) -> float:
        """Average a number over processes (DDP: all-reduce)."""
        return value

    # ------------------------------------------------------------------
    # running

    def fit(
        self,
        callback: Callable[[Event], None] | None = None,
        stop: StopRequest = None,
    ) -> Finished:
        """Run to the end, passing every event to ``callback``; returns the
        :class:`Finished` event.  An error inside training is re-raised
        (after the callback saw its ``Finished``)."""
        finished = None
        for event in self.run(stop):
            if callback is not None:
                callback(event)
            if isinstance(event, Finished):
                finished = event
        if finished.reason == 'error' and self.error is not None:
            raise self.error
        return finished

    def run(self, stop: StopRequest = None) -> Iterator[Event]:
        """The training generator: :class:`Started`, then :class:`Step` and
        :class:`EpochEnd` (+ :class:`Saved`) events, always ending with one
        :class:`Finished`.  Errors end the run with ``reason='error'``."""
        should_stop = as_stop_callable(stop)
        if self._torch_rng is not None:
            torch.set_rng_state(self._torch_rng)
        yield self._started()
        try:
            yield from self._epochs(should_stop)
        except Exception as err:  # noqa: BLE001 - reported as an event
            self.error = err
            yield self._finished(
                'error', describe_error(err), tb=traceback.format_exc()
            )

    def _epochs(self, should_stop: Callable[[], bool]) -> Iterator[Event]:
        c = self.config
        total = c.epochs
        started = time.perf_counter()
        epoch_times: list[float] = []
        if self.epoch >= total:
            yield self._finished(
                'completed', f'nothing to do: {self.epoch} of {total} epochs are done'
            )
            return
        for epoch in range(self.epoch + 1, total + 1):
            t0 = time.perf_counter()
            lr = self.optimizer.param_groups[0]['lr']
            self.dataset.set_epoch(epoch)
            loader = self._loader(epoch)
            batches = iter(loader)
            timed_out = False
            while self.step_in_epoch < self.steps_per_epoch:
                if should_stop():
                    yield from self._stop_mid_epoch(epoch)
                    return
                try:
                    x, y = next(batches)
                except StopIteration:
                    break
                loss = self.train_step(x, y, epoch)
                self.step_in_epoch += 1
                self._loss_sum += loss
                self._loss_n += 1
                self._dirty = True
                yield Step(epoch, self.step_in_epoch, self.steps_per_epoch, loss, lr)
                if c.time_limit and time.perf_counter() - started > c.time_limit:
                    timed_out = True
                    break
            del batches, loader
            train_loss = self.reduce_mean(self._loss_sum / max(self._loss_n, 1))
            val = self.validate(should_stop)
            interrupted = val is not None and not val.complete
            if interrupted:  # a partial validation must not pick the best model
                val = None
            self.scheduler.step()
            self.epoch, self.step_in_epoch = epoch, 0
            self._loss_sum, self._loss_n = 0.0, 0
            self.history.append(history_entry(epoch, train_loss, val, lr))
            improved = self.best.consider(epoch, train_loss, val, not interrupted)
            seconds = time.perf_counter() - t0
            epoch_times.append(seconds)
            eta = (total - epoch) * sum(epoch_times) / len(epoch_times)
            if c.time_limit:
                eta = min(eta, max(0.0, c.time_limit - (time.perf_counter() - started)))
            self.history[-1]['seconds'] = seconds
            saved = self._save(improved)
            yield EpochEnd(
                epoch=epoch,
                total_epochs=total,
                train_loss=train_loss,
                val_loss=val.loss if val else None,
                val_dice=dict(val.dice) if val else {},
                mean_dice=val.mean_dice if val else None,
                lr=lr,
                seconds=seconds,
                eta_seconds=eta,
                improved=improved,
            )
            yield from saved
            if interrupted:
                yield self._finished(
                    'stopped',
                    f'stopped during the validation of epoch {epoch}; the epoch is '
                    'saved and resuming starts the next one',
                )
                return
            if timed_out:
                yield self._finished(
                    'completed',
                    f'time limit of {c.time_limit:g} s reached in epoch {epoch}',
                )
                return
        yield self._finished('completed', f'trained {total} epochs')

    def _loader(self, epoch: int) -> DataLoader:
        """The rest of ``epoch``'s batches, from the step the run is at."""
        return DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            sampler=self.epoch_indices(epoch, self.step_in_epoch),
            num_workers=self.config.num_workers,
            # its own generator: creating a loader must not draw from
            # the global RNG (DropPath's), or a run resumed mid-epoch
            # would diverge from an uninterrupted one
            generator=torch.Generator().manual_seed(self.seed),
        )

    def train_step(self, x: torch.Tensor, y: torch.Tensor, epoch: int) -> float:
        """One optimisation step on a batch; returns its loss."""
        x = x.to(self.device, non_blocking=True)
        y = y.to(self.device, non_blocking=True)
        out = self.net(x)
        # a diverged network outputs NaN: say so before the loss chokes on it
        # (BCE refuses probabilities outside [0, 1] with a cryptic message)
        finite = bool(torch.isfinite(out).all())
        loss = self.loss_fn(out, y) if finite else out.new_tensor(math.nan)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f'the loss became {float(loss)} in epoch {epoch}; training '
                'diverged: lower the learning rate (the last checkpoint is '
                'from before this epoch)'
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    def validate(self, should_stop: Callable[[], bool]) -> Validation | None:
        """Loss and Dice on the validation slices (DDP: rank 0 only,
        then broadcast)."""
        if not self.val_samples:
            return None
        return evaluate(
            self.model,
            self.val_samples,
            loss_fn=self.loss_fn,
            class_names=self.class_names,
            num_classes=self.num_classes,
            device=self.device,
            batch_size=self.batch_size,
            should_stop=should_stop,
        )

    # ------------------------------------------------------------------
    # checkpoints

    @property
    def output(self) -> Path | None:
        return self.config.output

    @property
    def last_output(self) -> Path | None:
        return None if self.output is None else last_path(self.output)

    def _save(self, improved: bool) -> list[Saved]:
        """Write ``best`` (if improved) and ``last``; returns their events."""
        events = []
        if improved and self.output is None:
            self.best_state = {
                k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()
            }
        elif improved and self.is_main_process:
            events.append(self._write(self.output, 'best'))
        if self.output is not None and self.is_main_process:
            events.append(self._write(self.last_output, 'last'))
        self._dirty = False
        return events

    def _write(self, path: Path, which: str) -> Saved:
        """One checkpoint; ``last`` carries the resume state too."""
        save_checkpoint(
            self.model,
            path,
            metadata=self._metadata(),
            training_state=self._training_state() if which == 'last' else None,
            training_stats=self.training_stats,
        )
        return Saved(str(path), which, self.epoch)

    def _stop_mid_epoch(self, epoch: int) -> Iterator[Event]:
        if self.output is not None and self.is_main_process and self._dirty:
            yield self._write(self.last_output, 'last')
        where = f'epoch {epoch}, step {self.step_in_epoch} of {self.steps_per_epoch}'
        resume = ' (resume continues from there)' if self.output is not None else ''
        yield self._finished('stopped', f'stopped at {where}{resume}')

    def _metadata(self) -> dict:
        c = self.config
        command = c.command or describe_recipe(
            c,
            batch_size=self.batch_size,
            tile=self.tile,
            steps_per_epoch=self.steps_per_epoch,
            seed=self.seed,
        )
        return checkpoint_metadata(
            self.setup,
            initialized_from=self.initialized_from,
            training_data=self.training_data,
            epochs=self.epoch,
            best_mean_dice=self.best.mean_dice,
            command=command,
            notes=[c.notes, *self.notes],
        )

    def _training_state(self) -> dict:
        return TrainingState(
            epoch=self.epoch,
            step=self.step_in_epoch,
            loss_sum=self._loss_sum,
            loss_n=self._loss_n,
            total_epochs=self.config.epochs,
            seed=self.seed,
            optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(),
            torch_rng=torch.get_rng_state(),
            history=self.history,
            best=self.best,
            val_samples=[s.source for s in self.val_samples],
            steps_per_epoch=self.steps_per_epoch,
            batch_size=self.batch_size,
            tile_size=self.tile,
            freeze_encoder=self.config.freeze_encoder,
            recipe=self.config.recipe(),
        ).to_dict()

    # ------------------------------------------------------------------
    # set-up helpers

    def _continue(self, state: TrainingState) -> None:
        """Take over the resumed run's optimiser, schedule and progress."""
        self.optimizer.load_state_dict(state.optimizer)
        self.scheduler.load_state_dict(state.scheduler)
        self.epoch = state.epoch
        planned = (
            self.config.epochs if state.total_epochs is None else state.total_epochs
        )
        if planned != self.config.epochs and schedule_follows_epochs(
            state.recipe, self.config
        ):
            note = replan_schedule(
                self.scheduler,
                self.optimizer,
                epoch=self.epoch,
                planned=planned,
                config=self.config,
            )
            if note:
                self.notes.append(note)
        self.step_in_epoch = min(state.step, self.steps_per_epoch)
        self._loss_sum, self._loss_n = state.loss_sum, state.loss_n
        self.history = list(state.history)
        self.best = state.best
        self._torch_rng = state.torch_rng
        if state.val_samples != [s.source for s in self.val_samples]:
            self.notes.append(
                'the validation slices differ from those of the interrupted run '
                '(the data changed); best-model scores before and after are not '
                'comparable'
            )

    def describe_model(self) -> str:
        """One line about the network (Started.model)."""
        if isinstance(self.model, VMUNet):
            return describe_architecture(architecture_of(self.model.config))
        return type(self.model).__name__

    def prepare(self, data: Data) -> list[Sample]:
        """Pairs (or extracted slices) as this run's model sees them: same
        normalisation, channels and targets -- e.g. for a separate test set."""
        return prepare(data, self.setup, self.config.annotation, self.notes)

    @property
    def training_data(self) -> str:
        """provenance.training_data: how many slices from which images."""
        return self.config.training_data or describe_training_data(
            self._image_names, len(self.train_samples), len(self.val_samples)
        )

    def _started(self) -> Started:
        return Started(
            total_epochs=self.config.epochs,
            start_epoch=self.epoch,
            n_train=len(self.train_samples),
            n_val=len(self.val_samples),
            steps_per_epoch=self.steps_per_epoch,
            batch_size=self.batch_size,
            tile_size=self.tile,
            device=str(self.device),
            model=self.describe_model(),
            parameters=sum(p.numel() for p in self.model.parameters()),
            class_names=tuple(self.class_names),
            initialized_from=self.initialized_from,
            train_samples=tuple(s.source for s in self.train_samples),
            val_samples=tuple(s.source for s in self.val_samples),
            resumed=self._resumed,
            output=None if self.output is None else str(self.output),
            notes=tuple(self.notes),
        )

    def _finished(self, reason: str, message: str, tb: str = '') -> Finished:
        best = None
        if (
            self.output is not None
            and self.best_epoch is not None
            and self.output.exists()
        ):
            best = str(self.output)
        last = self.last_output
        return Finished(
            reason=reason,
            best_path=best,
            message=message,
            last_path=str(last) if last is not None and last.exists() else None,
            epochs_done=self.epoch,
            best_epoch=self.best_epoch,
            best_val_dice=dict(self.best_val_dice),
            best_mean_dice=self.best_mean_dice,
            traceback=tb,
        )
