"""Where to annotate next: does the uncertainty suggestion beat evenly spaced slices?

The loop of issue #12 on the bundled brain volume (MNI152 T1, 189 axial
slices, grey and white matter): a user annotates k = 2, then 4, then 8
slices, and a small VM-UNet is trained on them after each round with the
same budget, as in the docks' loop: a new model in the first round, then
the last round's model trained further (the scratch preset of
benchmarks/fewshot.py, lr 1e-3, shortened: ``--epochs`` x 10 steps x 4
tiles of 64^2 per round, the same training seed for every strategy).  The
volume is taken at every second row and column (``--downsample``), 189
slices of 117 x 99, so the whole run fits on 2 shared cores.  The slices come from

``uncertainty``
    the two evenly spaced slices first (no model yet), then the most
    uncertain slices of the last round's prediction
    (:mod:`napari_vmunet.inference.uncertainty`), annotated ones left out;
``uncertainty-gap``
    the same, but each new slice at least ``n / (2 k)`` slices away from
    the annotated ones and from the others chosen in the round (the top
    slices of a ranking are often neighbours);
``even``
    k slices evenly spaced over the volume;
``random``
    k slices drawn at random (``--seeds``), nested from round to round.

Printed per round: Dice (mean over grey and white matter, pooled over the
pixels) on the slices that run never annotated, and the slices chosen.

``--measures`` first compares per-slice uncertainty measures on the
prediction of a model trained on 4 (``--measure-k``) evenly spaced slices: the Spearman
correlation of each measure with the slice's real error (share of wrong
pixels) over the unseen slices, and the error of the 4 slices each
measure ranks first relative to the 4 worst slices (1 = as good as an
oracle).  Measures: ``entropy`` (the mean normalised entropy),
``margin`` (1 - the gap between the two likeliest classes, what the
Predictor computes), ``flip`` (the share of pixels whose label changes when the
input is flipped up-down or left-right; two more predictions).

    python benchmarks/nextslice.py [--measures] [--loop]
        [--strategies uncertainty,uncertainty-gap,even,random]
        [--seeds 0,1,2] [--epochs 16] [--threads 1]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from napari_vmunet.inference import Predictor
from napari_vmunet.inference.uncertainty import pixel_uncertainty, slice_means
from napari_vmunet.io import load_sample
from napari_vmunet.training import TrainConfig, Trainer, TrainingPair

SMALL_VMUNET = (24, 48, 96, 192)
BUDGET = dict(epochs=16, steps_per_epoch=10, batch_size=4, tile_size=64)
#: every second row and column: a quarter of the pixels, so that the loop's
#: 16 trainings and predictions fit on 2 shared cores
DOWNSAMPLE = 2
ROUNDS = (2, 4, 8)
NUM_CLASSES = 3  # background, grey matter, white matter


def brain(step: int = DOWNSAMPLE) -> tuple[np.ndarray, np.ndarray]:
    """The volume and its labels, every ``step``-th row and column."""
    image, labels = load_sample('brain')
    plane = (slice(None), slice(None, None, step), slice(None, None, step))
    return np.ascontiguousarray(image.data[plane]), np.ascontiguousarray(labels[plane])


def train(
    volume: np.ndarray,
    labels: np.ndarray,
    annotated: list[int],
    epochs: int,
    folder: Path,
    seed: int = 0,
    init: Path | None = None,
) -> Path:
    """A small VM-UNet trained on the ``annotated`` slices, new or
    continuing from ``init`` (at the scratch preset's rate either way);
    returns its checkpoint.  An annotated slice without tissue is a
    background slice."""
    shown = np.zeros_like(labels)
    shown[annotated] = labels[annotated]
    empty = [z for z in annotated if not labels[z].any()]
    output = folder / f'model-{len(annotated)}-{time.monotonic_ns()}.safetensors'
    config = TrainConfig(
        output=output,
        num_classes=NUM_CLASSES,
        init=init,
        preset='scratch',
        dims=SMALL_VMUNET if init is None else None,
        val_fraction=0.0,
        seed=seed,
        device='cpu',
        **{**BUDGET, 'epochs': epochs},
    )
    torch.manual_seed(seed)
    pair = TrainingPair(volume, shown, slice_axis=0, background_slices=empty)
    for _event in Trainer(config, [pair]).run():
        pass
    return output


def predict(checkpoint: Path, volume: np.ndarray, threads: int):
    predictor = Predictor(checkpoint, device='cpu', threads=threads)
    return predictor, predictor.predict(
        volume, return_probabilities=True, return_uncertainty=True
    )


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Mean over the tissue classes of the Dice pooled over all pixels."""
    scores = []
    for c in range(1, NUM_CLASSES):
        p, t = pred == c, truth == c
        denom = p.sum() + t.sum()
        scores.append(2 * (p & t).sum() / denom if denom else 1.0)
    return float(np.mean(scores))


def even(n: int, k: int) -> list[int]:
    """k slices evenly spaced over n, away from the ends."""
    return [int(round(x)) for x in np.linspace(0, n - 1, k + 2)[1:-1]]


def pick(scores: np.ndarray, annotated: list[int], count: int, gap: int) -> list[int]:
    """The ``count`` most uncertain slices, each ``gap`` away from the
    annotated ones and from each other (``gap`` 0: the plain top)."""
    chosen: list[int] = []
    taken = list(annotated)
    for z in np.argsort(-scores, kind='stable'):
        z = int(z)
        if z in taken or not np.isfinite(scores[z]):
            continue
        if gap and any(abs(z - t) < gap for t in taken):
            continue
        chosen.append(z)
        taken.append(z)
        if len(chosen) == count:
            break
    return chosen


# -- the measures -----------------------------------------------------------


def measures(predictor: Predictor, result, volume: np.ndarray) -> dict:
    """Per-slice score of each measure (higher = less certain)."""
    probs = result.probabilities.astype(np.float32)
    flips = []
    for axis in (1, 2):
        flipped = predictor.predict(np.ascontiguousarray(np.flip(volume, axis)))
        flips.append(np.flip(flipped.labels, axis) != result.labels)
    flip = np.mean(flips, axis=0)
    entropy = pixel_uncertainty(probs, one_class=False, measure='entropy')
    margin = pixel_uncertainty(probs, one_class=False, measure='margin')
    return {
        'entropy': slice_means(entropy, 0),
        'margin': slice_means(margin, 0),  # what the Predictor computes
        'flip': slice_means(flip, 0),
    }


def compare_measures(volume, labels, k, epochs, threads, folder) -> None:
    annotated = even(volume.shape[0], k)
    start = time.perf_counter()
    checkpoint = train(volume, labels, annotated, epochs, folder)
    predictor, result = predict(checkpoint, volume, threads)
    scores = measures(predictor, result, volume)
    # the Predictor gives blank slices (one value) no score: never suggested
    scored = np.isfinite(result.slice_uncertainty)
    assert not any(np.ptp(volume[z]) > 0 for z in np.flatnonzero(~scored))
    assert np.allclose(
        scores['margin'][scored], result.slice_uncertainty[scored], atol=2e-3
    )
    unseen = np.setdiff1d(np.arange(volume.shape[0]), annotated)
    wrong = (result.labels != labels).reshape(len(labels), -1).mean(axis=1)[unseen]
    oracle = np.sort(wrong)[-4:].mean()
    print(
        f'model trained on slices {annotated} ({time.perf_counter() - start:.0f} s); '
        f'Dice on the unseen slices {dice(result.labels[unseen], labels[unseen]):.3f}'
    )
    print(f'{"measure":<10}{"Spearman":>10}{"top-4 error / worst-4":>24}')
    for name, values in scores.items():
        rho = spearmanr(values[unseen], wrong).statistic
        top = wrong[np.argsort(-values[unseen], kind='stable')[:4]].mean()
        print(f'{name:<10}{rho:>10.3f}{top / oracle:>24.2f}', flush=True)


# -- the loop ---------------------------------------------------------------

#: the slices of each round so far -> (their model, its prediction)
_RUNS: dict = {}


def run_loop(volume, labels, strategy, seed, epochs, threads, folder) -> None:
    n = volume.shape[0]
    rng = np.random.default_rng(seed)
    order = [int(z) for z in rng.permutation(n)]
    annotated: list[int] = []
    result = None
    history: tuple = ()  # the slices of every round so far
    for k in ROUNDS:
        if strategy == 'even':
            annotated = even(n, k)
        elif strategy == 'random':
            annotated = order[:k]
        elif result is None:  # uncertainty, first round: no model yet
            annotated = even(n, k)
        else:
            gap = n // (2 * k) if strategy == 'uncertainty-gap' else 0
            scores = result.slice_uncertainty
            annotated = annotated + pick(scores, annotated, k - len(annotated), gap)
        start = time.perf_counter()
        last = _RUNS.get(history, (None, None))[0]
        history = (*history, tuple(sorted(annotated)))
        if history not in _RUNS:  # the same rounds train the same model
            checkpoint = train(volume, labels, annotated, epochs, folder, init=last)
            _RUNS[history] = (checkpoint, predict(checkpoint, volume, threads)[1])
        result = _RUNS[history][1]
        unseen = np.setdiff1d(np.arange(n), annotated)
        score = dice(result.labels[unseen], labels[unseen])
        print(
            f'{strategy:<17}{seed if strategy == "random" else "-":>5}{k:>4}'
            f'{score:>11.3f}{time.perf_counter() - start:>7.0f}  '
            f'{sorted(annotated)}',
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--measures', action='store_true')
    parser.add_argument(
        '--measure-k',
        default='4',
        help='evenly spaced slices the models '
        'compared by --measures are trained on, e.g. 4,8',
    )
    parser.add_argument('--loop', action='store_true')
    parser.add_argument(
        '--strategies', default='uncertainty,uncertainty-gap,even,random'
    )
    parser.add_argument('--seeds', default='0,1,2')
    parser.add_argument('--epochs', type=int, default=BUDGET['epochs'])
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--downsample', type=int, default=DOWNSAMPLE)
    args = parser.parse_args()
    if not (args.measures or args.loop):
        args.measures = args.loop = True
    torch.set_num_threads(args.threads)
    volume, labels = brain(args.downsample)
    print(
        f'torch {torch.__version__}, {torch.get_num_threads()} thread(s); brain '
        f'{volume.shape}, budget per round {args.epochs} epochs x '
        f'{BUDGET["steps_per_epoch"]} steps x {BUDGET["batch_size"]} tiles of '
        f'{BUDGET["tile_size"]}^2, VM-UNet {SMALL_VMUNET}'
    )
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if args.measures:
            for k in args.measure_k.split(','):
                compare_measures(
                    volume, labels, int(k), args.epochs, args.threads, folder
                )
        if args.loop:
            print(f'{"strategy":<17}{"seed":>5}{"k":>4}{"Dice unseen":>11}{"s":>7}')
            for strategy in args.strategies.split(','):
                seeds = args.seeds.split(',') if strategy == 'random' else ['0']
                for seed in seeds:
                    run_loop(
                        volume,
                        labels,
                        strategy,
                        int(seed),
                        args.epochs,
                        args.threads,
                        folder,
                    )


if __name__ == '__main__':
    main()
