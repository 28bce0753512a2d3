"""``napari-vmunet train``: train or fine-tune VM-UNet on image/label files.

A thin front end over :mod:`napari_vmunet.training` (the napari dock and
notebooks use the same trainer): read the files, build a
:class:`~napari_vmunet.training.TrainConfig`, follow the run's events with a
tqdm bar and print the per-class validation Dice of the best model.
Ctrl-C once stops gracefully after the current step (``--resume`` continues
from there); twice aborts.
"""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
import threading
from pathlib import Path

from . import UserError
from ._text import printable, printable_lines

_ORDER = (
    'init',
    'preset',
    'epochs',
    'steps_per_epoch',
    'size',
    'batch_size',
    'lr',
    'num_classes',
    'class_names',
    'dims',
    'normalization',
    'val_fraction',
    'device',
    'seed',
    'time_limit',
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        'train',
        help='train or fine-tune a model on images and label maps',
        description='Train VM-UNet on pairs of images and label maps (NIfTI, '
        'TIFF, PNG). In volumes, slices with any label are used, slice by '
        'slice. One class (default): every non-zero label is foreground, so '
        'instance labels work as they are; --num-classes K: labels are '
        'class indices 0..K-1; --annotation sparse: scribbles (0 = not '
        'annotated, 1 = background, k+1 = class k). Writes the best '
        'checkpoint (by validation Dice) to --output and a resumable one next '
        'to it (*.last.safetensors).',
    )
    _add_data_options(parser)
    _add_recipe_options(parser)
    _add_model_options(parser)
    _add_run_options(parser)
    _add_provenance_options(parser)
    parser.add_argument('--quiet', action='store_true', help='no progress bar')
    parser.set_defaults(func=run)


def _add_data_options(parser: argparse.ArgumentParser) -> None:
    """The files: images and labels in, checkpoints out (a new run, a
    resumed one, or one that replaces an earlier run)."""
    add = parser.add_argument
    add('--images', nargs='+', required=True, metavar='IMG', help='image files')
    add(
        '--labels',
        nargs='+',
        required=True,
        metavar='LAB',
        help='label maps, one per image',
    )
    add(
        '--output', required=True, metavar='CKPT', help='best checkpoint (.safetensors)'
    )
    add(
        '--init',
        metavar='CKPT',
        help='start from this checkpoint, or from ImageNet VMamba-S weights '
        'with vmamba:PATH (default: random weights)',
    )
    add('--resume', action='store_true', help='continue the run that wrote --output')
    add(
        '--overwrite',
        action='store_true',
        help='replace the checkpoints of an earlier run at --output (without '
        'this, an existing output is refused unless --resume)',
    )


def _add_recipe_options(parser: argparse.ArgumentParser) -> None:
    """The training recipe: a preset and what may override it."""
    add = parser.add_argument
    add(
        '--preset',
        choices=('scratch', 'finetune', 'full'),
        default=None,
        help='scratch: a new model from a few slices (lr 1e-3, 60 epochs, batch '
        '4; the default without --init); finetune: a trained model on a few '
        'corrected slices (lr 1e-4, 20 epochs, batch 4; the default with '
        '--init); full: the original recipe (lr 1e-3, cosine T_max 50, 300 '
        'epochs, batch 32)',
    )
    add('--epochs', type=int, help="number of epochs (default: the preset's)")
    add('--steps-per-epoch', type=int, help='optimisation steps per epoch')
    add('--size', type=int, help='training tile size, a multiple of 32 (default 256)')
    add('--batch-size', type=int, help='tiles per step')
    add('--lr', type=float, help='learning rate')


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    """The model and its labels: classes, widths, normalisation and how
    the label maps are annotated."""
    add = parser.add_argument
    add('--num-classes', type=int, help='output classes (1 = foreground vs background)')
    add('--class-names', metavar='A,B,...', help='names, background first')
    add(
        '--dims',
        metavar='D1,D2,D3,D4',
        help='stage widths of a new model, e.g. 8,16,32,64',
    )
    add(
        '--normalization',
        metavar='MODE',
        help='minmax (default), window:LOW,HIGH or percentile:LOW,HIGH',
    )
    add(
        '--annotation',
        choices=('dense', 'sparse'),
        default='dense',
        help='dense (default): a slice with any label is painted completely, '
        'unpainted pixels are background; sparse: scribbles as in '
        'napari-convpaint/ilastik -- 0 = not annotated, 1 = background, '
        'k+1 = class k (one class: 2 = foreground); only painted pixels train',
    )


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    """How the run goes: validation share, device, seed, time, threads,
    augmentation and what is trained."""
    add = parser.add_argument
    add('--val-fraction', type=float, default=0.2, help='share held out (default 0.2)')
    add('--device', default='auto', help='auto (default), cpu, cuda, cuda:N or mps')
    add('--seed', type=int, default=0, help='random seed (default 0)')
    add('--time-limit', type=float, metavar='SECONDS', help='stop after this long')
    add('--threads', type=int, help='CPU threads for torch')
    add('--no-augment', action='store_true', help='random crops only')
    add(
        '--augment',
        action='store_true',
        help='flips, rotations and intensity jitter even where they are off by '
        'default (a new model on slices of volumes)',
    )
    add(
        '--freeze-encoder',
        action='store_true',
        help='fine-tune only the decoder and head (faster steps; '
        'needs --init or --resume)',
    )


