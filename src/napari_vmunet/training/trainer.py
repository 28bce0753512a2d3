"""The training loop: one generator of events for the CLI, notebooks and napari.

:class:`Trainer` does all set-up in its constructor (data, model,
optimiser, resume), so bad input fails at once with a ``ValueError`` /
``CheckpointError``.  :meth:`Trainer.run` is a generator of
:mod:`~napari_vmunet.training.events`; :meth:`Trainer.fit` drives it with a
callback.  A stop request (``threading.Event``, ``multiprocessing.Event`` or
any callable) is checked before every optimisation step and between
validation slices, so it takes effect within one step; a stopped run leaves
a ``last`` checkpoint that resumes at the very step where it stopped, and
the ``best`` checkpoint untouched.

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

import copy
import math
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from ..checkpoint import default_metadata, load_checkpoint, save_checkpoint
from ..checkpoint._metadata import (
    architecture_of,
    default_class_names,
    parse_normalization,
)
from ..checkpoint._state import describe_architecture
from ..devices import resolve_device
from ..model import VMUNet
from ..rules.input_stats import summarize_inputs
from ..rules.normalization import check_normalization, override_normalization
from ..rules.tiling import DEFAULT_TILE, check_tile
from .augment import AugmentConfig
from .config import TrainConfig, last_path
from .data import (
    AnnotatedSlice,
    Sample,
    TileDataset,
    TrainingPair,
    data_channels,
    extract_slices,
    hold_out_strip,
    inspect_slices,
    prepare_samples,
    split_validation,
    tiles_to_cover,
)
from .events import EpochEnd, Event, Finished, Saved, Started, Step
from .initialize import InitialModel, initial_model, set_drop_path
from .losses import make_loss
from .resume import CosineFactor, resumed_config, schedule_follows_epochs
from .validation import Validation, evaluate

#: a ``threading``/``multiprocessing`` Event, a callable, or None
StopRequest = Any
Data = Sequence[TrainingPair | AnnotatedSlice]


def _stem_weight(model: nn.Module) -> nn.Parameter | None:
    """The patch embedding's weight of a VM-UNet (None for other nets)."""
    try:
        return model.vmunet.patch_embed.proj.weight
    except AttributeError:
        return None


def describe_error(err: BaseException) -> str:
    """One line for a user: the message alone for input errors
    (``ValueError``, ``OSError``), with the exception type otherwise."""
    text = ' '.join(str(err).split()) or type(err).__name__
    if not isinstance(err, (ValueError, OSError)):
        text = f'{type(err).__name__}: {text}'
    return text


def _image_names(slices: Sequence[AnnotatedSlice]) -> list[str]:
    """The images the slices come from, in the order given."""
    names: list[str] = []
    for s in slices:
        name = s.source.rsplit(' slice ', 1)[0]
        if name not in names:
            names.append(name)
    return names


def summarize_training_inputs(
    slices: Sequence[AnnotatedSlice], samples: Sequence[Sample], normalization: dict
) -> dict:
    """The summary of the network's training inputs that the checkpoint
    keeps, so that inference can tell an image far from them."""
    kinds = {s.from_volume for s in slices}
    kind = 'mixed' if len(kinds) > 1 else ('volume' if kinds == {True} else '2d')
    return summarize_inputs(
        (s.image for s in samples),
        kind=kind,
        channels=max((s.image.shape[0] for s in slices), default=1),
        value_range=tuple(normalization.get('range', (0.0, 255.0))),
    )


def describe_preset_choice(config: TrainConfig) -> str:
    """Why a run that named no preset got the one it has."""
    why = 'a new model' if config.preset == 'scratch' else 'a trained model'
    return (
        f'recipe: the {config.preset} preset for {why} (lr {config.lr:g}, '
        f'{config.epochs} epochs)'
    )


def as_stop_callable(stop: StopRequest) -> Callable[[], bool]:
    """``None``, anything with ``is_set()`` (threading / multiprocessing
    events) or a callable -> a callable returning ``True`` to stop."""
    if stop is None:
        return lambda: False
    if hasattr(stop, 'is_set'):
        return stop.is_set
    if callable(stop):
        return stop
    raise TypeError(
        f'stop must be an Event or a callable returning bool, got {type(stop).__name__}'
    )


