"""Few-shot training from scratch: VM-UNet against a conv U-Net and a copy.

The setting of issue #19, rebuilt on the bundled samples: a user annotates a
handful of slices of a new kind of image and trains a *new* model on them.
Every model gets the same budget -- 60 epochs x 10 steps x 4 random tiles of
128x128 -- through the same :class:`~napari_vmunet.training.Trainer` (same
tiles, augmentation, loss and AdamW), so only the network and the recipe
differ.

Settings
    ``brain-wm``: 21 axial slices of the MNI152 brain (80-100), every third
    annotated (7 slices, white matter), tested on the 14 in between.
    ``brain-tissue``: the same slices, grey and white matter (3 classes).
    ``nuclei-corner``: the 192x192 top-left corner of the nuclei sample,
    tested on rows 192-511 (all nuclei, one class).
Contenders
    ``copy``: each test slice gets the mask of the nearest annotated slice
    (volumes only).  ``unet``: MONAI ``UNet`` 32..512 with two residual units
    (6.5 M parameters), the recipe of the new-model default.  ``vm``: the
    small VM-UNet (24..192, the dock's *new model (small)*), with the
    recipe a new model gets by default.  ``vm-finetune``: the same network
    with the *fine-tune* preset (lr 1e-4), the default before issue #19.
    ``vm-noaug``: the default recipe without augmentation.

Printed per run: Dice on the unseen slices (mean over foreground classes,
pooled over all test pixels), Dice on the model's own training slices, the
predicted foreground fraction on the test slices over the true one, and the
seconds the run took.

    python benchmarks/fewshot.py [--settings brain-wm,brain-tissue,nuclei-corner]
        [--contenders copy,unet,vm,vm-finetune] [--seeds 0] [--threads 1]
        [--epochs 60]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from monai.networks.nets import UNet
from torch import nn

from napari_vmunet.io import load_sample
from napari_vmunet.training import TrainConfig, Trainer, TrainingPair
from napari_vmunet.training.initialize import InitialModel
from napari_vmunet.training.validation import predict_probabilities

SMALL_VMUNET = (24, 48, 96, 192)
UNET_CHANNELS = (32, 64, 128, 256, 512)
BUDGET = dict(epochs=60, steps_per_epoch=10, batch_size=4, tile_size=128)


@dataclass
class Setting:
    """Training pair (labels only on the annotated slices) and test slices."""

    name: str
    num_classes: int
    train: TrainingPair
    test_images: np.ndarray  # (S, H, W)
    test_masks: np.ndarray  # (S, H, W) class indices
    train_images: np.ndarray
    train_masks: np.ndarray
    copy_masks: np.ndarray | None  # nearest annotated slice per test slice


def brain_setting(name: str, classes: str) -> Setting:
    image, labels = load_sample('brain')
    block = slice(80, 101)
    vol, lab = np.asarray(image.data)[block], np.asarray(labels)[block]
    if classes == 'wm':
        lab = (lab == 2).astype(np.uint8)
    annotated = np.arange(0, vol.shape[0], 3)
    test = np.setdiff1d(np.arange(vol.shape[0]), annotated)
    sparse = np.zeros_like(lab)
    sparse[annotated] = lab[annotated]
    nearest = annotated[np.abs(test[:, None] - annotated[None]).argmin(axis=1)]
    return Setting(
        name,
        1 if classes == 'wm' else 3,
        TrainingPair(vol, sparse, name=name),
        vol[test],
        lab[test],
        vol[annotated],
        lab[annotated],
        lab[nearest],
    )


def nuclei_setting() -> Setting:
    image, labels = load_sample('nuclei')
    img = np.asarray(image.data)
    mask = (np.asarray(labels) > 0).astype(np.uint8)
    corner = (slice(0, 192), slice(0, 192))
    return Setting(
        'nuclei-corner',
        1,
        TrainingPair(img[corner], mask[corner], name='nuclei corner'),
        img[None, 192:],
        mask[None, 192:],
        img[corner][None],
        mask[corner][None],
        None,
    )


SETTINGS: dict[str, Callable[[], Setting]] = {
    'brain-wm': lambda: brain_setting('brain-wm', 'wm'),
    'brain-tissue': lambda: brain_setting('brain-tissue', 'tissue'),
    'nuclei-corner': nuclei_setting,
}


class ConvUNet(nn.Module):
    """MONAI's UNet with VM-UNet's interface: 0-255 in, probabilities (one
    class) or logits (several) out."""

    def __init__(self, input_channels: int, num_classes: int):
        super().__init__()
        self.num_classes, self.input_channels = num_classes, input_channels
        self.net = UNet(
            spatial_dims=2,
            in_channels=input_channels,
            out_channels=num_classes,
            channels=UNET_CHANNELS,
            strides=(2,) * (len(UNET_CHANNELS) - 1),
            num_res_units=2,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x / 255.0)
        return torch.sigmoid(out) if self.num_classes == 1 else out


class UNetTrainer(Trainer):
    """The regular trainer, building a conv U-Net instead of a VM-UNet."""

    def build_model(self, data_channels):
        net = ConvUNet(data_channels or 1, self.config.num_classes)
        return InitialModel(net, 'scratch (MONAI UNet)')


CONTENDERS: dict[str, dict] = {
    'unet': {},
    'vm': {},
    'vm-finetune': {'preset': 'finetune'},
    'vm-noaug': {'augment': False},
}


def train(setting: Setting, contender: str, seed: int, epochs: int, **extra) -> Trainer:
    """Train ``contender`` on the setting; ``extra``: more config fields
    (benchmarks/sparse.py gives ``annotation``)."""
    overrides = {**CONTENDERS[contender], **extra}
    config = TrainConfig(
        num_classes=setting.num_classes,
        dims=None if contender == 'unet' else SMALL_VMUNET,
        val_fraction=0.0,
        seed=seed,
        device='cpu',
        **{**BUDGET, 'epochs': epochs},
        **overrides,
    )
    cls = UNetTrainer if contender == 'unet' else Trainer
    torch.manual_seed(seed)
    trainer = cls(config, [setting.train])
    for _event in trainer.run():
        pass
    return trainer


def predict(trainer: Trainer, images: np.ndarray, num_classes: int) -> np.ndarray:
    """Class indices of each slice, predicted as validation predicts."""
    samples = trainer.prepare(
        [TrainingPair(images, np.ones(images.shape, np.uint8), name='test')]
    )
    out = []
    for sample in samples:
        probs = predict_probabilities(
            trainer.model, sample, trainer.device, 4, num_classes
        )[0]
        out.append(
            (probs[0] > 0.5).numpy() if num_classes == 1 else probs.argmax(0).numpy()
        )
    return np.stack(out).astype(np.uint8)


def dice(pred: np.ndarray, truth: np.ndarray, num_classes: int) -> float:
    """Mean over foreground classes of the Dice pooled over all pixels."""
    scores = []
    for c in range(1, max(num_classes, 2)):
        p, t = pred == c, truth == c
        denom = p.sum() + t.sum()
        scores.append(2 * (p & t).sum() / denom if denom else 1.0)
    return float(np.mean(scores))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--settings', default=','.join(SETTINGS))
    parser.add_argument('--contenders', default='copy,unet,vm,vm-finetune')
    parser.add_argument('--seeds', default='0')
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--epochs', type=int, default=BUDGET['epochs'])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f'torch {torch.__version__}, {torch.get_num_threads()} thread(s), '
        f'CPU {torch.backends.cpu.get_cpu_capability()}; budget {args.epochs} '
        f'epochs x {BUDGET["steps_per_epoch"]} steps x {BUDGET["batch_size"]} '
        f'tiles of {BUDGET["tile_size"]}^2'
    )
    print(
        f'{"setting":<15}{"contender":<13}{"seed":>5}{"Dice test":>11}'
        f'{"Dice train":>12}{"fg pred/true":>14}{"s":>7}'
    )
    for name in args.settings.split(','):
        setting = SETTINGS[name]()
        k = setting.num_classes
        true_fg = (setting.test_masks > 0).mean()
        for contender in args.contenders.split(','):
            if contender == 'copy':
                if setting.copy_masks is not None:
                    pred = setting.copy_masks
                    print(
                        f'{name:<15}{contender:<13}{"-":>5}'
                        f'{dice(pred, setting.test_masks, k):>11.3f}{"-":>12}'
                        f'{(pred > 0).mean() / true_fg:>14.2f}{"-":>7}',
                        flush=True,
                    )
                continue
            for seed in (int(s) for s in args.seeds.split(',')):
                start = time.perf_counter()
                trainer = train(setting, contender, seed, args.epochs)
                seconds = time.perf_counter() - start
                test = predict(trainer, setting.test_images, k)
                fit = predict(trainer, setting.train_images, k)
                print(
                    f'{name:<15}{contender:<13}{seed:>5}'
                    f'{dice(test, setting.test_masks, k):>11.3f}'
                    f'{dice(fit, setting.train_masks, k):>12.3f}'
                    f'{(test > 0).mean() / true_fg:>14.2f}{seconds:>7.0f}',
                    flush=True,
                )


if __name__ == '__main__':
    main()