def _add_provenance_options(parser: argparse.ArgumentParser) -> None:
    """What the checkpoint records about the run besides the command."""
    add = parser.add_argument
    add('--notes', help='free text stored in the checkpoint provenance')
    add(
        '--training-data',
        metavar='TEXT',
        help='describe the training data in the checkpoint provenance '
        '(default: the file names and slice counts)',
    )


def run(args: argparse.Namespace) -> int:
    from ..training import TrainConfig, Trainer
    from ..training.ddp import launched_by_torchrun

    distributed = launched_by_torchrun()
    if distributed:
        from ..training.ddp import DistributedTrainer, init_distributed

        rank, world, args.device = init_distributed(args.device)
        args.quiet = args.quiet or rank != 0
    config = TrainConfig(
        output=args.output,
        preset=args.preset,
        init=_init(args.init),
        resume=args.resume,
        num_classes=args.num_classes,
        class_names=_names(args.class_names),
        dims=_dims(args.dims),
        epochs=args.epochs,
        steps_per_epoch=args.steps_per_epoch,
        tile_size=args.size,
        batch_size=args.batch_size,
        lr=args.lr,
        normalization=args.normalization,
        val_fraction=args.val_fraction,
        device=args.device,
        seed=args.seed,
        time_limit=args.time_limit,
        freeze_encoder=args.freeze_encoder,
        num_threads=args.threads,
        augment=False if args.no_augment else (True if args.augment else None),
        annotation=args.annotation,
        command=command_line(args),
        notes=args.notes,
        training_data=args.training_data,
        overwrite=args.overwrite,
    )
    config.check_output()  # before reading any data: nothing to lose, no wait
    pairs = read_pairs(args.images, args.labels)
    trainer = (DistributedTrainer if distributed else Trainer)(config, pairs)
    stop = threading.Event()
    with _graceful_ctrl_c(stop), _Progress(args.quiet) as progress:
        finished = trainer.fit(progress.update, stop=stop)
    if distributed:
        return _finish_distributed(trainer, finished)
    print(printable_lines(report(finished, trainer)))
    return 0 if finished.reason == 'completed' else 130


def _finish_distributed(trainer, finished) -> int:
    """Rank 0 reports, including whether every rank ended with the same
    weights (they must: DDP averages the gradients)."""
    import torch.distributed as dist

    from ..training.ddp import weights_checksum

    sums = [None] * trainer.world
    dist.all_gather_object(sums, weights_checksum(trainer.model))
    if trainer.is_main_process:
        print(printable_lines(report(finished, trainer)))
        same = all(s == sums[0] for s in sums)
        listed = ', '.join(f'{s:.10g}' for s in sums)
        print(
            f'ranks: {trainer.world}; weights identical on every rank: '
            f'{"yes" if same else "NO"} (checksums {listed})'
        )
    trainer.close()
    return 0 if finished.reason == 'completed' else 130


def read_pairs(images: list[str], labels: list[str]) -> list:
    """``TrainingPair`` s from files, checked for count and shape."""
    from ..io import read_image
    from ..training import TrainingPair

    if len(images) != len(labels):
        raise UserError(
            f'got {len(images)} image(s) but {len(labels)} label map(s); give '
            'one --labels file per --images file, in the same order'
        )
    pairs = []
    for image_path, labels_path in zip(images, labels, strict=True):
        image = read_image(image_path)
        lab = read_image(labels_path)
        if lab.channel_axis is not None:
            raise UserError(
                f'{labels_path} has channels ({lab.axes}); a label map has one '
                'integer per pixel'
            )
        if lab.spatial_shape != image.spatial_shape:
            raise UserError(
                f'{labels_path} is {lab.spatial_shape} but {image_path} is '
                f'{image.spatial_shape}; pair each image with its own labels'
            )
        slice_axis = None
        if 'Z' in image.axes:
            slice_axis = image.axes.index('Z')
        pairs.append(
            TrainingPair(
                image.data,
                lab.data,
                channel_axis=None if image.rgb else image.channel_axis,
                rgb=image.rgb,
                slice_axis=slice_axis,
                name=Path(image_path).name,
            )
        )
    return pairs


