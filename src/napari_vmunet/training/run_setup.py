"""Everything a training run is built from, decided once and in one place.

:func:`set_up_run` turns a config and the user's data into a
:class:`RunSetup`: the model and where it came from, what it knows of its
inputs (:class:`~.provenance.ModelSetup`), the training and validation
samples, the tile dataset and the loss, with the notes a user should read.
It is a function of its arguments alone, so the
:class:`~.trainer.Trainer` is complete as soon as its constructor returns
and no method has to be called before another.  Bad input fails here, at
once, with a ``ValueError`` / ``CheckpointError``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..devices import resolve_device
from .augment import AugmentConfig, augment_choice
from .config import TrainConfig
from .data import (
    AnnotatedSlice,
    Sample,
    TileDataset,
    TrainingPair,
    data_channels,
    extract_slices,
    inspect_slices,
    prepare_samples,
    tiles_to_cover,
)
from .initialize import InitialModel, freeze_encoder
from .losses import make_loss
from .provenance import (
    ModelSetup,
    describe_preset_choice,
    image_names,
    model_setup,
    summarize_training_inputs,
)
from .resume import ResumePoint, open_resume, resumed_config
from .split import check_foreground, split_samples

Data = Sequence[TrainingPair | AnnotatedSlice]


@dataclass
class RunSetup:
    """What :func:`set_up_run` decided (see the Trainer's attributes)."""

    device: torch.device
    model: nn.Module
    initialized_from: str  # provenance.initialized_from
    notes: list[str]
    seed: int
    setup: ModelSetup
    train_samples: list[Sample]
    val_samples: list[Sample]
    image_names: list[str]  # the images the slices come from
    training_stats: dict  # rules.input_stats summary
    steps_per_epoch: int
    dataset: TileDataset
    loss_fn: nn.Module


def open_run(config: TrainConfig) -> tuple[TrainConfig, ResumePoint | None, list[str]]:
    """The config a run goes by, the run it resumes (``config.resume``) and
    a note on the settings taken over from that run."""
    config.check_output()
    if not config.resume:
        return config, None, []
    resume = open_resume(config)
    config, adopted = resumed_config(config, resume.state.recipe)
    shown = ', '.join(f'{k}={v}' for k, v in adopted.items())
    notes = [f"resumed with the run's own settings: {shown}"] if adopted else []
    return config, resume, notes


def set_up_run(
    config: TrainConfig,
    resume: ResumePoint | None,
    data: Data,
    val_data: Data | None,
    build_model: Callable[[int | None], InitialModel],
    notes: Sequence[str] = (),
) -> RunSetup:
    """Build the run: ``build_model(data_channels)`` makes a new run's model
    (a resumed one goes on with the checkpoint's); ``val_data`` None holds
    out ``config.val_fraction`` of ``data``."""
    device = resolve_device(config.device)
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    torch.manual_seed(config.seed)  # model construction draws from it
    slices = extract_slices(data, config.annotation)
    val_slices = (
        extract_slices(val_data, config.annotation) if val_data is not None else []
    )
    init = (
        resume.initial_model(config)
        if resume is not None
        else build_model(data_channels([*slices, *val_slices]))
    )
    notes = [*init.notes, *notes]
    saved_seed = None if resume is None else resume.state.seed
    seed = config.seed if saved_seed is None else saved_seed
    setup = model_setup(config, init.model, init.metadata)
    if config.auto_preset and resume is None:
        notes.append(describe_preset_choice(config))
    if config.freeze_encoder:
        trained = resume is not None or bool(config.init)
        notes.append(freeze_encoder(init.model, init, trained))
    samples = prepare(slices, setup, config.annotation, notes)
    if val_data is not None:
        train, val = samples, prepare(val_slices, setup, config.annotation, notes)
    else:
        train, val, note = split_samples(samples, config.val_fraction, seed, setup.tile)
        notes += [note] if note else []
    notes += check_foreground(
        train, config.annotation, setup.num_classes, setup.class_names
    )
    stats = summarize_training_inputs(
        [*slices, *val_slices], [*train, *val], setup.normalization
    )
    steps = config.steps_per_epoch or max(
        config.min_steps_per_epoch,
        math.ceil(tiles_to_cover(train, setup.tile) / config.batch_size),
    )
    augment, note = augment_choice(config, slices)
    notes += [note] if note else []
    dataset = TileDataset(
        train,
        setup.tile,
        steps * config.batch_size,
        seed,
        AugmentConfig() if augment else None,
    )
    masked = any(s.annotated is not None for s in [*train, *val])
    return RunSetup(
        device=device,
        model=init.model,
        initialized_from=init.description,
        notes=notes,
        seed=seed,
        setup=setup,
        train_samples=train,
        val_samples=val,
        image_names=image_names([*slices, *val_slices]),
        training_stats=stats,
        steps_per_epoch=steps,
        dataset=dataset,
        loss_fn=make_loss(setup.num_classes, config.annotation, masked=masked),
    )


def prepare(
    data: Data, setup: ModelSetup, annotation: str, notes: list[str]
) -> list[Sample]:
    """Pairs (or extracted slices) as the run's model sees them: same
    normalisation, channels and targets; notes on the images join
    ``notes`` (each once)."""
    slices = extract_slices(data, annotation)
    for note in inspect_slices(slices, setup.normalization):
        if note not in notes:
            notes.append(note)
    return prepare_samples(
        slices,
        num_classes=setup.num_classes,
        input_channels=setup.input_channels,
        normalization=setup.normalization,
        class_names=setup.class_names,
        annotation=annotation,
    )
