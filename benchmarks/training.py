"""Training: speed per step, and the Dice a fixed time budget buys.

Part 1 -- optimisation steps per second (forward, loss, backward, AdamW) at
256x256, batch 4, through :meth:`Trainer.train_step`: the full VM-UNet
(ISIC configuration, 27.4 M parameters), a small (dims 16..128) and a tiny
(8..64) one, and MONAI ``UNet`` s (two residual units per level) of about
the same sizes (26.0 M, 0.91 M, 0.41 M).

Part 2 -- sample efficiency on real data: train from scratch on the top half
of the nuclei sample (human labels) for ``--budget`` seconds, then measure
Dice on the unseen bottom half with the same sliding-window validation.  The
small VM-UNet and a MONAI ``UNet`` of similar parameter count run through
the *same* :class:`Trainer` (tiles, augmentation, BCE + Dice, AdamW lr 1e-3,
wd 1e-2, batch 4 at 128x128), so only the network differs.  The UNet sees
inputs scaled to 0-1, as VM-UNet's patch embedding is trained (see
``TrainConfig.input_scale``).

Part 3 -- fine-tuning, all weights vs decoder only (``freeze_encoder``):
the built-in demo-nuclei model meets the nuclei image with inverted
intensities (a new imaging condition it gets wrong), is fine-tuned with the
``finetune`` preset on the inverted rows 0-319 for ``--budget`` seconds each
way, and is scored on the inverted rows 320-511, which neither the demo
model nor the fine-tuning saw.

    python benchmarks/training.py [--budget 60] [--steps 5] [--threads 2]
                                  [--device cpu] [--skip-full] [--seeds 0,1]
                                  [--only-finetune]

``--step-ratio`` runs only the paired step-cost check of issue #18: the
dock's small VM-UNet (24..192, 2.17 M) against a MONAI ``UNet`` of the same
size (18..288, 2.06 M), one training step each at 256x256, batch 4,
interleaved round by round; the median of the per-round ratios is the
figure (target <= 3x):

    python benchmarks/training.py --step-ratio --rounds 7 --threads 1 [--clock cpu]

The lead runs it on a quiet machine; numbers from a busy one are not
comparable.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from monai.networks.nets import UNet
from torch import nn

from _common import CLOCKS, machine_line
from napari_vmunet.io import load_sample
from napari_vmunet.training import (
    Step,
    TrainConfig,
    Trainer,
    TrainingPair,
    evaluate,
)
from napari_vmunet.training.initialize import InitialModel
from napari_vmunet.zoo import builtin_checkpoints

VMUNETS = {
    'VM-UNet full (96..768)': [96, 192, 384, 768],
    'VM-UNet small (16..128)': [16, 32, 64, 128],
    'VM-UNet tiny (8..64)': [8, 16, 32, 64],
}
#: the dock's "small" model from scratch (_widgets.training.SCRATCH_SMALL;
#: not imported: that module needs Qt) and the MONAI UNet closest in size
DOCK_SMALL = [24, 48, 96, 192]
SAME_SIZE_UNET = (18, 36, 72, 144, 288)
UNETS = {
    'MONAI UNet 64..1024': (64, 128, 256, 512, 1024),
    'MONAI UNet 12..192': (12, 24, 48, 96, 192),
    'MONAI UNet 8..128': (8, 16, 32, 64, 128),
}


class SigmoidUNet(nn.Module):
    """MONAI's UNet with VM-UNet's interface: 0-255 in, probability out."""

    num_classes = 1
    input_channels = 3

    def __init__(self, channels):
        super().__init__()
        self.net = UNet(
            spatial_dims=2,
            in_channels=3,
            out_channels=1,
            channels=channels,
            strides=(2,) * (len(channels) - 1),
            num_res_units=2,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(x / 255.0))


class BenchTrainer(Trainer):
    """The regular trainer with the network chosen by the benchmark."""

    network: nn.Module | None = None

    def build_model(self, data_channels):
        if self.network is None:
            return super().build_model(data_channels)
        return InitialModel(self.network, f'scratch ({type(self.network).__name__})')


def parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def make_trainer(network, pairs, device, **overrides) -> BenchTrainer:
    """``network``: VM-UNet ``dims`` (built by the trainer, as a user's
    model from scratch is) or another network."""
    if isinstance(network, list):
        overrides['dims'], network = network, None
    config = TrainConfig(preset='full', device=device, **overrides)
    BenchTrainer.network = network
    try:
        return BenchTrainer(config, pairs)
    finally:
        BenchTrainer.network = None


def step_speed(network, pairs, device, steps: int) -> tuple[float, int]:
    """Median seconds per optimisation step at 256x256, batch 4, and the
    parameter count."""
    trainer = make_trainer(network, pairs, device, tile_size=256, batch_size=4)
    batch = [trainer.dataset[i] for i in range(4)]
    x = torch.stack([b[0] for b in batch])
    y = torch.stack([b[1] for b in batch])
    trainer.train_step(x, y, 1)  # warm-up
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        trainer.train_step(x, y, 1)
        if trainer.device.type == 'cuda':
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times), parameters(trainer.model)


def step_ratio(pairs, device, rounds: int, clock) -> None:
    """One training step of the dock's small VM-UNet vs the same-size MONAI
    UNet at 256x256, batch 4, interleaved round by round (rotating order)."""
    contenders = {
        f'VM-UNet dock small {DOCK_SMALL[0]}..{DOCK_SMALL[-1]}': list(DOCK_SMALL),
        f'MONAI UNet {SAME_SIZE_UNET[0]}..{SAME_SIZE_UNET[-1]}': SigmoidUNet(
            SAME_SIZE_UNET
        ),
    }
    steps = {}
    for name, network in contenders.items():
        torch.manual_seed(0)
        trainer = make_trainer(network, pairs, device, tile_size=256, batch_size=4)
        batch = [trainer.dataset[i] for i in range(4)]
        x = torch.stack([b[0] for b in batch])
        y = torch.stack([b[1] for b in batch])
        trainer.train_step(x, y, 1)  # warm-up
        steps[name] = (trainer, x, y)
    names = list(steps)
    times = {n: [] for n in names}
    for r in range(rounds):
        for n in names[r % 2 :] + names[: r % 2]:
            trainer, x, y = steps[n]
            start = clock()
            trainer.train_step(x, y, 1)
            if trainer.device.type == 'cuda':
                torch.cuda.synchronize()
            times[n].append(clock() - start)
    print(f'{"model":<28}{"params":>10}{"s/step":>10}')
    for n in names:
        params = parameters(steps[n][0].model)
        print(f'{n:<28}{params / 1e6:>9.2f}M{statistics.median(times[n]):>10.3f}')
    ratio = statistics.median(a / b for a, b in zip(*times.values(), strict=True))
    verdict = 'PASS' if ratio <= 3 else 'FAIL'
    print(f'VM-UNet / UNet per step: {ratio:.2f}x (target <= 3x): {verdict}')


def budget_dice(network, top, bottom, device, budget: float, seed: int):
    """Train on ``top`` for ``budget`` s; Dice on ``bottom``."""
    trainer = make_trainer(
        network,
        [top],
        device,
        tile_size=128,
        batch_size=4,
        epochs=10_000,
        t_max=10_000,  # ~constant lr: the budget, not the schedule, ends it
        steps_per_epoch=25,
        time_limit=budget,
        seed=seed,
    )
    untrained = _dice(trainer, bottom)
    steps = sum(isinstance(e, Step) for e in trainer.run())
    return untrained, _dice(trainer, bottom), steps, parameters(trainer.model)


def finetune_dice(top, bottom, device, budget: float, freeze: bool, seed: int):
    """Fine-tune demo-nuclei on ``top`` for ``budget`` s; Dice on ``bottom``
    before and after, steps taken, and seconds per step."""
    config = TrainConfig(
        init=str(builtin_checkpoints()['demo-nuclei']),
        preset='finetune',
        device=device,
        epochs=10_000,
        steps_per_epoch=10,
        time_limit=budget,
        seed=seed,
        freeze_encoder=freeze,
        val_fraction=0.0,
    )
    trainer = Trainer(config, [top])
    before = _dice(trainer, bottom)
    start = time.perf_counter()
    steps = sum(isinstance(e, Step) for e in trainer.run())
    seconds = time.perf_counter() - start
    return before, _dice(trainer, bottom), steps, seconds / max(steps, 1)


def _dice(trainer, bottom) -> float:
    samples = trainer.prepare(bottom)
    result = evaluate(
        trainer.model,
        samples,
        loss_fn=trainer.loss_fn,
        class_names=trainer.class_names,
        num_classes=1,
        device=trainer.device,
    )
    return result.mean_dice or 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--budget', type=float, default=60.0, help='seconds per model')
    parser.add_argument('--steps', type=int, default=5, help='timed steps per model')
    parser.add_argument('--threads', type=int, default=None)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--seeds', default='0', help='comma-separated training seeds')
    parser.add_argument('--skip-full', action='store_true', help='no 27 M models')
    parser.add_argument('--skip-speed', action='store_true')
    parser.add_argument('--only-finetune', action='store_true', help='Part 3 only')
    parser.add_argument(
        '--step-ratio', action='store_true', help='only the paired step-cost check'
    )
    parser.add_argument('--rounds', type=int, default=7, help='for --step-ratio')
    parser.add_argument(
        '--clock',
        choices=list(CLOCKS),
        default='wall',
        help="for --step-ratio: wall or this process's CPU time (shared machines)",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    image, labels = load_sample('nuclei')
    top = TrainingPair(image.data[:256], labels[:256], name='nuclei top')
    bottom = [TrainingPair(image.data[256:], labels[256:], name='nuclei bottom')]
    print(machine_line())
    print(f'{torch.get_num_threads()} thread(s), device {args.device}')
    if args.step_ratio:
        print(f'{args.clock} time')
        step_ratio([top], args.device, args.rounds, CLOCKS[args.clock])
        return

    seeds = [int(s) for s in args.seeds.split(',')]
    if not args.only_finetune:
        parts_1_and_2(args, top, bottom, seeds)
    print(
        f'\nPart 3: fine-tune demo-nuclei on inverted rows 0-319 for '
        f'{args.budget:g} s, Dice on inverted rows 320-511'
    )
    inverted = image.data.max() - image.data
    tune_top = TrainingPair(inverted[:320], labels[:320], name='inverted top')
    tune_bottom = [TrainingPair(inverted[320:], labels[320:], name='inverted bottom')]
    print(
        f'{"trained":<22}{"seed":>6}{"steps":>7}{"s/step":>8}{"before":>8}{"after":>8}'
    )
    for seed in seeds:
        for freeze in (False, True):
            torch.manual_seed(seed)
            before, after, steps, per_step = finetune_dice(
                tune_top, tune_bottom, args.device, args.budget, freeze, seed
            )
            name = 'decoder + head only' if freeze else 'all weights'
            print(
                f'{name:<22}{seed:>6}{steps:>7}{per_step:>8.3f}'
                f'{before:>8.3f}{after:>8.3f}',
                flush=True,
            )


def parts_1_and_2(args, top, bottom, seeds) -> None:
    if not args.skip_speed:
        print('\nPart 1: one training step at 256x256, batch 4')
        print(f'{"model":<26}{"params":>10}{"s/step":>10}{"steps/s":>10}')
        rows = [(name, lambda d=d: list(d)) for name, d in VMUNETS.items()]
        rows += [(name, lambda c=c: SigmoidUNet(c)) for name, c in UNETS.items()]
        for name, build in rows:
            if args.skip_full and ('full' in name or '64..1024' in name):
                continue
            torch.manual_seed(0)
            seconds, n = step_speed(build(), [top], args.device, args.steps)
            print(
                f'{name:<26}{n / 1e6:>9.2f}M{seconds:>10.3f}{1 / seconds:>10.2f}',
                flush=True,
            )

    print(
        f'\nPart 2: train on the top half of the nuclei sample for '
        f'{args.budget:g} s, Dice on the bottom half'
    )
    print(
        f'{"model":<26}{"params":>10}{"seed":>6}{"steps":>7}'
        f'{"untrained":>11}{"trained":>9}'
    )
    contenders = [
        ('VM-UNet small (16..128)', lambda: [16, 32, 64, 128]),
        ('MONAI UNet 12..192', lambda: SigmoidUNet(UNETS['MONAI UNet 12..192'])),
    ]
    results: dict[str, list[float]] = {}
    for seed in seeds:
        for name, build in contenders:
            torch.manual_seed(seed)
            before, after, steps, n = budget_dice(
                build(), top, bottom, args.device, args.budget, seed
            )
            results.setdefault(name, []).append(after)
            print(
                f'{name:<26}{n / 1e6:>9.2f}M{seed:>6}{steps:>7}'
                f'{before:>11.3f}{after:>9.3f}',
                flush=True,
            )
    if len(seeds) > 1:
        for name, values in results.items():
            print(f'{name}: mean Dice {np.mean(values):.3f} over {len(values)} seeds')


if __name__ == '__main__':
    main()
