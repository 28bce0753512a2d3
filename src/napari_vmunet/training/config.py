"""The training recipe: one dataclass, three presets, explicit overrides.

``'full'`` is the original VM-UNet recipe (spec §4): AdamW(lr 1e-3, betas
(0.9, 0.999), eps 1e-8, weight decay 1e-2 on *all* parameters),
CosineAnnealingLR(T_max 50, eta_min 1e-5) stepped once per epoch, 300
epochs, batch 32, BCE + Dice (one class) / CE + Dice (several).
``'finetune'`` is for a few corrected slices on top of a trained model: the
same optimiser at lr 1e-4, a cosine decay over the run, 20 epochs of at
least 10 steps, batch 4.
``'scratch'`` is for a new model taught from a few annotated slices: the
original learning rate 1e-3 (a new network at 1e-4 does not even fit its own
training slices in a few hundred steps: issue #19, ``benchmarks/fewshot.py``),
a cosine decay over 60 epochs of at least 10 steps, batch 4, no drop-path
(the few slices are underfitted, not overfitted).

``preset=None`` picks by the starting point (:func:`default_preset`):
``'scratch'`` for a new model (or ImageNet VMamba weights, whose decoder is
new), ``'finetune'`` for a trained checkpoint.  Fields left ``None`` are
filled from the preset (or, for the tile size and normalisation, from the
checkpoint training starts from), so that ``TrainConfig(init=ckpt,
epochs=5)`` is the fine-tuning preset with five epochs.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..rules.annotation import check_annotation
from ..rules.tiling import check_tile

#: values a preset supplies for fields left ``None``
PRESETS: dict[str, dict[str, Any]] = {
    'finetune': {
        'epochs': 20,
        'lr': 1e-4,
        'weight_decay': 1e-2,
        'betas': (0.9, 0.999),
        'eps': 1e-8,
        'batch_size': 4,
        't_max': None,  # cosine over the whole run
        'eta_min': 1e-6,
        'min_steps_per_epoch': 10,
    },
    'scratch': {
        'epochs': 60,
        'lr': 1e-3,
        'weight_decay': 1e-2,
        'betas': (0.9, 0.999),
        'eps': 1e-8,
        'batch_size': 4,
        't_max': None,  # cosine over the whole run
        'eta_min': 1e-5,
        'min_steps_per_epoch': 10,
        # drop-path regularises a network that underfits a few slices
        'drop_path_rate': 0.0,
    },
    'full': {
        'epochs': 300,
        'lr': 1e-3,
        'weight_decay': 1e-2,
        'betas': (0.9, 0.999),
        'eps': 1e-8,
        'batch_size': 32,
        't_max': 50,
        'eta_min': 1e-5,
        'min_steps_per_epoch': 1,
    },
}
#: the patch embedding learns as if inputs were 0-1 instead of 0-255
INPUT_SCALE = 1 / 255
#: ``init`` prefix for ImageNet VMamba-S weights
VMAMBA_PREFIX = 'vmamba:'
#: the settings that define a run; a resume keeps them (see
#: ``TrainConfig.recipe`` and ``Trainer``), only ``epochs`` may change
RECIPE_FIELDS = (
    'preset',
    'init',
    'num_classes',
    'class_names',
    'input_channels',
    'dims',
    'depths',
    'depths_decoder',
    'd_state',
    'drop_path_rate',
    'epochs',
    'lr',
    'weight_decay',
    'betas',
    'eps',
    'batch_size',
    't_max',
    'eta_min',
    'min_steps_per_epoch',
    'steps_per_epoch',
    'input_scale',
    'freeze_encoder',
    'tile_size',
    'normalization',
    'augment',
    'annotation',
    'val_fraction',
    'seed',
)


@dataclass
class TrainConfig:
    """Everything a training run needs besides the data.

    Model
        ``init``: a checkpoint path (fine-tune it), ``'vmamba:PATH'``
        (ImageNet VMamba-S weights into encoder and decoder, as the original)
        or ``None`` (random weights).  ``num_classes``: 1 = foreground vs
        background (sigmoid output), K >= 2 = classes 0..K-1 (softmax);
        default: the checkpoint's, else 1.  A checkpoint with another number
        of classes gets a new ``final_conv``.  ``dims``/``depths``/
        ``depths_decoder``/``d_state``/``drop_path_rate``/``input_channels``
        shape a model trained from scratch (default: VM-UNet's).
    Recipe
        ``preset`` and the optimiser/schedule fields above.
        ``input_scale``: the patch embedding's weight is trained as if the
        0-255 input were multiplied by this (its learning rate is scaled by
        it and its weight decay by the inverse, and a new model's initial
        weight is scaled by it), because the LayerNorm right after it makes
        a network fed 0-255 all but blind to brightness until that weight
        has shrunk 255-fold: from scratch on grey images it otherwise
        barely learns.  The saved model still takes 0-255 inputs.  ``1.0``
        is the original optimiser exactly.  An epoch is
        ``steps_per_epoch`` steps of ``batch_size`` random tiles; by default
        enough tiles to cover the training images once, and at least the
        preset's minimum.  ``time_limit`` (seconds) ends the run early, after
        a final validation.  ``freeze_encoder``: train only the decoder and
        the head, keeping the patch embedding and the encoder stages as the
        starting checkpoint has them -- no gradients flow through the
        encoder, so steps are faster (1.7x for the demo-sized model on a
        CPU, ``benchmarks/training.py`` part 3), at some cost in the Dice it
        finally reaches; for fine-tuning a trained model on a few corrected
        slices, not for training from scratch.
    Data
        ``tile_size``: training crop (multiple of 32; default: the
        checkpoint's, else 256).  ``normalization``: as inference (default:
        the checkpoint's, else per-image min-max to [0, 255]).
        ``val_fraction``: share of annotated slices held out (at least one
        whenever there are two).  ``annotation``: ``'dense'`` -- a slice
        with any label is painted completely, its unpainted pixels are
        background; ``'sparse'`` -- scribbles as in napari-convpaint and
        ilastik (0 = not annotated, 1 = background, k + 1 = class k): a
        slice with any stroke is used and the losses and the validation
        count painted pixels only (:mod:`napari_vmunet.rules.annotation`).
    Output
        ``output``: the best checkpoint (``.safetensors``); the resumable
        ``last`` checkpoint goes next to it (:func:`last_path`).  ``None``
        trains in memory only.  ``resume`` continues from ``last``.
    """

    output: str | Path | None = None
    preset: str | None = None
    init: str | Path | None = None
    resume: bool = False
    # model
    num_classes: int | None = None
    class_names: Sequence[str] | None = None
    input_channels: int | None = None
    dims: Sequence[int] | None = None
    depths: Sequence[int] | None = None
    depths_decoder: Sequence[int] | None = None
    d_state: int | None = None
    drop_path_rate: float | None = None
    # recipe (None: from the preset)
    epochs: int | None = None
    lr: float | None = None
    weight_decay: float | None = None
    betas: tuple[float, float] | None = None
    eps: float | None = None
    batch_size: int | None = None
    t_max: int | None = None
    eta_min: float | None = None
    min_steps_per_epoch: int | None = None
    steps_per_epoch: int | None = None
    time_limit: float | None = None
    input_scale: float = INPUT_SCALE
    freeze_encoder: bool = False
    # data
    tile_size: int | None = None
    normalization: str | Mapping | None = None
    #: None: on, except for a new model on slices of volumes (see Trainer)
    augment: bool | None = None
    annotation: Literal['dense', 'sparse'] = 'dense'
    val_fraction: float = 0.2
    # machine
    device: str = 'auto'
    seed: int = 0
    num_workers: int = 0
    num_threads: int | None = None
    # provenance
    command: str | None = None
    training_data: str | None = None
    notes: str | None = None
    # replace an earlier run's checkpoints at ``output`` (without resuming)
    overwrite: bool = False
    #: recipe fields the caller set (the rest came from defaults or the
    #: preset); computed when left None
    explicit: frozenset | None = dataclasses.field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.init is not None:
            self.init = str(self.init)
        if self.explicit is None:
            self.explicit = frozenset(
                f.name
                for f in dataclasses.fields(self)
                if f.name in RECIPE_FIELDS and getattr(self, f.name) != f.default
            )
        if self.preset is None:
            self.preset = default_preset(self.init)
        if self.preset not in PRESETS:
            raise ValueError(
                f'unknown preset {self.preset!r}; use one of {", ".join(PRESETS)}'
            )
        for key, value in PRESETS[self.preset].items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        if self.t_max is None:
            self.t_max = self.epochs
        if self.output is not None:
            self.output = Path(self.output).expanduser()
        if self.class_names is not None:
            self.class_names = [str(n) for n in self.class_names]
        for key in ('dims', 'depths', 'depths_decoder'):
            if getattr(self, key) is not None:
                setattr(self, key, [int(v) for v in getattr(self, key)])
        self.betas = tuple(float(b) for b in self.betas)
        self._check()

    def _check(self) -> None:
        _positive_int(self.epochs, 'epochs')
        _positive_int(self.batch_size, 'batch_size')
        _positive_int(self.t_max, 't_max')
        _positive_int(self.min_steps_per_epoch, 'min_steps_per_epoch')
        if self.steps_per_epoch is not None:
            _positive_int(self.steps_per_epoch, 'steps_per_epoch')
        if self.num_classes is not None:
            _positive_int(self.num_classes, 'num_classes')
        if self.input_channels is not None:
            _positive_int(self.input_channels, 'input_channels')
        for key in ('lr', 'eps'):
            value = getattr(self, key)
            if not (_finite(value) and value > 0):
                raise ValueError(f'{key} must be a positive number, got {value!r}')
        for key in ('weight_decay', 'eta_min'):
            value = getattr(self, key)
            if not (_finite(value) and value >= 0):
                raise ValueError(f'{key} must be >= 0, got {value!r}')
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f'betas must be two numbers in [0, 1), got {self.betas}')
        if self.tile_size is not None:
            check_tile(self.tile_size)
        check_annotation(self.annotation)
        if not (_finite(self.val_fraction) and 0 <= self.val_fraction < 1):
            raise ValueError(
                f'val_fraction must be in [0, 1), got {self.val_fraction!r}'
            )
        if not (_finite(self.input_scale) and self.input_scale > 0):
            raise ValueError(f'input_scale must be positive, got {self.input_scale!r}')
        if self.time_limit is not None and not (
            _finite(self.time_limit) and self.time_limit > 0
        ):
            raise ValueError(
                f'time_limit must be positive seconds, got {self.time_limit}'
            )
        if not isinstance(self.num_workers, int) or self.num_workers < 0:
            raise ValueError(f'num_workers must be >= 0, got {self.num_workers!r}')
        if self.num_threads is not None:
            _positive_int(self.num_threads, 'num_threads')
        if self.output is not None and self.output.suffix != '.safetensors':
            raise ValueError(
                f'output {self.output} must end in .safetensors (the checkpoint '
                'format napari-vmunet writes)'
            )
        if self.dims is not None and len(self.dims) != 4:
            raise ValueError(
                f'dims needs 4 stage widths, e.g. 8,16,32,64; got {self.dims}'
            )
        if self.dims is not None and (
            self.dims[0] < 4
            or self.dims[0] % 4
            or any(b != 2 * a for a, b in zip(self.dims, self.dims[1:], strict=False))
        ):
            raise ValueError(
                'dims must double from stage to stage, starting at a multiple '
                f'of 4 (e.g. 8,16,32,64 or 96,192,384,768); got {self.dims}'
            )
        if self.drop_path_rate is not None and not 0 <= self.drop_path_rate < 1:
            raise ValueError(
                f'drop_path_rate must be in [0, 1), got {self.drop_path_rate}'
            )
        vmamba = self.init is not None and self.init.startswith(VMAMBA_PREFIX)
        if vmamba and not self.init[len(VMAMBA_PREFIX) :].strip():
            raise ValueError('init "vmamba:" needs a path: vmamba:PATH')

    @property
    def scratch_options(self) -> dict[str, Any]:
        """The architecture options given for a model built from scratch."""
        keys = ('dims', 'depths', 'depths_decoder', 'd_state', 'drop_path_rate')
        return {k: getattr(self, k) for k in keys if getattr(self, k) is not None}

    @property
    def auto_preset(self) -> bool:
        """Whether the preset was chosen by the starting point, not given."""
        return 'preset' not in self.explicit

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes`` (validated again); changed recipe fields
        count as set by the caller.  Fields the preset filled are filled
        again, so a copy with another ``init`` or ``preset`` gets that
        preset's values, not the old ones."""
        given = self.explicit | (set(changes) & set(RECIPE_FIELDS))
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        for key in set(RECIPE_FIELDS) - given:
            changes.setdefault(key, defaults[key])
        return dataclasses.replace(self, **changes, explicit=frozenset(given))

    def recipe(self) -> dict[str, Any]:
        """The settings that define a run (:data:`RECIPE_FIELDS`), as plain
        values: saved with the resumable checkpoint, so that a resume goes on
        with the same recipe."""
        out = {}
        for key in RECIPE_FIELDS:
            value = getattr(self, key)
            if key == 't_max' and 't_max' not in self.explicit:
                value = None  # follows the number of epochs
            elif key == 'normalization' and value is not None:
                from ..checkpoint import parse_normalization

                value = parse_normalization(value)
            elif isinstance(value, tuple):
                value = list(value)
            out[key] = value
        return out

    def check_output(self) -> None:
        """Refuse to lose files, before any work: the starting model is never
        written over, and an earlier run's checkpoints at ``output`` are only
        replaced by resuming it or with ``overwrite``.  Raises
        :class:`OutputExistsError` (an ``OSError``) or ``ValueError``, and
        ``PermissionError`` when the folder cannot be written."""
        if self.output is None:
            return
        from .._files import check_writable_folder

        outputs = [self.output, last_path(self.output)]
        if self.init and not self.init.startswith(VMAMBA_PREFIX):
            init = Path(self.init).expanduser()
            for out in outputs:
                if _same_file(init, out):
                    raise ValueError(
                        f'the output {out} is the starting model itself (init); '
                        'training would replace the model it starts from: '
                        'choose another output file'
                    )
        if not self.resume and not self.overwrite:
            existing = [p for p in outputs if p.exists()]
            if existing:
                raise OutputExistsError(
                    f'{", ".join(map(str, existing))} exist(s) from an earlier '
                    'run; resume that run (--resume), choose another output, or '
                    'replace it (--overwrite)',
                    existing,
                )
        check_writable_folder(self.output.parent, 'checkpoints')

    def to_dict(self) -> dict[str, Any]:
        """Plain values (paths as strings), e.g. for logs."""
        out = dataclasses.asdict(self)
        out['output'] = None if self.output is None else str(self.output)
        return out


class OutputExistsError(FileExistsError):
    """A training would replace an earlier run's checkpoints."""

    def __init__(self, message: str, paths: Sequence[Path] = ()):
        super().__init__(message)
        self.paths = list(paths)

    def __reduce__(self):
        return (type(self), (str(self), self.paths))


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and a.samefile(b)
    except OSError:
        return False


def default_preset(init: str | Path | None) -> str:
    """The preset for a run that names none: ``'finetune'`` for a trained
    checkpoint, ``'scratch'`` for a new model or ImageNet VMamba weights
    (their decoder and head are new, and the original trains them at 1e-3)."""
    if init is None or str(init).startswith(VMAMBA_PREFIX):
        return 'scratch'
    return 'finetune'


def last_path(output: str | Path) -> Path:
    """The resumable checkpoint that goes with ``output``:
    ``model.safetensors`` -> ``model.last.safetensors``."""
    output = Path(output)
    return output.with_name(f'{output.stem}.last{output.suffix}')


def _positive_int(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f'{name} must be a positive integer, got {value!r}')


def _finite(value: Any) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
    )