def command_line(args: argparse.Namespace) -> str:
    """The command, rebuilt from the parsed options (provenance)."""
    words = [
        'napari-vmunet',
        'train',
        '--images',
        *args.images,
        '--labels',
        *args.labels,
    ]
    words += ['--output', args.output]
    for key in _ORDER:
        value = getattr(args, key)
        if value is not None:
            words += [f'--{key.replace("_", "-")}', str(value)]
    words += ['--resume'] if args.resume else []
    words += ['--overwrite'] if args.overwrite else []
    words += ['--no-augment'] if args.no_augment else []
    words += ['--augment'] if args.augment else []
    words += ['--freeze-encoder'] if args.freeze_encoder else []
    if args.annotation != 'dense':
        words += ['--annotation', args.annotation]
    return shlex.join(words)


def report(finished, trainer) -> str:
    """What the user needs at the end: where the model is and how good."""
    lines = []
    if finished.reason == 'error':
        lines.append(f'training failed: {finished.message}')
    elif finished.reason == 'stopped':
        lines.append(f'{finished.message}; continue with --resume')
    if finished.best_path:
        lines.append(
            f'best model: {finished.best_path} (epoch {finished.best_epoch} '
            f'of {finished.epochs_done})'
        )
    if finished.best_val_dice:
        width = max(len(n) for n in finished.best_val_dice)
        lines.append(f'validation Dice ({len(trainer.val_samples)} slice(s)):')
        for name, value in finished.best_val_dice.items():
            shown = (
                'n/a (not in any validation slice)'
                if value != value
                else f'{value:.3f}'
            )
            lines.append(f'  {name:<{width}}  {shown}')
        if finished.best_mean_dice is not None and len(finished.best_val_dice) > 1:
            lines.append(f'  {"mean":<{width}}  {finished.best_mean_dice:.3f}')
    elif finished.reason != 'error':
        lines.append(
            'no validation slices (one annotated slice only): the best model '
            'has the lowest training loss'
        )
    if finished.last_path:
        lines.append(f'resumable checkpoint: {finished.last_path}')
    return '\n'.join(lines)


class _Progress:
    """A tqdm bar over epochs, showing the step, loss and validation Dice."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.bar = None

    def __enter__(self) -> _Progress:
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()

    def update(self, event) -> None:
        from tqdm import tqdm

        from ..training import EpochEnd, Started, Step

        if isinstance(event, Started):
            for note in event.notes:
                print(f'note: {printable(note)}', file=sys.stderr)
            if not self.quiet:
                print(printable(event.describe()), file=sys.stderr)
                self.bar = tqdm(
                    total=event.total_epochs,
                    initial=event.start_epoch,
                    unit='epoch',
                    dynamic_ncols=True,
                )
        elif self.bar is None:
            return
        elif isinstance(event, Step):
            self.bar.set_postfix_str(
                f'step {event.step}/{event.steps_per_epoch} loss {event.loss:.4f}'
            )
        elif isinstance(event, EpochEnd):
            dice = 'n/a' if event.mean_dice is None else f'{event.mean_dice:.3f}'
            star = ' *' if event.improved else ''
            self.bar.set_postfix_str(
                f'loss {event.train_loss:.4f} val Dice {dice}{star}'
            )
            self.bar.update(1)


class _graceful_ctrl_c:
    """First Ctrl-C: stop after this step (resumable); second: abort."""

    def __init__(self, stop: threading.Event):
        self.stop = stop
        self.previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)

    def _handle(self, signum, frame) -> None:
        if self.stop.is_set():
            raise KeyboardInterrupt
        self.stop.set()
        print('\nstopping after this step (Ctrl-C again to abort) ...', file=sys.stderr)


def _init(text: str | None) -> str | None:
    """``--init``: a built-in model's name, a path, or ``vmamba:PATH``."""
    from ..training.config import VMAMBA_PREFIX
    from ..zoo import resolve_model

    if text is None or text.startswith(VMAMBA_PREFIX):
        return text
    return str(resolve_model(text))


def _dims(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(v) for v in text.split(',')]
    except ValueError:
        raise UserError(
            f'--dims {text!r}: give four comma-separated widths, e.g. 8,16,32,64'
        ) from None


def _names(text: str | None) -> list[str] | None:
    if text is None:
        return None
    return [n.strip() for n in text.split(',')]