class Trainer:
    """Train (or fine-tune) a VM-UNet on annotated slices.

    ``data``: :class:`TrainingPair` s (or slices already extracted);
    ``val_data``: optional explicit validation data -- without it
    ``config.val_fraction`` of the annotated slices is held out.
    """

    #: only the main process writes checkpoints (DDP: rank 0)
    is_main_process: bool = True

    def __init__(self, config: TrainConfig, data: Data, val_data: Data | None = None):
        config.check_output()
        self.error: BaseException | None = None
        self._resume_checkpoint = None
        self._resumed = False
        self._dirty = False
        self.config = config
        state = self._resume_state() if config.resume else None
        adopted: dict = {}
        if state is not None:
            config, adopted = resumed_config(config, state.get('recipe'))
            self.config = config
        self.device = resolve_device(config.device)
        if config.num_threads:
            torch.set_num_threads(config.num_threads)
        torch.manual_seed(config.seed)
        slices = extract_slices(data, config.annotation)
        val_slices = (
            extract_slices(val_data, config.annotation) if val_data is not None else []
        )
        init = self.build_model(data_channels([*slices, *val_slices]))
        self.model: nn.Module = init.model
        self.initialized_from = init.description
        self.notes = list(init.notes)
        if adopted:
            shown = ', '.join(f'{k}={v}' for k, v in adopted.items())
            self.notes.append(f"resumed with the run's own settings: {shown}")
        self._setup_meta(init)
        if config.auto_preset and state is None:
            self.notes.append(describe_preset_choice(config))
        if config.freeze_encoder:
            self.notes.append(self._freeze_encoder(init))
        samples = self.prepare(slices)
        self._image_names = _image_names([*slices, *val_slices])
        if val_data is not None:
            self.train_samples = samples
            self.val_samples = self.prepare(val_slices)
        else:
            train, val = split_validation(samples, config.val_fraction, self.seed)
            self.train_samples = [samples[i] for i in train]
            self.val_samples = [samples[i] for i in val]
            strip = None
            if len(samples) == 1 and config.val_fraction > 0:
                strip = hold_out_strip(samples[0], config.val_fraction, self.tile)
            if strip is not None:
                self.train_samples, self.val_samples = [strip[0]], [strip[1]]
                self.notes.append(
                    f'one image: validating on a strip of it, '
                    f'{strip[1].source} ({config.val_fraction:.0%})'
                )
        self._check_foreground()
        self.training_stats = summarize_training_inputs(
            [*slices, *val_slices],
            [*self.train_samples, *self.val_samples],
            self.normalization,
        )
        self.batch_size = config.batch_size
        self.steps_per_epoch = config.steps_per_epoch or max(
            config.min_steps_per_epoch,
            math.ceil(tiles_to_cover(self.train_samples, self.tile) / self.batch_size),
        )
        self.dataset = TileDataset(
            self.train_samples,
            self.tile,
            self.steps_per_epoch * self.batch_size,
            self.seed,
            AugmentConfig() if self._augments(slices) else None,
        )
        masked = any(
            s.annotated is not None for s in [*self.train_samples, *self.val_samples]
        )
        self.loss_fn = make_loss(self.num_classes, config.annotation, masked=masked)
        self.model.to(self.device).train()
        self.net = self.wrap_model(self.model)
        self.optimizer = self.make_optimizer(self.net)
        self.scheduler = self.make_scheduler(self.optimizer)
        # progress: epochs fully done, steps done in the next one
        self.epoch = 0
        self.step_in_epoch = 0
        self._loss_sum = 0.0
        self._loss_n = 0
        self.history: list[dict] = []
        self.best_score: float | None = None
        self.best_epoch: int | None = None
        self.best_val_dice: dict[str, float] = {}
        self.best_mean_dice: float | None = None
        self.best_state: dict[str, torch.Tensor] | None = None
        self._torch_rng: torch.Tensor | None = None
        if state is not None:
            self._load_state(state)

    # ------------------------------------------------------------------
    # hooks (override for variants such as DDP)

    def _augments(self, slices: Sequence[AnnotatedSlice]) -> bool:
        """Whether tiles are augmented.  Unless the caller said, yes --
        except for a new model (the scratch preset) learning from slices of
        volumes: their orientation is fixed, and on the bundled few-slice
        settings flips and rotations cost VM-UNet Dice (brain white matter
        0.975 without vs 0.966 with, grey and white matter 0.962 vs 0.942),
        while on a 2-D microscopy crop they helped (0.913 vs 0.891;
        ``benchmarks/fewshot.py``, docs/training.md)."""
        if self.config.augment is not None:
            return bool(self.config.augment)
        volumes = bool(slices) and all(s.from_volume for s in slices)
        off = self.config.preset == 'scratch' and volumes
        if off:
            self.notes.append(
                'no augmentation: a new model learning from slices of volumes '
                '(fixed orientation) does better without it; augment=True '
                '(CLI: --augment) turns it on'
            )
        return not off

    def build_model(self, data_channels: int | None) -> InitialModel:
        """The model to train and where it came from.

        Any network with ``num_classes`` and ``input_channels`` attributes
        that maps ``(B, C, H, W)`` to probabilities (one class) or logits
        works in memory; only a :class:`VMUNet` can be saved.
        """
        if self._resume_checkpoint is not None:
            ckpt = self._resume_checkpoint
            prov = ckpt.metadata['provenance']
            if self.config.drop_path_rate is not None:
                # not stored with the weights: a resume sets it as the run did
                set_drop_path(ckpt.model, self.config.drop_path_rate)
            return InitialModel(
                ckpt.model.train(),
                prov.get('initialized_from') or f'checkpoint:{ckpt.path}',
                ckpt.metadata,
                [f'resumed from {ckpt.path.name}'],
            )
        return initial_model(self.config, data_channels)

    def wrap_model(self, model: nn.Module) -> nn.Module:
        """The module the training step calls (DDP wraps here)."""
        return model

    def make_optimizer(self, net: nn.Module) -> torch.optim.Optimizer:
        """AdamW on all parameters, weight decay included (the original).

        The patch embedding's weight forms a second group whose learning
        rate is scaled by ``input_scale`` and weight decay by its inverse
        (see :class:`TrainConfig`); with ``input_scale=1`` both groups are
        the same and this is the original optimiser.
        """
        c = self.config
        stem = _stem_weight(self.model)
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

    def make_scheduler(self, optimizer: torch.optim.Optimizer):
        """Cosine annealing stepped once per epoch (the original):
        ``lr(e) = eta_min + (lr - eta_min) (1 + cos(pi e / T_max)) / 2``.

        Written as a factor on each group's initial rate (``LambdaLR``), so
        the patch-embedding group follows the same curve scaled; the main
        group gets exactly ``CosineAnnealingLR``'s values (its closed form).
        """
        c = self.config
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, CosineFactor(c.lr, c.eta_min, c.t_max)
        )

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
            loader = DataLoader(
                self.dataset,
                batch_size=self.batch_size,
                sampler=self.epoch_indices(epoch, self.step_in_epoch),
                num_workers=c.num_workers,
                # its own generator: creating a loader must not draw from
                # the global RNG (DropPath's), or a run resumed mid-epoch
                # would diverge from an uninterrupted one
                generator=torch.Generator().manual_seed(self.seed),
            )
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
            improved = self._record(epoch, train_loss, val, lr, not interrupted)
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

    def _record(
        self,
        epoch: int,
        train_loss: float,
        val: Validation | None,
        lr: float,
        may_improve: bool = True,
    ) -> bool:
        """Append to the history; is this the best model so far?

        Best = highest mean validation Dice; without a Dice (no validation
        slice contains an object) lowest validation loss; without
        validation, lowest training loss.
        """
        if val is not None and val.mean_dice is not None:
            score = val.mean_dice
        elif val is not None and val.loss is not None:
            score = -val.loss
        else:
            score = -train_loss
        improved = may_improve and (self.best_score is None or score > self.best_score)
        self.history.append(
            {
                'epoch': epoch,
                'train_loss': train_loss,
                'val_loss': val.loss if val else None,
                'val_dice': dict(val.dice) if val else {},
                'mean_dice': val.mean_dice if val else None,
                'lr': lr,
                'seconds': 0.0,
            }
        )
        if improved:
            self.best_score, self.best_epoch = score, epoch
            self.best_val_dice = dict(val.dice) if val else {}
            self.best_mean_dice = val.mean_dice if val else None
        return improved

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
        if improved:
            if self.output is None:
                self.best_state = {
                    k: v.detach().cpu().clone()
                    for k, v in self.model.state_dict().items()
                }
            elif self.is_main_process:
                save_checkpoint(
                    self.model,
                    self.output,
                    metadata=self._metadata(),
                    training_stats=self.training_stats,
                )
                events.append(Saved(str(self.output), 'best', self.epoch))
        if self.output is not None and self.is_main_process:
            save_checkpoint(
                self.model,
                self.last_output,
                metadata=self._metadata(),
                training_state=self._training_state(),
                training_stats=self.training_stats,
            )
            events.append(Saved(str(self.last_output), 'last', self.epoch))
        self._dirty = False
        return events

    def _stop_mid_epoch(self, epoch: int) -> Iterator[Event]:
        saved = None
        if self.output is not None and self.is_main_process and self._dirty:
            save_checkpoint(
                self.model,
                self.last_output,
                metadata=self._metadata(),
                training_state=self._training_state(),
                training_stats=self.training_stats,
            )
            saved = Saved(str(self.last_output), 'last', self.epoch)
            yield saved
        where = f'epoch {epoch}, step {self.step_in_epoch} of {self.steps_per_epoch}'
        resume = ' (resume continues from there)' if self.output is not None else ''
        yield self._finished('stopped', f'stopped at {where}{resume}')

    def _metadata(self) -> dict:
        c = self.config
        dice = self.best_mean_dice
        notes = [n for n in [c.notes, *self.notes] if n]
        return {
            'classes': {
                'names': list(self.class_names),
                'colors': list(self.class_colors),
            },
            'input': {
                'normalization': self.normalization,
                'tile_size': [self.tile] * 2,
            },
            'provenance': {
                'initialized_from': self.initialized_from,
                'training_data': self.training_data,
                'epochs': int(self.epoch),
                'best_val_dice': None if dice is None else min(max(dice, 0.0), 1.0),
                'command': c.command or self._describe_recipe(),
                'notes': '; '.join(notes) or None,
            },
        }

    def _describe_recipe(self) -> str:
        c = self.config
        return (
            f'napari_vmunet.training preset={c.preset} epochs={c.epochs} '
            f'lr={c.lr:g} batch_size={self.batch_size} tile={self.tile} '
            f'steps_per_epoch={self.steps_per_epoch} seed={self.seed}'
            + (' freeze_encoder=True' if c.freeze_encoder else '')
            + (' annotation=sparse' if c.annotation == 'sparse' else '')
        )

    def _training_state(self) -> dict:
        return {
            'epoch': self.epoch,
            'step': self.step_in_epoch,
            'loss_sum': self._loss_sum,
            'loss_n': self._loss_n,
            'total_epochs': self.config.epochs,
            'seed': self.seed,
            'optimizer': self.optimizer.state_dict(),
            'scheduler': self.scheduler.state_dict(),
            'torch_rng': torch.get_rng_state(),
            'history': copy.deepcopy(self.history),
            'best': {
                'score': self.best_score,
                'epoch': self.best_epoch,
                'mean_dice': self.best_mean_dice,
                'val_dice': dict(self.best_val_dice),
            },
            'val_samples': [s.source for s in self.val_samples],
            'steps_per_epoch': self.steps_per_epoch,
            'batch_size': self.batch_size,
            'tile_size': self.tile,
            'freeze_encoder': self.config.freeze_encoder,
            'recipe': self.config.recipe(),
        }

    # ------------------------------------------------------------------
    # set-up helpers

    def _resume_state(self) -> dict:
        """Load ``last`` for ``config.resume``; the model comes from it."""
        if self.config.output is None:
            raise ValueError('resume needs the output checkpoint of the earlier run')
        path = last_path(self.config.output)
        if not path.exists():
            raise ValueError(
                f'nothing to resume: {path} does not exist; train without resume '
                'first (it writes that file after every epoch)'
            )
        ckpt = load_checkpoint(path)
        state = ckpt.training_state
        if not state or 'optimizer' not in state or 'epoch' not in state:
            raise ValueError(
                f'{path} has no training state to resume from (its '
                f'{path.stem}.train_state.pt is missing); fine-tune from it '
                'with init instead'
            )
        want = self.config.num_classes
        if want and want != ckpt.config['num_classes']:
            raise ValueError(
                f'the run being resumed has {ckpt.config["num_classes"]} '
                f'class(es), not {want}'
            )
        self._resume_checkpoint = ckpt
        return state

    def _freeze_encoder(self, init: InitialModel) -> str:
        """Stop gradients at the encoder (``config.freeze_encoder``)."""
        if not isinstance(self.model, VMUNet):
            raise ValueError('freeze_encoder needs a VM-UNet')
        if self._resume_checkpoint is None and not self.config.init:
            raise ValueError(
                'decoder-only training (freeze_encoder) keeps the encoder as the '
                'starting model has it, and random weights would never learn: '
                'start from a trained checkpoint, or train all weights (untick '
                '"decoder only" in the dock, drop --freeze-encoder)'
            )
        net = self.model.vmunet
        for module in (net.patch_embed, net.layers):
            module.requires_grad_(False)
        frozen = sum(p.numel() for p in self.model.parameters() if not p.requires_grad)
        total = sum(p.numel() for p in self.model.parameters())
        return (
            f'encoder frozen: {frozen:,} of {total:,} parameters kept as in '
            f'{init.description}'
        )

    def _load_state(self, state: dict) -> None:
        if bool(state.get('freeze_encoder', False)) != self.config.freeze_encoder:
            was = 'with' if state.get('freeze_encoder') else 'without'
            raise ValueError(
                f'the run being resumed was trained {was} freeze_encoder; '
                'resume it with the same setting'
            )
        self.optimizer.load_state_dict(state['optimizer'])
        self.scheduler.load_state_dict(state['scheduler'])
        self.epoch = int(state['epoch'])
        planned = int(state.get('total_epochs', self.config.epochs))
        if planned != self.config.epochs and schedule_follows_epochs(
            state.get('recipe'), self.config
        ):
            self._replan_schedule(planned)
        self.step_in_epoch = int(state.get('step', 0))
        self._loss_sum = float(state.get('loss_sum', 0.0))
        self._loss_n = int(state.get('loss_n', 0))
        self.history = list(state.get('history', []))
        best = state.get('best') or {}
        self.best_score = best.get('score')
        self.best_epoch = best.get('epoch')
        self.best_mean_dice = best.get('mean_dice')
        self.best_val_dice = dict(best.get('val_dice') or {})
        self._torch_rng = state.get('torch_rng')
        if self.step_in_epoch >= self.steps_per_epoch:
            self.step_in_epoch = self.steps_per_epoch
        if list(state.get('val_samples', [])) != [s.source for s in self.val_samples]:
            self.notes.append(
                'the validation slices differ from those of the interrupted run '
                '(the data changed); best-model scores before and after are not '
                'comparable'
            )
        self._resumed = True

    def _replan_schedule(self, planned: int) -> None:
        """A resume with another number of epochs: the learning rate goes
        on from its current value down to ``eta_min`` at the new end."""
        total = self.config.epochs
        for factor in self.scheduler.lr_lambdas:
            factor.replan(self.epoch, total)
        if self.epoch < total:
            lr = self.optimizer.param_groups[0]['lr']
            self.notes.append(
                f'epochs changed from {planned} to {total} on resume: the '
                f'learning rate goes on from {lr:.3g} down to '
                f'{self.config.eta_min:g} over epochs {self.epoch + 1}-{total}'
            )

    def _setup_meta(self, init: InitialModel) -> None:
        """Classes, normalisation, tile size: config, else the checkpoint's."""
        c = self.config
        self.seed = c.seed
        if self._resume_checkpoint is not None:
            state = self._resume_checkpoint.training_state
            self.seed = int(state.get('seed', c.seed))
        meta = init.metadata or {}
        self.num_classes = int(self.model.num_classes)
        self.input_channels = int(self.model.input_channels)
        names = c.class_names
        if names is None and meta:
            names = meta['classes']['names']
        self.class_names = list(names or default_class_names(self.num_classes))
        colors = meta['classes']['colors'] if meta and c.class_names is None else None
        self.class_colors = list(colors or [None] * len(self.class_names))
        own = meta['input']['normalization'] if meta else None
        norm = own
        if c.normalization is not None:  # keeps a fine-tuned model's range
            norm = override_normalization(own, parse_normalization(c.normalization))
        norm = norm or {'mode': 'minmax'}
        tile = (
            c.tile_size
            or (meta['input']['tile_size'][0] if meta else None)
            or DEFAULT_TILE
        )
        self.tile = check_tile(int(tile))
        if not isinstance(self.model, VMUNet):
            # another network (benchmarks compare one under this recipe):
            # trained the same way, but there is no VM-UNet file to write
            if c.output is not None:
                raise ValueError(
                    f'only VM-UNet models are saved as checkpoints; train a '
                    f'{type(self.model).__name__} with output=None'
                )
            self.normalization = check_normalization(norm)
            return
        # validate now, before any work: wrong class names or normalisation
        checked = default_metadata(
            architecture_of(self.model.config),
            class_names=self.class_names,
            class_colors=self.class_colors,
            normalization=norm,
            tile_size=self.tile,
        )
        self.normalization = checked['input']['normalization']

    def describe_model(self) -> str:
        """One line about the network (Started.model)."""
        if isinstance(self.model, VMUNet):
            return describe_architecture(architecture_of(self.model.config))
        return type(self.model).__name__

    def prepare(self, data: Data) -> list[Sample]:
        """Pairs (or extracted slices) as this run's model sees them: same
        normalisation, channels and targets -- e.g. for a separate test set."""
        slices = extract_slices(data, self.config.annotation)
        for note in inspect_slices(slices, self.normalization):
            if note not in self.notes:
                self.notes.append(note)
        return prepare_samples(
            slices,
            num_classes=self.num_classes,
            input_channels=self.input_channels,
            normalization=self.normalization,
            class_names=self.class_names,
            annotation=self.config.annotation,
        )

    def _check_foreground(self) -> None:
        sparse = self.config.annotation == 'sparse'
        if not any(s.mask.any() for s in self.train_samples):
            raise ValueError(
                'the training slices contain no stroke of an object (sparse '
                'annotation: 2 or higher; 1 is background); paint at least one'
                if sparse
                else 'the training slices contain no labelled object (only '
                'background); draw at least one object'
            )
        if sparse and not any(
            s.background or (s.annotated & (s.mask == 0)).any()
            for s in self.train_samples
        ):
            self.notes.append(
                'sparse annotation without background strokes (value 1): the '
                'model is never shown what is not an object and may take '
                'everything for one; paint some background'
            )
        if self.num_classes > 1:
            present = set()
            for s in self.train_samples:
                present.update(np.unique(s.mask).tolist())
            absent = [
                self.class_names[k]
                for k in range(1, self.num_classes)
                if k not in present
            ]
            if absent:
                self.notes.append(
                    f'no training slice contains {", ".join(absent)}: the model '
                    'cannot learn those classes from this data'
                )

    @property
    def training_data(self) -> str:
        """provenance.training_data: how many slices from which images."""
        if self.config.training_data:
            return self.config.training_data
        names = self._image_names
        shown = ', '.join(names[:5]) + (
            f' and {len(names) - 5} more' if len(names) > 5 else ''
        )
        return (
            f'{len(self.train_samples)} training and {len(self.val_samples)} '
            f'validation slice(s) from {shown}'
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
