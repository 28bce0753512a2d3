"""Sparse scribbles against dense labels: the same training, a few strokes.

Issue #12: in sparse mode (``TrainConfig(annotation='sparse')``) only
painted pixels teach the model.  How much Dice does a user give up by
scribbling instead of painting every object?  The settings and the budget
are those of ``benchmarks/fewshot.py`` (a new small VM-UNet with the
default recipe, 60 epochs x 10 steps x 4 tiles of 128^2, the same seeds):
the same annotated slices are given once densely (the human labels) and
once as scribbles derived from them, and both models are scored on the
same held-out slices / rows with the dense truth.

Scribbles (what a user's strokes look like, derived from the dense labels):
each object's skeleton (objects separated by their boundaries first, so
touching nuclei get one stroke each), thickened to a 3-pixel brush and kept
inside the object, plus a 1-pixel ring of background strokes 4 pixels
outside the objects.  Values follow the sparse convention: 1 = background,
k + 1 = class k.  The share of the training slices' pixels they paint is
printed; the target is >= 90 % of the dense Dice with <= 10 % painted.

    python benchmarks/sparse.py [--settings nuclei-corner,brain-wm]
        [--modes dense,sparse] [--seeds 0] [--threads 1] [--epochs 60]
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
import torch
from scipy import ndimage
from skimage.morphology import disk, skeletonize
from skimage.segmentation import find_boundaries

from fewshot import BUDGET, SETTINGS, Setting, dice, predict, train
from napari_vmunet.io import load_sample

BRUSH = disk(1)  # a 3-pixel brush
BAND = (4, 4)  # background strokes this many pixels outside the objects


def scribbles(classes: np.ndarray, instances: np.ndarray | None = None) -> np.ndarray:
    """Sparse strokes for one 2-D slice of class indices (0 = background).

    ``instances``: object ids, to cut touching objects apart before their
    skeletons are taken (default: the class map itself)."""
    ids = classes if instances is None else instances
    out = np.zeros(classes.shape, np.uint8)
    inside = (classes > 0) & ~find_boundaries(ids, mode='inner')
    for k in np.unique(classes[classes > 0]):
        region = inside & (classes == k)
        stroke = ndimage.binary_dilation(skeletonize(region), BRUSH) & (classes == k)
        out[stroke] = k + 1
    near, far = (
        ndimage.binary_dilation(classes > 0, disk(r)) for r in (BAND[0] - 1, BAND[1])
    )
    out[far & ~near & (classes == 0)] = 1
    return out


def sparse_setting(setting: Setting, instances: np.ndarray | None) -> Setting:
    """The setting with its annotated slices replaced by their scribbles."""
    labels = np.asarray(setting.train.labels)
    volume = labels.ndim == 3
    stack = labels if volume else labels[None]
    ids = None if instances is None else (instances if volume else instances[None])
    out = np.zeros(stack.shape, np.uint8)
    for z in range(stack.shape[0]):
        if stack[z].any():
            out[z] = scribbles(stack[z], None if ids is None else ids[z])
    train = dataclasses.replace(setting.train, labels=out if volume else out[0])
    return dataclasses.replace(setting, train=train)


def painted_share(setting: Setting, mode: str) -> float:
    """The share of the annotated training slices' pixels that teach: all
    of them when dense (unpainted = background), the strokes when sparse."""
    if mode == 'dense':
        return 1.0
    labels = np.asarray(setting.train.labels)
    stack = labels if labels.ndim == 3 else labels[None]
    used = stack.reshape(stack.shape[0], -1).any(axis=1)
    return float((stack[used] > 0).mean())


def nuclei_instances() -> np.ndarray:
    """The nuclei sample's object ids on the fewshot corner."""
    _, labels = load_sample('nuclei')
    return np.asarray(labels)[:192, :192]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--settings', default='nuclei-corner,brain-wm')
    parser.add_argument('--modes', default='dense,sparse')
    parser.add_argument('--seeds', default='0')
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--epochs', type=int, default=BUDGET['epochs'])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f'torch {torch.__version__}, {torch.get_num_threads()} thread(s), '
        f'CPU {torch.backends.cpu.get_cpu_capability()}; budget {args.epochs} '
        f'epochs x {BUDGET["steps_per_epoch"]} steps x {BUDGET["batch_size"]} '
        f'tiles of {BUDGET["tile_size"]}^2; contender vm (fewshot.py)'
    )
    print(
        f'{"setting":<15}{"mode":<8}{"seed":>5}{"painted":>9}{"Dice test":>11}'
        f'{"of dense":>10}{"s":>7}'
    )
    for name in args.settings.split(','):
        dense = SETTINGS[name]()
        k = dense.num_classes
        instances = nuclei_instances() if name.startswith('nuclei') else None
        for seed in (int(s) for s in args.seeds.split(',')):
            reference = None
            for mode in args.modes.split(','):
                setting = dense if mode == 'dense' else sparse_setting(dense, instances)
                start = time.perf_counter()
                trainer = train(setting, 'vm', seed, args.epochs, annotation=mode)
                seconds = time.perf_counter() - start
                test = predict(trainer, setting.test_images, k)
                score = dice(test, setting.test_masks, k)
                if mode == 'dense':
                    reference = score
                ratio = f'{score / reference:.1%}' if reference else '-'
                print(
                    f'{name:<15}{mode:<8}{seed:>5}{painted_share(setting, mode):>9.1%}'
                    f'{score:>11.3f}{ratio:>10}{seconds:>7.0f}',
                    flush=True,
                )


if __name__ == '__main__':
    main()
